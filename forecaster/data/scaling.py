"""Stage 3: per-series scaling, fitted on the training part only.

``standard``: mean and standard deviation; ``robust``: median and inter-quartile range (the standard
deviation where the quartiles coincide, as in mostly-zero data); ``none``: 0 and 1. Everything is
relative to the data's magnitude, so a series and the same series times 1e-12 or 1e12 scale to the
same values: a column is constant when its spread is below :data:`CONSTANT_RTOL` of its level, and
a constant column's scale is the magnitude of its level (1 for a column of zeros, or one with no
observed training value, whose ``loc`` is 0; the data module refuses targets without enough
observed training values before it gets here). The scalers end up in the
:class:`forecaster.spec.DataSpec`, which applies them everywhere else (prediction, streaming).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

__all__ = ["SCALINGS", "CONSTANT_RTOL", "fit_scalers", "apply_scalers"]

SCALINGS = ("standard", "robust", "none")
# Values are stored in float32, so two that differ at all differ by at least one float32 step
# (6e-8 of their magnitude); identical values leave a float64 spread of about 1e-16 of their level.
# Between the two, relative to the level: an absolute floor would take a varying series at 1e-12
# for a constant one.
CONSTANT_RTOL = 1e-12


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
    spread = np.full((S, D), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> handled below
        for s in range(S):
            tr = values[int(offsets[s]) + int(b[s]):int(offsets[s]) + int(e[s])]
            spread[s] = np.nanstd(tr, axis=0, dtype=np.float64)
            if kind == "standard":
                loc[s] = np.nanmean(tr, axis=0, dtype=np.float64)
                scl[s] = spread[s]
            else:
                q25, q50, q75 = np.nanquantile(tr.astype(np.float64), [0.25, 0.5, 0.75], axis=0)
                loc[s], scl[s] = q50, q75 - q25
    no_loc = np.isnan(loc)
    for s in np.flatnonzero(no_loc[:, :n_targets].any(axis=1)):
        cols = [value_cols[j] for j in np.flatnonzero(no_loc[s, :n_targets])]
        warnings.warn(f"series {series_ids[s]!r}: no observed training value of {cols} to fit the scaler; "
                      "using loc=0, scale=1", UserWarning, stacklevel=3)
    loc[no_loc] = 0.0
    level = np.abs(loc)
    flat = ~(scl > CONSTANT_RTOL * level)  # NaN (nothing observed) included
    if kind == "robust":  # coinciding quartiles of varying data (mostly zeros, a few spikes): the spread
        varies = flat & (spread > CONSTANT_RTOL * level)
        scl[varies] = spread[varies]
        flat &= ~varies
    scl[flat] = np.where(level[flat] > 0, level[flat], 1.0)
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
