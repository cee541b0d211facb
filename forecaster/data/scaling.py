"""Stage 3: per-series scaling, fitted on the training part only.

``standard``: mean and standard deviation; ``robust``: median and inter-quartile range; ``none``:
0 and 1. A column with no observed training value gets ``loc = 0`` (targets warn); a constant one
``scale = 1``. The scalers end up in the :class:`forecaster.spec.DataSpec`, which applies them
everywhere else (prediction, streaming).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

__all__ = ["SCALINGS", "fit_scalers", "apply_scalers"]

SCALINGS = ("standard", "robust", "none")


def fit_scalers(values: np.ndarray, offsets: np.ndarray, train: tuple[np.ndarray, np.ndarray], kind: str,
                series_ids: Sequence[str], value_cols: Sequence[str], n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """``(loc, scale)``, float64 (S, D), from the observed values of each series' training rows.

    Args:
        values: float32 (N, D) grid values, NaN = missing.
        offsets: int64 (S + 1,) series row offsets.
        train: ``(begin, end)`` int64 (S,) grid ranges of the training parts.
        kind: one of :data:`SCALINGS`.
    """
    S, D = len(series_ids), values.shape[1]
    loc = np.zeros((S, D), dtype=np.float64)
    scl = np.ones((S, D), dtype=np.float64)
    if kind == "none" or not D:
        return loc, scl
    b, e = train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> handled below
        for s in range(S):
            tr = values[int(offsets[s]) + int(b[s]):int(offsets[s]) + int(e[s])]
            if kind == "standard":
                loc[s] = np.nanmean(tr, axis=0, dtype=np.float64)
                scl[s] = np.nanstd(tr, axis=0, dtype=np.float64)
            else:
                q25, q50, q75 = np.nanquantile(tr.astype(np.float64), [0.25, 0.5, 0.75], axis=0)
                loc[s], scl[s] = q50, q75 - q25
    no_loc = np.isnan(loc)
    for s in np.flatnonzero(no_loc[:, :n_targets].any(axis=1)):
        cols = [value_cols[j] for j in np.flatnonzero(no_loc[s, :n_targets])]
        warnings.warn(f"series {series_ids[s]!r}: no observed training value of {cols} to fit the scaler; "
                      "using loc=0, scale=1", UserWarning, stacklevel=3)
    loc[no_loc] = 0.0
    bad = ~np.isfinite(scl) | (scl <= 1e-12 * np.maximum(1.0, np.abs(loc)))
    scl[bad] = 1.0
    return loc, scl


def apply_scalers(values: np.ndarray, offsets: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scale ``values`` (N, D) in place, series by series, then set missing values to 0; returns
    the observed mask, bool (N, D)."""
    for s in range(len(offsets) - 1):
        blk = values[int(offsets[s]):int(offsets[s + 1])]
        blk -= loc[s].astype(np.float32)
        blk /= scale[s].astype(np.float32)
    observed = ~np.isnan(values)
    np.copyto(values, 0.0, where=~observed)
    return observed
