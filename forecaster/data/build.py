"""Stage 5: a table through the stages, in one of two ways.

* :func:`fit_spec` (training data): the frequency (given or inferred), the calendar features the
  training parts cover, per-series scalers and naive blends fitted on the training parts; the result
  holds a new :class:`forecaster.spec.DataSpec`.
* :func:`apply_spec` (other data for a trained model): a checkpoint's spec read back, its frequency,
  calendar, scalers and blends applied (series it does not know get its pooled ones); nothing is
  fitted.

Both return :class:`Prepared`: the spec, every series on its grid as scaled contiguous arrays (the
windows of :mod:`forecaster.data.windows` read them), the splits, and what the data module's summary
reports.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from forecaster.baseline import blend_knots, fit_panel_blends, rotate_history
from forecaster.data.grid import Extent, Grid, calendar_array, choose_calendar, extent, regularise, resolve_frequency
from forecaster.data.scaling import apply_scalers, fit_scalers
from forecaster.data.table import Roles, Source, Table
from forecaster.data.windows import NO_INDEX, SplitArgs
from forecaster.spec import NO_TIME, DataSpec
from forecaster.timeaxis import Frequency

__all__ = ["Prepared", "fit_spec", "apply_spec", "check_args_against_spec", "check_observed_training", "fit_blends",
           "describe"]

ROLE_KEYS = ("time_col", "id_col", "target_cols", "past_covariate_cols", "future_covariate_cols")


@dataclass
class Prepared:
    """A table on its grid, scaled, with its spec.

    Attributes:
        spec: the fitted or applied :class:`DataSpec`, for the series of ``grid``.
        grid: every series on its regular grid (``grid.values``: the scaled values, missing 0, then
            the calendar features; the same memory as ``arrays["data"]``).
        splits: ``{"train" | "val" | "test": (begin, end)}``, int64 (S,) grid ranges per series.
        arrays: tensors over the grid rows: ``data`` float32 (N, D + K), ``observed`` float32 (N, C),
            ``loc`` / ``scale`` float32 (S, C) (the target scalers), ``baseline`` float32 (S, C, 2K + 5 + HISTORY_SLOTS; the history profiles' phase 0 at each series' grid step 0),
            ``first_value`` / ``first_index`` (S, C) (:func:`first_observations`).
        info: what the summary reports: ``rows`` (table rows), ``dropped`` (series shorter than the
            window), ``calendar_why``, ``freq_source``, ``season_source``, ``target_missing``.
    """

    spec: DataSpec
    grid: Grid
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    arrays: dict[str, torch.Tensor]
    info: dict


AUTO_CONTEXT = 72  # context_length="auto": this many steps of look-back ...
MAX_AUTO_CONTEXT = 1008  # ... or a season plus the horizon when the season is as long, up to a season this long


def auto_context(season_length: int, horizon: int) -> int:
    """``context_length="auto"``: :data:`AUTO_CONTEXT` steps, or ``season + horizon`` when the season is
    at least that long and at most :data:`MAX_AUTO_CONTEXT` (288 + horizon for 5-minute data), so the
    look-back holds the same time one season earlier (the seasonal baseline and the seasonal MASE
    scale need it)."""
    m = int(season_length)
    return m + int(horizon) if AUTO_CONTEXT <= m <= MAX_AUTO_CONTEXT else AUTO_CONTEXT


def fit_spec(source: Source, roles: Roles, *, time_format: str | None, freq: str | int | None,
             calendar_features: list[str] | str, season_length: int | None, context_length: int | None, horizon: int,
             scaling: str, splits: SplitArgs) -> Prepared:
    """Read training data and fit everything a model needs to know about it (see the module
    docstring); arguments as the data module's of the same names (``roles.target_cols`` None: every
    numeric column not otherwise used). Series shorter than ``context_length + horizon`` are
    dropped with a warning; :func:`check_observed_training` refuses too little observed target.
    ``context_length`` None: :func:`auto_context` of the season."""
    table = source.read(roles, time_format)
    f = resolve_frequency(table, freq, roles.time_col)
    season = int(season_length) if season_length else f.default_season_length()
    if context_length is None:
        context_length = auto_context(season, horizon)
    ext = extent(table, f, context_length + horizon)
    parts = splits.bounds(ext.lengths, ext.starts, f, ext.series_ids, table.time_kind, time_format)
    b, e = parts["train"]
    cal, cal_why = choose_calendar(calendar_features, f, table.time_kind, e - b, roles.time_col)
    targets, time_kind, time_zone, n_rows = list(table.target_cols), table.time_kind, table.time_zone, table.frame.height
    C, D = len(targets), len(table.value_cols)
    grid = _on_grid(table, f, ext, cal)
    thin = _unobserved_series(grid, parts["train"], C, horizon)
    if thin.size and thin.size < len(grid.series_ids):  # drop them, as series shorter than the window are
        ext, parts = _without(ext, thin, grid, splits, f, table.time_kind, time_format, horizon, source.where)
        grid = _on_grid(table, f, ext, cal)
    del table  # the grid holds the values now
    check_observed_training(grid, parts["train"], targets, horizon, source.where)
    loc, scl = fit_scalers(grid.values[:, :D], grid.offsets, parts["train"], scaling, grid.series_ids,
                           [*targets, *roles.past_covariate_cols, *roles.future_covariate_cols], C)
    observed = apply_scalers(grid.values[:, :D], grid.offsets, loc, scl)[:, :C]
    blend = fit_blends(grid, observed, parts["train"], horizon, season, context_length)
    # the history profiles' phase 0 from each training part's first step to the grid's absolute step 0
    blend = rotate_history(blend, -(f.absolute_step(grid.starts) + parts["train"][0])[:, None], season, horizon)
    spec = DataSpec(
        time_col=roles.time_col, id_col=roles.id_col, target_cols=targets,
        past_covariate_cols=list(roles.past_covariate_cols), future_covariate_cols=list(roles.future_covariate_cols),
        time_kind=time_kind, freq=f, calendar=cal, season_length=season, context_length=context_length,
        horizon=horizon, scaling=scaling, series_ids=list(grid.series_ids), loc=loc, scale=scl,
        series_start=grid.starts, series_length=grid.lengths, last_observed=_last_observed(grid, observed),
        baseline=blend, time_zone=time_zone, time_format=time_format)
    info = {"rows": n_rows, "dropped": ext.dropped, "calendar_why": cal_why,
            "freq_source": "given" if freq is not None else "inferred",
            "season_source": "given" if season_length else "from the frequency"}
    return _prepared(spec, grid, parts, observed, loc, scl, blend, info)


def apply_spec(source: Source, spec: DataSpec, *, splits: SplitArgs) -> Prepared:
    """Read other data with a checkpoint's ``spec``: its roles, time kind and zone, frequency (rows
    off its grid are errors), calendar, scalers and blends; series the spec does not know get its
    pooled scalers and blend, and a series shorter than the window is kept (its windows are
    zero-padded at the start)."""
    roles = Roles(spec.time_col, spec.id_col, list(spec.target_cols), list(spec.past_covariate_cols),
                  list(spec.future_covariate_cols))
    table = source.read(roles, spec.time_format, time_kind=spec.time_kind)
    if spec.time_kind == "datetime" and (table.time_zone is None) != (spec.time_zone is None):
        raise ValueError(
            f"time_col {spec.time_col!r} in {source.where} holds "
            f"{'naive' if table.time_zone is None else 'zone-aware'} times but the model was trained on "
            f"{'naive' if spec.time_zone is None else 'zone-aware'} ones (read as UTC): give them the same way, "
            "or the forecasts would be shifted by the zone's offset")
    f = resolve_frequency(table, spec.freq, spec.time_col)
    ext = extent(table, f, 1)
    parts = splits.bounds(ext.lengths, ext.starts, f, ext.series_ids, table.time_kind, spec.time_format)
    n_rows, D = table.frame.height, len(table.value_cols)
    grid = _on_grid(table, f, ext, list(spec.calendar))
    del table
    loc, scl, _ = spec.scalers_for(grid.series_ids)
    observed = apply_scalers(grid.values[:, :D], grid.offsets, loc, scl)[:, :spec.n_targets]
    blend = spec.baseline_for(grid.series_ids)
    last_obs = _last_observed(grid, observed)
    for sid, t0 in zip(grid.series_ids, grid.starts):
        why_not = spec.off_grid(sid, int(t0))
        if why_not is not None:
            raise ValueError(f"series {sid!r} in {source.where} starts at {spec.format_time(int(t0))}: "
                             f"{why_not}; the model forecasts on that grid only")
    info = {"rows": n_rows, "dropped": ext.dropped,
            "calendar_why": {e: "from the checkpoint's spec" for e in spec.calendar},
            "freq_source": "the checkpoint", "season_source": "the checkpoint"}
    return _prepared(spec.for_series(grid.series_ids, grid.starts, grid.lengths, last_obs), grid, parts, observed,
                     loc, scl, blend, info)


def check_args_against_spec(spec: DataSpec, given: dict, freq, time_format) -> None:
    """Role arguments (``given``: the data module's ``time_col`` ... ``future_covariate_cols``, None
    = not given), ``freq`` and ``time_format`` given beside a checkpoint's spec must be the spec's
    (a model reads only its own columns)."""
    for k in ROLE_KEYS:
        v = given[k]
        mine = getattr(spec, k)
        if v is None or (isinstance(v, list) and not v and not mine):
            continue
        if (list(v) if isinstance(v, (list, tuple)) else v) != mine:
            raise ValueError(f"{k}={v!r} differs from the checkpoint's {k}={mine!r}; a model reads the columns it "
                             "was trained on: leave it out (or train a model on these columns)")
    if freq is not None and Frequency.parse(freq, spec.time_kind).value != spec.freq.value:
        raise ValueError(f"freq={freq!r} differs from the checkpoint's freq={spec.freq.value!r}")
    if time_format is not None and time_format != spec.time_format:
        raise ValueError(f"time_format={time_format!r} differs from the checkpoint's {spec.time_format!r}")


def _observed_counts(grid: Grid, train: tuple[np.ndarray, np.ndarray], C: int) -> np.ndarray:
    """(S, C): each series' observed values of each target in its training part."""
    b, e = train
    return np.stack([np.count_nonzero(~np.isnan(grid.values[o + b[i]:o + e[i], :C]), axis=0)
                     for i, o in enumerate(grid.offsets[:-1])])


