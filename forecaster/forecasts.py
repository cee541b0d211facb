"""The one forecast table: what ``python -m forecaster predict`` writes, what
``StreamingForecaster.forecast()`` returns (and ``stream`` prints as NDJSON), what
``GRUForecaster.forecast_frame()`` returns, and what :func:`forecaster.plot.plot_forecasts` draws.

One row per (series, target time, target), in this column order:

==========  =====================================================================
column      meaning
==========  =====================================================================
series      series id (String)
origin      time of the last observation the forecast is made from
time        the target time
step        1 .. horizon (Int64): ``time`` is ``step`` periods after ``origin``
target      target column name (String)
value       point forecast (Float32; the median for quantile models)
q<level>    one column per quantile, e.g. ``q0.1``, ``q0.5``, ``q0.9`` (Float32)
==========  =====================================================================

Times are ``Datetime("ns")`` (``Datetime("ns", "UTC")`` for zone-aware source data) or ``Int64``
for integer time, in original units.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl
import torch

from forecaster.spec import DataSpec

__all__ = ["FORECAST_COLUMNS", "forecast_frame", "predictions_frame", "empty_forecast_frame", "quantile_columns"]

FORECAST_COLUMNS = ("series", "origin", "time", "step", "target", "value")


def quantile_columns(quantiles: Sequence[float]) -> list[str]:
    """``[0.1, 0.5] -> ["q0.1", "q0.5"]``."""
    return [f"q{float(q):g}" for q in quantiles]


def forecast_frame(spec: DataSpec, series: Sequence[str], origins: np.ndarray, values: np.ndarray,
                   quantiles: Sequence[float], anchor: int) -> pl.DataFrame:
    """Forecasts -> the table of the module docstring.

    Args:
        spec: the data spec (target names, frequency, time type).
        series: ids (N,) of the forecasts' series.
        origins: int64 (N,): axis time of each forecast's origin.
        values: (N, horizon, C, Q) forecasts in original units (Q = 1 for a point forecast).
        quantiles: the Q levels (empty for a point forecast); anchor: index of the point forecast.
    """
    values = np.asarray(values, dtype=np.float32)
    N, H, C, Q = values.shape
    origins = np.asarray(origins, dtype=np.int64).reshape(N)
    steps = np.arange(1, H + 1, dtype=np.int64)
    times = spec.grid_times(origins[:, None], steps[None, :])  # (N, H)
    rep = (N, H, C)
    flat = values.reshape(N * H * C, Q)
    cols = {
        "series": pl.Series("series", np.broadcast_to(np.asarray(series, dtype=object)[:, None, None], rep).reshape(-1),
                            dtype=pl.String),
        "origin": spec.times_series(np.broadcast_to(origins[:, None, None], rep).reshape(-1), "origin"),
        "time": spec.times_series(np.broadcast_to(times[:, :, None], rep).reshape(-1), "time"),
        "step": pl.Series("step", np.broadcast_to(steps[None, :, None], rep).reshape(-1), dtype=pl.Int64),
        "target": pl.Series("target", np.broadcast_to(np.asarray(spec.target_cols, dtype=object)[None, None, :],
                                                      rep).reshape(-1), dtype=pl.String),
        "value": pl.Series("value", flat[:, anchor if quantiles else 0], dtype=pl.Float32),
    }
    for j, name in enumerate(quantile_columns(quantiles)):
        cols[name] = pl.Series(name, flat[:, j], dtype=pl.Float32)
    return pl.DataFrame(list(cols.values()))


def empty_forecast_frame(spec: DataSpec, quantiles: Sequence[float]) -> pl.DataFrame:
    """The forecast table with no rows (same columns and types)."""
    t = spec.times_series(np.empty(0, dtype=np.int64))
    schema = {"series": pl.String, "origin": t.dtype, "time": t.dtype, "step": pl.Int64, "target": pl.String,
              "value": pl.Float32, **{q: pl.Float32 for q in quantile_columns(quantiles)}}
    return pl.DataFrame(schema=schema)


def predictions_frame(dm, predictions: Sequence[dict[str, torch.Tensor]], quantiles: Sequence[float], anchor: int):
    """Outputs of ``predict_step`` (``series`` indices into ``dm.series_ids``, window ``start``,
    ``forecast`` (N, horizon, C, Q)) -> the forecast table of :mod:`forecaster.forecasts`; the origin
    of a window is its last context step."""
    series = torch.cat([p["series"] for p in predictions]).cpu().numpy()
    start = torch.cat([p["start"] for p in predictions]).cpu().numpy()
    fc = torch.cat([p["forecast"] for p in predictions]).float().cpu().numpy()
    origins = dm.grid_time(series, start + dm.context_length - 1)
    ids = [dm.series_ids[i] for i in series]
    return forecast_frame(dm.spec, ids, origins, fc, quantiles, anchor)
