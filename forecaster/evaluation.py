"""Online (prequential) evaluation: replay the test part of a dataset through a
:class:`~forecaster.streaming.StreamingForecaster`, forecasting before each new observation, and
score every forecast against what happened.

:func:`replay` splits the data as the model's data module did (the same sizes or cut-offs), feeds
each series' history before its test part, then walks the test part one timestamp at a time: first
the forecasts of every series observed at that timestamp, then the observations. Each forecast is
scored on the grid of the data (built with the model's spec, so its times, gaps and scalers are the
training ones) beside the seasonal-naive and last-value forecasts of :mod:`forecaster.metrics` from
the same origin.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from forecaster.data import TimeSeriesDataModule
from forecaster.metrics import last_value_forecast, seasonal_naive_forecast

__all__ = ["replay", "ReplayResult", "score_forecasts", "SPLIT_KEYS"]

SPLIT_KEYS = ("train_size", "val_size", "test_size", "val_start", "test_start")


@dataclass
class ReplayResult:
    """What :func:`replay` measured.

    Attributes:
        errors: one row per scored element: ``series``, ``origin``, ``time``, ``step``, ``target``,
            ``actual``, ``forecast``, ``seasonal_naive``, ``last_value`` (original units).
        by_step: MAE per horizon step: ``step``, ``mae``, ``mae_seasonal_naive``, ``mae_last_value``, ``n``.
        over_time: MAE per period of one season of origins: ``period``, ``mae``,
            ``mae_seasonal_naive``, ``mae_last_value``, ``n``.
        overall: ``mae``, ``mae_seasonal_naive``, ``mae_last_value``, ``forecasts_scored``,
            ``timestamps``, ``observe_ms_per_timestamp``, ``rejected`` (records the stream refused:
            warned about; build the stream with ``max_gap=None`` to replay data with long gaps).
    """

    errors: pl.DataFrame
    by_step: pl.DataFrame
    over_time: pl.DataFrame
    overall: dict


def window_forecasts(net, dm: TimeSeriesDataModule, series: np.ndarray, origin_index: np.ndarray,
                     anchor: int, batch_size: int = 1024) -> np.ndarray:
    """The point forecasts of re-running the look-back window from a zero state at each origin
    (what ``predict`` computes there): (N, horizon, C), original units."""
    T, h = dm.context_length, dm.horizon
    out = []
    for a in range(0, len(series), batch_size):
        b, _ = dm.gather(series[a:a + batch_size], origin_index[a:a + batch_size] - T + 1, T + h)
        b["target"][:, T:] = 0.0
        b["observed"][:, T:] = 0.0
        b["past_cov"][:, T:] = 0.0
        y = net.forecast_last(b["target"], b["observed"], b["past_cov"], b["future_cov"], T, b["baseline"])
        out.append((y[..., anchor] * b["scale"][:, None] + b["loc"][:, None]).float().numpy())
    return np.concatenate(out) if out else np.empty((0, h, len(dm.target_cols)), np.float32)


def score_forecasts(dm: TimeSeriesDataModule, series: np.ndarray, origin_index: np.ndarray,
                    forecast: np.ndarray, window: np.ndarray | None = None, model: list[str] | None = None
                    ) -> pl.DataFrame:
    """Score point forecasts on ``dm``'s grid (built with the model's spec).

    Args:
        series: int64 (N,) indices into ``dm.series_ids``.
        origin_index: int64 (N,) grid index of each forecast's origin in its series.
        forecast: (N, horizon, C) point forecasts in original units.
        window: optionally (N, horizon, C) forecasts of another policy (re-running the window), scored
            as the ``window`` column.
        model: optionally (N,) the weights digest of the model that made each forecast (a replay
            with swaps), the ``model`` column.

    Returns:
        The ``errors`` table of :class:`ReplayResult`: one row per (forecast, step, target) whose
        actual is observed.
    """
    spec = dm.spec
    N, h, C = forecast.shape
    m = int(spec.season_length)
    T = max(int(spec.context_length), m)
    batch, _ = dm.gather(series, origin_index - T + 1, T + h)
    sc, loc = batch["scale"][:, None, :], batch["loc"][:, None, :]
    values = batch["target"] * sc + loc  # original units, (N, T + h, C)
    obs = batch["observed"]
    ctx, ctx_obs = values[:, :T], obs[:, :T]
    naive = seasonal_naive_forecast(ctx, h, m, ctx_obs).numpy()
    last = last_value_forecast(ctx, ctx_obs, h).numpy()
    actual, seen = values[:, T:].numpy(), obs[:, T:].numpy() > 0
    steps = np.arange(1, h + 1)
    origin_t = dm.grid_time(series, origin_index)
    times = dm.grid_time(series[:, None], origin_index[:, None] + steps[None, :])
    n_i, s_i, c_i = np.nonzero(seen)
    cols = {
        "series": pl.Series([dm.series_ids[i] for i in series[n_i]], dtype=pl.String),
        "origin": spec.times_series(origin_t[n_i], "origin"),
        "time": spec.times_series(times[n_i, s_i], "time"),
        "step": pl.Series(steps[s_i], dtype=pl.Int64),
        "target": pl.Series(np.asarray(spec.target_cols, dtype=object)[c_i], dtype=pl.String),
        "actual": actual[n_i, s_i, c_i].astype(np.float64),
        "forecast": np.asarray(forecast, dtype=np.float64)[n_i, s_i, c_i],
        "seasonal_naive": naive[n_i, s_i, c_i].astype(np.float64),
        "last_value": last[n_i, s_i, c_i].astype(np.float64),
    }
    if window is not None:
        cols["window"] = np.asarray(window, dtype=np.float64)[n_i, s_i, c_i]
    if model is not None:
        cols["model"] = pl.Series(np.asarray(model, dtype=object)[n_i], dtype=pl.String)
    return pl.DataFrame(cols)


def _period(spec) -> pl.Expr:
    """Origins bucketed by one season of steps (a day of hourly data, a year of monthly data)."""
    m, f = max(1, int(spec.season_length)), spec.freq
    if f.kind == "int":
        return (pl.col("origin") // (m * f.step)) * (m * f.step)
    if f.kind == "month":
        every = f"{m * f.step}mo"
    elif f.kind == "bday" or (f.kind == "session" and m == 1):
        every = "1w"
    elif f.kind == "session":
        every = "1d"
    else:
        every = f"{m * f.step}ns"
    return pl.col("origin").dt.truncate(every)


def _mae(errors: pl.DataFrame, by: list) -> pl.DataFrame:
    a = pl.col("actual")
    extra = [(pl.col("window") - a).abs().mean().alias("mae_window")] if "window" in errors.columns else []
    return (errors.group_by(by).agg((pl.col("forecast") - a).abs().mean().alias("mae"),
                                    (pl.col("seasonal_naive") - a).abs().mean().alias("mae_seasonal_naive"),
                                    (pl.col("last_value") - a).abs().mean().alias("mae_last_value"),
                                    *extra, pl.len().alias("n"))
            .sort(by))


def _forecast_before(stream, ids: list[str], frame: pl.DataFrame, t_next: int):
    """The stream's forecasts of ``ids`` before the observations at ``t_next``; a model with
    future covariates reads them from the table (the rows from ``t_next`` on, a horizon of them),
    and a series whose horizon runs past the table's covariates is not forecast."""
    if not stream.future_cols:
        return stream.forecast_values(ids)
    ahead = frame.filter(pl.col("__t") >= t_next).drop("__sid", "__t", "__start")
    try:
        return stream.forecast_values(ids, ahead)
    except ValueError:  # near the table's end: forecast the series whose covariates are all there
        done = []
        for sid in ids:
            try:
                done.append(stream.forecast_values([sid], ahead))
            except ValueError:
                pass
        if not done:
            return [], None, None
        return ([i for d in done for i in d[0]], np.concatenate([d[1] for d in done]),
                np.concatenate([d[2] for d in done]))