def _unobserved_series(grid: Grid, train: tuple[np.ndarray, np.ndarray], C: int, horizon: int) -> np.ndarray:
    """Indices of the series with fewer than ``horizon + 1`` observed training values of every target
    (nothing to learn from them at all)."""
    return np.flatnonzero((_observed_counts(grid, train, C) < horizon + 1).all(axis=1))


def _without(ext: Extent, thin: np.ndarray, grid: Grid, splits: SplitArgs, f, time_kind: str, time_format,
             horizon: int, where: str):
    """``ext`` and its splits without the series ``thin`` (indices), with a warning naming them."""
    gone = [(grid.series_ids[i], int(grid.lengths[i])) for i in thin]
    warnings.warn(f"dropping {len(gone)} of {len(grid.series_ids)} series of {where} with fewer than horizon + 1 = "
                  f"{horizon + 1} observed target values in their training part (nothing to learn from): "
                  f"{[g[0] for g in gone[:10]]}{' ...' if len(gone) > 10 else ''}; give them more history, or a "
                  "shorter horizon, validation or test part", UserWarning, stacklevel=4)
    keep = np.ones(len(grid.series_ids), dtype=bool)
    keep[thin] = False
    ext = Extent([i for i, k in zip(ext.series_ids, keep) if k], ext.starts[keep], ext.lengths[keep],
                 ext.rows_in_table[keep], ext.dropped + gone)
    return ext, splits.bounds(ext.lengths, ext.starts, f, ext.series_ids, time_kind, time_format)


