"""Pictures of forecasts (matplotlib, an optional extra: ``pip install -e ".[plot]"`` or ``pip install matplotlib``).

- :func:`plot_forecasts`: per series and target, the recent history, the actuals over the forecast
  period (when known), the point forecast and the quantile band.
- :func:`plot_online_error`: the online (prequential) error of a ``stream --replay`` run over time,
  beside the seasonal-naive baseline.

matplotlib is imported only when a function here is called; without it they raise an
``ImportError`` whose message says how to install it. Figures are drawn with the non-interactive
``Agg`` backend when ``path`` is given (nothing needs a display).
"""

from __future__ import annotations

import os
from typing import Sequence

import polars as pl

from forecaster.forecasts import FORECAST_COLUMNS
from forecaster.timeaxis import to_axis

__all__ = ["plot_forecasts", "plot_online_error", "MISSING_MATPLOTLIB"]

MISSING_MATPLOTLIB = "plotting needs matplotlib: pip install matplotlib (the [plot] extra: pip install -e \".[plot]\")"


def _pyplot(headless: bool):
    try:
        import matplotlib

        if headless:
            # only switch when no figure is open (a notebook keeps its inline backend)
            import matplotlib.pyplot as plt

            if not plt.get_fignums() and "inline" not in str(matplotlib.get_backend()).lower():
                plt.switch_backend("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(MISSING_MATPLOTLIB) from e
    return plt


def _quantile_cols(columns: Sequence[str]) -> list[str]:
    qs = []
    for c in columns:
        if c.startswith("q"):
            try:
                qs.append((float(c[1:]), c))
            except ValueError:
                pass
    return [c for _, c in sorted(qs)]


def plot_forecasts(
    history: pl.DataFrame | pl.LazyFrame,
    forecasts: pl.DataFrame,
    actuals: pl.DataFrame | pl.LazyFrame | None = None,
    *,
    time_col: str | None = None,
    id_col: str | None = None,
    time_format: str | None = None,
    targets: Sequence[str] | None = None,
    series: Sequence[str] | str | None = None,
    max_series: int = 3,
    history_steps: int | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Draw forecasts against the data: one row of panels per series, one column per target.

    Args:
        history: the observations, wide per target (the table a ``TimeSeriesDataModule`` reads: the
            time column, the id column for long data, one column per target). Rows before the first
            forecast time are drawn as history; when ``actuals`` is None, rows at the forecast times
            are drawn as the actuals.
        forecasts: the forecast table (:mod:`forecaster.forecasts`: ``series``, ``origin``,
            ``time``, ``step``, ``target``, ``value``, ``q0.1``, ...), as ``predict``, the stream and
            ``GRUForecaster.forecast_frame`` write it. The band is drawn between the lowest and the
            highest quantile. If a (series, target, time) has forecasts from several origins, only the
            latest origin of each series is drawn (filter ``step == k`` first to draw k-step-ahead
            forecasts of a stream).
        actuals: optional observations over the forecast period, same layout as ``history``.
        time_col, id_col: the history's time and id columns (None: ``time``; no id column for one
            wide series). time_format: strptime format of a text time column that is not ISO.
        targets: targets to draw (default: every target in ``forecasts``).
        series: ids to draw (default: the first ``max_series`` ids of ``forecasts``).
        max_series: at most this many series (rows of panels).
        history_steps: how many history rows before the first forecast time to draw per series
            (default: twice the number of forecast times, at least 24).
        title: figure title.
        path: save the figure there (PNG, ...) and close it; None: return it open.

    Returns:
        the matplotlib ``Figure`` (closed when ``path`` is given).
    """
    plt = _pyplot(headless=path is not None)
    if isinstance(history, pl.LazyFrame):
        history = history.collect()
    if isinstance(actuals, pl.LazyFrame):
        actuals = actuals.collect()
    if forecasts.height == 0:
        raise ValueError("no forecasts to plot")

    fcols = forecasts.columns
    missing = [c for c in FORECAST_COLUMNS if c not in fcols]
    if missing:
        raise ValueError(f"forecasts lack column(s) {missing}: give the forecast table of predict, the stream or "
                         f"GRUForecaster.forecast_frame (columns {list(FORECAST_COLUMNS)} and quantiles)")
    f_time = "time"
    h_time = time_col or "time"
    if h_time not in history.columns:
        raise ValueError(f"history has no time column {h_time!r}; pass time_col= (its columns: {history.columns})")
    h_id = id_col
    if h_id is not None and h_id not in history.columns:
        raise ValueError(f"id column {h_id!r} not in history {history.columns}")

    fc = forecasts.with_columns(pl.col("series").cast(pl.String).alias("__sid"))
    if fc.select(pl.struct("__sid", "target", f_time).is_duplicated().any()).item():
        fc = fc.filter(pl.col("origin") == pl.col("origin").max().over("__sid"))
    ids = fc["__sid"].unique(maintain_order=True).to_list()
    if series is not None:
        want = [series] if isinstance(series, str) else [str(s) for s in series]
        unknown = [s for s in want if s not in ids]
        if unknown:
            raise ValueError(f"series {unknown} not in the forecasts (have {ids[:10]})")
        ids = want
    ids = ids[:max(1, int(max_series))]
    tgts = list(targets) if targets is not None else fc["target"].unique(maintain_order=True).to_list()
    qcols = _quantile_cols(fcols)
    lo, hi = (qcols[0], qcols[-1]) if len(qcols) >= 2 else (None, None)

    kind = "int" if fc.schema[f_time].is_integer() else "datetime"

    def on_axis(df: pl.DataFrame, col: str) -> pl.DataFrame:
        """The time column on the one time axis (zoned times as UTC), as ``__x``."""
        fmt = time_format if df is not fc else None
        t, null, _ = to_axis(df[col], kind, fmt, what=f"time column {col!r}", strict=False)
        x = pl.Series("__x", t, dtype=pl.Int64)
        return df.with_columns(x.cast(pl.Datetime("ns")) if kind == "datetime" else x).filter(pl.Series(~null))

    def keyed(df: pl.DataFrame) -> pl.DataFrame:
        df = df.with_columns((pl.col(h_id).cast(pl.String) if h_id else pl.lit(ids[0] if len(ids) == 1 else "0"))
                             .alias("__sid"))
        return on_axis(df, h_time).sort("__x")

    fc = on_axis(fc, f_time)
    hist = keyed(history)
    act = keyed(actuals) if actuals is not None else hist

    n_rows, n_cols = len(ids), len(tgts)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols + 0.6, 2.9 * n_rows + 0.6), squeeze=False,
                             sharex="row")
    for r, sid in enumerate(ids):
        f_s = fc.filter(pl.col("__sid") == sid)
        t_first, t_last = f_s["__x"].min(), f_s["__x"].max()
        n_times = f_s["__x"].n_unique()
        n_hist = history_steps if history_steps is not None else max(24, 2 * n_times)
        h_s = hist.filter((pl.col("__sid") == sid) & (pl.col("__x") < t_first)).tail(n_hist)
        a_s = act.filter((pl.col("__sid") == sid) & (pl.col("__x") >= t_first) & (pl.col("__x") <= t_last))
        for c, tgt in enumerate(tgts):
            ax = axes[r][c]
            f_t = f_s.filter(pl.col("target") == tgt).sort("__x")
            x_f = f_t["__x"].to_list()
            if tgt in h_s.columns and h_s.height:
                ax.plot(h_s["__x"].to_list(), h_s[tgt].to_list(), color="0.35", lw=1.1, label="history")
            if lo is not None and f_t.height:
                ax.fill_between(x_f, f_t[lo].to_list(), f_t[hi].to_list(), color="tab:blue", alpha=0.22, lw=0,
                                label=f"{lo}-{hi} band")
            if tgt in a_s.columns and a_s.height:
                ax.plot(a_s["__x"].to_list(), a_s[tgt].to_list(), color="black", lw=1.3, label="actual")
            if f_t.height:
                ax.plot(x_f, f_t["value"].to_list(), color="tab:blue", lw=1.6, label="forecast")
                ax.axvline(x_f[0], color="0.6", lw=0.8, ls=":")
            ax.set_title(f"{sid}: {tgt}" if n_rows > 1 or sid != "0" else tgt, fontsize=10)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            for lab in ax.get_xticklabels():
                lab.set_rotation(30)
                lab.set_horizontalalignment("right")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, fontsize=9,
                   bbox_to_anchor=(0.5, 1.0))
    if title:
        fig.suptitle(title, y=1.0 + 0.04 / n_rows, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.07 / n_rows))
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_online_error(over_time: pl.DataFrame, path: str | os.PathLike | None = None, *,
                      title: str = "Online (prequential) error over the replayed test period"):
    """Online MAE over time beside the baselines: ``over_time`` has columns ``period``, ``mae``,
    ``mae_seasonal_naive`` and optionally ``mae_last_value`` (the ``over_time`` table of
    :func:`forecaster.evaluation.replay`, also written by ``stream --replay --report``). Saves to ``path`` and closes the figure when given; returns the figure."""
    plt = _pyplot(headless=path is not None)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(over_time["period"].to_list(), over_time["mae"].to_list(), marker="o", ms=3, label="GRU (streaming)")
    ax.plot(over_time["period"].to_list(), over_time["mae_seasonal_naive"].to_list(), label="seasonal naive",
            ls="--", marker="o", ms=3)
    if "mae_last_value" in over_time.columns:
        ax.plot(over_time["period"].to_list(), over_time["mae_last_value"].to_list(), label="last value",
                ls=":", marker="o", ms=3)
    ax.set_ylabel("MAE (original units)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