@torch.inference_mode()
def replay(stream, data: str | pl.DataFrame, split: dict | None = None, max_steps: int | None = None,
           compare_window: bool = False, before_timestamp=None) -> ReplayResult:
    """Stream the test part of ``data`` and score the online forecasts.

    Args:
        stream: a :class:`~forecaster.streaming.StreamingForecaster` (its state is advanced through
            the data; use a fresh one).
        data: the dataset (a path, or a Polars frame), with the model's columns.
        split: the data module's split arguments (``train_size``, ``val_size``, ``test_size``,
            ``val_start``, ``test_start``) as the model was trained with; None = the defaults.
        max_steps: only the first N test timestamps.
        compare_window: also score, at every origin, the forecast of re-running the look-back window
            from a zero state (how the model was trained) beside the stream's forecast (for the
            per-step model: a state carried over the whole history): ``mae_window`` columns.
        before_timestamp: optionally ``f(time, stream)``, called before each test timestamp's
            forecasts (axis time, int64): a replay that swaps models
            (:class:`~forecaster.streaming.swap.ScheduledSwaps`). The errors then have a ``model``
            column (the weights digest that forecast) and ``over_time`` one row per period and model.
    """
    spec = stream.spec
    kw = {k: v for k, v in (split or {}).items() if k in SPLIT_KEYS and v is not None}
    src = {"data": data} if isinstance(data, (pl.DataFrame, pl.LazyFrame)) else {"path": str(data)}
    dm = TimeSeriesDataModule.from_spec(spec, **src, **kw)
    ids = dm.series_ids
    begin, _ = dm.split_bounds("test")
    test_start = dm.grid_time(np.arange(len(ids)), begin)
    frame = dm.frame().collect()
    sid = (pl.col(spec.id_col).cast(pl.String) if spec.id_col else pl.lit(stream.single_id)).alias("__sid")
    t, null = spec.parse_times(frame[spec.time_col])
    frame = frame.with_columns(sid, pl.Series("__t", t)).filter(pl.Series(~null))
    starts = pl.DataFrame({"__sid": ids, "__start": test_start})
    frame = frame.join(starts, on="__sid", how="inner").sort("__t", "__sid")
    rejected: list = []
    rejected += stream.observe(frame.filter(pl.col("__t") < pl.col("__start")).drop("__sid", "__start", "__t")).rejected
    test = frame.filter(pl.col("__t") >= pl.col("__start")).drop("__start")
    stamps = test["__t"].unique(maintain_order=True)
    if max_steps is not None:
        stamps = stamps.head(max_steps)
    index = {s: i for i, s in enumerate(ids)}
    series, origins, values, models = [], [], [], []
    t_obs, n_stamps = 0.0, 0
    for part in test.filter(pl.col("__t").is_in(stamps.implode())).partition_by("__t", maintain_order=True):
        if before_timestamp is not None:
            before_timestamp(int(part["__t"][0]), stream)
        seen = [s for s in part["__sid"].unique(maintain_order=True).to_list() if s in stream.table.ids]
        if seen:
            f_ids, f_origin, f_values = _forecast_before(stream, seen, frame, int(part["__t"][0]))
            if f_ids:
                series += [index[s] for s in f_ids]
                origins.append(f_origin)
                values.append(f_values[..., stream.net.anchor])
                models += [stream._digest] * len(f_ids)
        t0 = time.perf_counter()
        rejected += stream.observe(part.drop("__sid", "__t")).rejected
        t_obs += time.perf_counter() - t0
        n_stamps += 1
    if not series:
        raise ValueError("the replay made no forecast: the test part is empty or no series had history before it")
    series = np.asarray(series, dtype=np.int64)
    origin_t = np.concatenate(origins)
    k, _ = spec.freq.index(dm.grid_time(series, 0), origin_t)
    k = k.astype(np.int64)
    window = window_forecasts(stream.net, dm, series, k, stream.net.anchor) if compare_window else None
    errors = score_forecasts(dm, series, k, np.concatenate(values), window,
                             models if before_timestamp is not None else None)
    by_step = _mae(errors, ["step"])
    over_time = _mae(errors.with_columns(_period(spec).alias("period")),
                     ["period"] + (["model"] if before_timestamp is not None else []))
    a = errors["actual"]
    overall = {
        "mae": float((errors["forecast"] - a).abs().mean()),
        "mae_seasonal_naive": float((errors["seasonal_naive"] - a).abs().mean()),
        "mae_last_value": float((errors["last_value"] - a).abs().mean()),
        **({"mae_window": float((errors["window"] - a).abs().mean())} if compare_window else {}),
        "forecasts_scored": errors.height, "timestamps": n_stamps,
        "observe_ms_per_timestamp": 1e3 * t_obs / max(1, n_stamps),
        "rejected": len(rejected),
    }
    if rejected:
        r = rejected[0]
        warnings.warn(f"the stream rejected {len(rejected)} record(s) of the replay (e.g. series {r.series!r} at "
                      f"{r.time}: {r.reason}); their forecasts are missing from the scores", UserWarning, stacklevel=2)
    return ReplayResult(errors=errors, by_step=by_step, over_time=over_time, overall=overall)