def check_observed_training(grid: Grid, train: tuple[np.ndarray, np.ndarray], target_cols: list[str], horizon: int,
                            where: str) -> None:
    """Refuse series with too little observed target in their training part: from fewer than
    ``horizon + 1`` values (an origin and one horizon) a model learns nothing, its scaler and
    baseline are guesses, and the validation loss ends up NaN."""
    need, C, cols = horizon + 1, len(target_cols), target_cols
    b, e = train
    counts = _observed_counts(grid, train, C)  # (S, C)
    few = counts < need
    if not few.any():
        return
    bad = np.flatnonzero(few.any(axis=1))
    shown = "; ".join(f"series {grid.series_ids[i]!r}: " + ", ".join(
        f"{cols[j]!r} observed at {counts[i, j]} of {e[i] - b[i]} training steps" for j in np.flatnonzero(few[i]))
        for i in bad[:5])
    which = sorted({cols[j] for j in np.flatnonzero(few.any(axis=0))}, key=cols.index)
    raise ValueError(
        f"too little observed target to train on in {where}: {len(bad)} of {len(grid.series_ids)} series "
        f"ha{'s' if len(bad) == 1 else 've'} fewer than horizon + 1 = {need} observed values of {which} in the "
        f"training part ({shown}{'; ...' if len(bad) > 5 else ''}); drop those series or fill their targets, or "
        "give the training part more steps (val_size, test_size)")


def fit_blends(grid: Grid, observed: np.ndarray, train: tuple[np.ndarray, np.ndarray], horizon: int,
               season_length: int, context_length: int, *, total_origins: int = 200_000, max_origins: int = 2000,
               min_origins: int = 200) -> np.ndarray:
    """float64 (S, C, 2K + 5 + HISTORY_SLOTS): the naive blend of each series (the history
    profiles' phase 0 at each training part's first step; :func:`forecaster.baseline.fit_blend`;
    the series too short for a blend of their own fitted together,
    :func:`forecaster.baseline.fit_panel_blends`) on its training part of the scaled ``grid.values``
    (``observed``: bool (N, C)).

    Each series is fitted from at most ``min(max_origins, total_origins // S)`` forecast origins
    (evenly spaced), never fewer than ``min_origins``: 2,000 each for a few series, a bounded total
    (about 200,000) for many.
    """
    origins = max(min_origins, min(max_origins, total_origins // max(1, len(grid.series_ids))))
    b, e = train
    C = observed.shape[1]
    parts = [(grid.values[o + b[i]:o + e[i], :C], observed[o + b[i]:o + e[i]]) for i, o in enumerate(grid.offsets[:-1])]
    return fit_panel_blends(parts, horizon, season_length, context_length, max_origins=origins)


def describe(spec: DataSpec, grid: Grid, info: dict, where: str, windows: dict[str, int]) -> str:
    """The data module's summary: series, rows, time range, frequency, season length, missing steps
    filled, the columns' roles, calendar features kept or dropped and why, windows per split
    (``windows``), and the baseline blend. ``info``: :attr:`Prepared.info` and ``targets_source``."""
    s, g, i = spec, grid, info
    last = s.grid_times(g.starts, g.lengths - 1)
    filled = int((g.lengths - g.rows_in_table).sum())
    n_grid = int(g.lengths.sum())
    lines = [
        f"data: {where}: {len(s.series_ids):,} series, {i['rows']:,} rows, "
        f"{s.format_time(int(g.starts.min()))} .. {s.format_time(int(last.max()))}"
        + (" (time zone: converted to UTC)" if s.time_zone else ""),
        f"frequency {s.freq} ({i['freq_source']}); season length {s.season_length} ({i['season_source']})",
        f"missing steps filled: {filled:,} of {n_grid:,} grid steps ({filled / max(1, n_grid):.1%}); "
        f"target values missing (gaps and nulls): {i['target_missing']:.1%}",
        f"targets {s.target_cols} ({i['targets_source']}); past covariates {s.past_covariate_cols}; "
        f"future covariates {s.future_covariate_cols}",
    ]
    if i["dropped"]:
        lines.append(f"dropped {len(i['dropped'])} series shorter than the window or with too little observed "
                     f"target (series, steps): {i['dropped'][:5]}")
    if i["calendar_why"]:
        lines.append("calendar features: " + "; ".join(f"{e} {w}" for e, w in i["calendar_why"].items()))
    else:
        lines.append("calendar features: none")
    n = windows
    lines.append(f"windows: train {n['train']:,}, val {n['val']:,}, test {n['test']:,} "
                 f"(context {s.context_length}, horizon {s.horizon})")
    if len(s.series_ids):
        med = np.median(s.baseline, axis=0)  # (C, 2K + 5 + HISTORY_SLOTS)
        K = len(blend_knots(s.horizon))
        drifts = (s.baseline[:, :, 2 * K] > 0).sum(axis=0)  # (C,)
        adjusted = (s.baseline[:, :, 2 * K + 1] > 0).sum(axis=0)  # (C,)
        smoothed = (s.baseline[:, :, 2 * K + 2] > 0).sum(axis=0)  # (C,)
        history = ((s.baseline[:, :, 2 * K + 1] > 0) & (s.baseline[:, :, 2 * K + 4] > 0)).sum(axis=0)  # (C,)
        parts = [f"{c}: seasonal {w[0]:.2f} -> {w[K - 1]:.2f}, last {w[K]:.2f} -> {w[2 * K - 1]:.2f}"
                 + (f", seasonally adjusted in {a:,} of {len(s.series_ids):,} series" if a else "")
                 + (f" ({r:,} with the training part's profile)" if r else "")
                 + (f", smoothed level in {e:,} of {len(s.series_ids):,} series (alpha "
                    f"{np.median(s.baseline[s.baseline[:, j, 2 * K + 2] > 0, j, 2 * K + 2]):.2f})" if e else "")
                 + (f", drift of the whole history in {d:,} of {len(s.series_ids):,} series (median weight "
                    f"{np.median(s.baseline[s.baseline[:, j, 2 * K] > 0, j, 2 * K]):.2f})" if d else "")
                 for j, (c, w, d, a, e, r) in enumerate(zip(s.target_cols, med, drifts, adjusted, smoothed, history))]
        lines.append(f"baseline blend (median over series; step 1 -> {s.horizon}; the rest is the look-back's level, "
                     "a sum above 1 continues its trend): "
                     + "; ".join(parts))
    return "\n".join(lines)


def _on_grid(table: Table, freq: Frequency, ext: Extent, calendar: list[str]) -> Grid:
    """The table's series in ``ext`` on their grids, the calendar features after the D value columns."""
    D = len(table.value_cols)
    grid = regularise(table, freq, ext, extra_cols=2 * len(calendar))
    calendar_array(grid, freq, calendar, out=grid.values[:, D:])
    return grid


def _last_observed(grid: Grid, observed: np.ndarray) -> np.ndarray:
    """int64 (S,): the grid index of each series' last step with an observed target (-1: none)."""
    any_obs = observed.any(axis=1)
    starts_row = grid.offsets[:-1]
    return np.maximum.reduceat(np.where(any_obs, np.arange(grid.n_steps), -1), starts_row) - starts_row


def first_observations(grid: Grid, observed: np.ndarray, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Each series' first observation of each target, the anchor of the baseline's drift
    (:func:`forecaster.baseline.with_first`): its scaled value, float32 (S, C), and its grid index
    in the series, int64 (S, C) (negative: before the table's first step). The earlier of this
    table's own and the one the spec knows from the fitted table (``spec.first_time``): a table
    that starts later forecasts as the whole history did; a series never observed in either has
    index ``NO_INDEX`` (value 0)."""
    C = observed.shape[1]
    starts_row = grid.offsets[:-1]
    if not len(starts_row):
        return np.zeros((0, C), dtype=np.float32), np.zeros((0, C), dtype=np.int64)
    row = np.minimum.reduceat(np.where(observed, np.arange(grid.n_steps)[:, None], grid.n_steps), starts_row)
    seen = row < grid.offsets[1:, None]  # (S, C): observed in this table
    index = np.where(seen, row - starts_row[:, None], NO_INDEX)
    value = np.where(seen, grid.values[np.where(seen, row, 0), np.arange(C)], 0.0).astype(np.float32)
    fv, ft = spec.anchors_for(grid.series_ids)
    known = ft != NO_TIME
    if known.any():
        starts = np.broadcast_to(np.asarray(grid.starts, np.int64)[:, None], ft.shape)
        k = np.full(ft.shape, NO_INDEX, dtype=np.int64)
        k[known] = spec.freq.index(starts[known], ft[known])[0]
        earlier = known & ((index == NO_INDEX) | (k < index))
        index = np.where(earlier, k, index)
        value = np.where(earlier, fv, value).astype(np.float32)
    return value, index


def _prepared(spec: DataSpec, grid: Grid, splits: dict, observed: np.ndarray, loc: np.ndarray, scale: np.ndarray,
              blend: np.ndarray, info: dict) -> Prepared:
    C = observed.shape[1]
    first_value, first_index = first_observations(grid, observed, spec)
    seen = first_index != NO_INDEX
    first_time = np.where(seen, spec.freq.time(np.asarray(grid.starts, np.int64)[:, None],
                                               np.where(seen, first_index, 0)), NO_TIME)
    # the spec keeps the anchors of this table's series (fit, and a warm start that adds series)
    spec = replace(spec, first_value=first_value.astype(np.float64), first_time=first_time)
    arrays = {
        "data": torch.from_numpy(grid.values),
        "observed": torch.from_numpy(observed.astype(np.float32)),
        "loc": torch.from_numpy(loc[:, :C].astype(np.float32)),
        "scale": torch.from_numpy(scale[:, :C].astype(np.float32)),
        # the history profiles' phase 0 at each series' grid step 0 (the spec keeps it at the absolute step 0)
        "baseline": torch.from_numpy(rotate_history(blend, spec.freq.absolute_step(grid.starts)[:, None],
                                                    spec.season_length, spec.horizon).astype(np.float32)),
        "first_value": torch.from_numpy(first_value),
        "first_index": torch.from_numpy(first_index),
    }
    info = {**info, "target_missing": float(1.0 - observed.mean()) if observed.size else 0.0}
    return Prepared(spec=spec, grid=grid, splits=splits, arrays=arrays, info=info)
