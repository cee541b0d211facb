"""Stage 2: the time grid and the calendar features.

:func:`resolve_frequency` reads or infers the frequency and checks that every row lies on its
series' grid; :func:`extent` finds each series' grid; :func:`regularise` puts each series on its grid ``time(origin, k)``, ``k = 0 .. n-1``
(the origin is the series' first time) in one contiguous ``(N, D)`` float32 array, missing periods
NaN (nothing is interpolated); :func:`calendar_array` computes the calendar features of every grid
step, :func:`choose_calendar` which features a training table gets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from forecaster.data.table import Table
from forecaster.timeaxis import (
    CALENDAR_ENCODINGS, CALENDAR_PERIODS, DAY_NS, Frequency, _is_month_end, _weekday, calendar_features,
    default_calendar, format_time,
)

__all__ = ["Grid", "Extent", "resolve_frequency", "extent", "regularise", "calendar_array", "grid_times_all",
           "covered_calendar", "choose_calendar"]


@dataclass
class Grid:
    """Every series on its regular grid, concatenated.

    Attributes:
        series_ids: (S,) ids, in the table's series order.
        offsets: int64 (S + 1,): series s occupies rows ``offsets[s]:offsets[s + 1]``.
        starts: int64 (S,): axis time of each series' grid step 0.
        lengths: int64 (S,): grid steps per series.
        values: float32 (N, D + extra): the value columns, NaN where a period is missing or null,
            then room for the calendar features.
        rows_in_table: table rows per series (S,) (the rest of ``lengths`` are filled gaps).
    """

    series_ids: list[str]
    offsets: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    values: np.ndarray
    rows_in_table: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.offsets[-1])


def resolve_frequency(table: Table, freq: str | int | Frequency | None, time_col: str) -> Frequency:
    """The frequency given (a string, an int step or a :class:`Frequency`; for calendar months the
    month-end anchoring is read from the data) or inferred (None); ``ValueError`` when a row is off
    its series' grid, naming it."""
    df = table.frame
    t = df["__t"].to_numpy()
    if freq is None:
        if table.time_kind == "int":
            d = df["__d"].drop_nulls()
            if d.len() == 0:
                raise ValueError(f"cannot infer the frequency of {table.where}: no series has two distinct times; "
                                 "set freq (an int step)")
            vals, counts = np.unique(d.to_numpy(), return_counts=True)
            f = Frequency("int", int(vals[counts == counts.max()].min()))
        else:
            try:
                f = Frequency.infer(df["__d"].drop_nulls().to_numpy(), t)
            except ValueError as e:
                raise ValueError(f"cannot infer the frequency of {table.where}: {e}") from None
        what = f"the inferred frequency {f}"
    else:
        f = freq if isinstance(freq, Frequency) else Frequency.parse(freq, table.time_kind)
        if f.kind == "month" and not isinstance(freq, Frequency):
            f = replace(f, month_end=bool(_is_month_end(t).all()))
        what = f"freq={freq.value if isinstance(freq, Frequency) else freq!r}"
    first = df.select((pl.col("__s") != pl.col("__s").shift(1)).fill_null(True)).to_series().to_numpy()
    origin = np.maximum.accumulate(np.where(first, np.arange(len(t)), 0))  # row of each row's series start
    f.check_anchor(t[first])
    if f.kind == "session" and table.time_zone:
        raise ValueError(
            f"freq={f.value!r} is a session of wall-clock hours, but {time_col} of {table.where} is zone-aware "
            f"({table.time_zone}), which is read on the UTC axis where the session would move with daylight saving; "
            "convert to local wall-clock times first (dt.convert_time_zone(ZONE).dt.replace_time_zone(None))")
    k, on = f.index(t[origin], t)
    if not on.all():
        bad = np.flatnonzero(~on)
        r = df.row(int(bad[0]), named=True)
        raise ValueError(
            f"cannot regularise {table.where} to {what}: series {r['__id']!r} has "
            f"{time_col}={format_time(r['__t'], table.time_kind)} off the grid ({bad.size} row(s) in all)"
            + ("; the frequency cannot be inferred consistently" if freq is None else "")
            + (". The times are zone-aware, so they are on the UTC axis, where local midnights move by an hour "
               "with daylight saving: for daily or coarser data drop the zone (dt.replace_time_zone(None)) or "
               "use dates" if table.time_zone else "")
            + ". Resample/aggregate to a regular frequency first, or set freq to a step that divides all time "
            "differences")
    if freq is None:
        _warn_if_sparse(table, f, k, first)
    return f


# An inferred grid that leaves more than this share of steps missing (overall or in one series) is
# reported: series on a coarser grid than the rest (hourly among half-hourly) train silently with
# every other step missing otherwise.
SPARSE_GRID_WARNING = 0.2


def _warn_if_sparse(table: Table, f: Frequency, k: np.ndarray, first: np.ndarray) -> None:
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(k)] - 1
    rows = ends - starts + 1
    steps = k[ends].astype(np.int64) + 1
    share = 1.0 - rows / steps
    overall = 1.0 - rows.sum() / steps.sum()
    sparse = np.flatnonzero(share > SPARSE_GRID_WARNING)
    if overall <= SPARSE_GRID_WARNING and not sparse.size:
        return
    df = table.frame
    ids = df["__id"].gather(starts).to_list()
    worst = sparse[np.argsort(-share[sparse], kind="stable")][:5]
    shown = []
    for s in worst:
        d = df["__d"][int(starts[s]) + 1:int(ends[s]) + 1].drop_nulls().to_numpy()
        own = ""
        if d.size:
            try:
                own = f", its own step {Frequency.infer(d, None) if table.time_kind != 'int' else int(np.median(d))}"
            except ValueError:
                pass
        shown.append(f"{ids[s]!r} {share[s]:.0%} missing{own}")
    more = f" and {sparse.size - len(worst)} more" if sparse.size > len(worst) else ""
    session = _session_hint(table, f, starts, ends, steps.sum() - rows.sum())
    warnings.warn(
        f"the inferred frequency {f} of {table.where} leaves {overall:.0%} of the grid steps missing overall"
        + (f"; series with more than {SPARSE_GRID_WARNING:.0%} of their steps missing: {'; '.join(shown)}{more}"
           if shown else "")
        + ". If some series are on a coarser grid than the others, resample them to one frequency first (they would "
        f"train with those steps missing); set freq (e.g. freq={f.value!r}) to keep this grid and silence this warning"
        + session, UserWarning, stacklevel=4)


def _session_hint(table: Table, f: Frequency, starts: np.ndarray, ends: np.ndarray, missing: int) -> str:
    """A sub-daily grid whose records keep to some hours of the day or some weekdays (business
    hours): the session frequency that holds them, as a sentence, when it leaves fewer steps missing."""
    if f.kind != "fixed" or f.step >= DAY_NS or table.time_zone:
        return ""
    t = table.frame["__t"].to_numpy()
    day = np.floor_divide(t, DAY_NS)
    tod = t - day * DAY_NS
    lo, hi = int(tod.min()), int(tod.max()) + f.step
    wd = np.unique(_weekday(t))
    mask = "".join("1" if d in wd else "0" for d in range(7))
    if hi > DAY_NS or (hi - lo) % f.step or (hi - lo == DAY_NS and mask == "1" * 7):
        return ""
    s = Frequency("session", f.step, session=(lo, hi, mask))
    k, on = s.index(t[starts], t[ends])
    if not on.all():
        return ""
    left = int((k + 1).sum()) - int((ends - starts + 1).sum())
    if left >= missing:
        return ""
    return (f". The records keep to business hours: freq={s.value!r} makes the closed hours and days no steps at all "
            f"({left} step(s) missing instead of {missing}) and a session day the season")


@dataclass
class Extent:
    """Each kept series' grid: ids (S,), starts, lengths and table rows, int64 (S,)."""

    series_ids: list[str]
    starts: np.ndarray
    lengths: np.ndarray
    rows_in_table: np.ndarray
    dropped: list[tuple[str, int]]   # (series, grid steps) shorter than the window


def extent(table: Table, freq: Frequency, min_length: int) -> Extent:
    """Each series' grid origin and length. Series shorter than ``min_length`` grid steps are
    dropped with a warning (every series too short: ``ValueError``)."""
    ends = table.frame.group_by("__s", maintain_order=True).agg(
        pl.col("__id").first(), pl.col("__t").first().alias("t0"), pl.col("__t").last().alias("t1"), pl.len())
    t0s = ends["t0"].to_numpy().astype(np.int64)
    k_last, _ = freq.index(t0s, ends["t1"].to_numpy().astype(np.int64))
    lengths = k_last.astype(np.int64) + 1
    ids = ends["__id"].to_list()
    n_rows = ends["len"].to_numpy().astype(np.int64)
    short = [(i, int(n)) for i, n in zip(ids, lengths) if n < min_length]
    if short:
        if len(short) == len(ids):
            raise ValueError(f"every series in {table.where} is shorter than context_length + horizon = {min_length} "
                             f"steps (e.g. {short[:5]} (series, steps)); use a shorter context/horizon")
        warnings.warn(f"dropping {len(short)} series shorter than context_length + horizon = {min_length} steps: "
                      f"{short[:10]}{' ...' if len(short) > 10 else ''}", UserWarning, stacklevel=3)
        keep = lengths >= min_length
        ids = [i for i, k in zip(ids, keep) if k]
        lengths, t0s, n_rows = lengths[keep], t0s[keep], n_rows[keep]
    return Extent(ids, t0s, lengths, n_rows, short)


def regularise(table: Table, freq: Frequency, ext: Extent, extra_cols: int = 0) -> Grid:
    """Scatter the table's rows of the series in ``ext`` onto their grids. ``values`` gets
    ``extra_cols`` more (uninitialised) columns after the D value columns, for the calendar
    features."""
    df = table.frame
    if ext.dropped:
        gone = {i for i, _ in ext.dropped}
        df = df.filter(~pl.col("__id").is_in(list(gone))).with_columns(pl.col("__s").rle_id().cast(pl.Int32))
    ids, t0s, lengths = ext.series_ids, ext.starts, ext.lengths
    S = len(ids)
    offsets = np.zeros(S + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    N, D = int(offsets[-1]), len(table.value_cols)
    values = np.empty((N, D + extra_cols), dtype=np.float32)
    if N == df.height:  # no gaps: the grid is the table itself
        rows = slice(None)
    else:
        values[:, :D] = np.nan
        s_np = df["__s"].to_numpy()
        k, _ = freq.index(t0s[s_np], df["__t"].to_numpy())
        rows = k + offsets[:-1][s_np]
        del s_np, k
    for j, c in enumerate(table.value_cols):
        values[rows, j] = df[c].to_numpy()
    return Grid(series_ids=ids, offsets=offsets, starts=t0s, lengths=lengths, values=values,
                rows_in_table=ext.rows_in_table)


def grid_times_all(grid: Grid, freq: Frequency) -> np.ndarray:
    """int64 (N,): the axis time of every grid row."""
    local = np.arange(grid.n_steps, dtype=np.int64) - np.repeat(grid.offsets[:-1], grid.lengths)
    return freq.time(np.repeat(grid.starts, grid.lengths), local)


def calendar_array(grid: Grid, freq: Frequency, encodings: list[str], out: np.ndarray | None = None) -> np.ndarray:
    """float32 (N, 2 * len(encodings)): the calendar features of every grid row (written into
    ``out`` when given)."""
    K = 2 * len(encodings)
    N = grid.n_steps
    if out is None:
        out = np.empty((N, K), dtype=np.float32)
    if not K:
        return out
    if freq.kind == "fixed":
        # aligned fixed grids: one calendar over the union of all grids, sliced per series
        step, t0s = freq.step, grid.starts
        tmin = int(t0s.min())
        total = int(((t0s - tmin) // step + grid.lengths).max())
        if bool(np.all((t0s - tmin) % step == 0)) and total <= 2 * N:
            cal = calendar_features(tmin + np.arange(total, dtype=np.int64) * step, encodings)
            for s in range(len(grid.series_ids)):
                a, b = int(grid.offsets[s]), int(grid.offsets[s + 1])
                i0 = (int(t0s[s]) - tmin) // step
                out[a:b] = cal[i0:i0 + (b - a)]
            return out
    out[:] = calendar_features(grid_times_all(grid, freq), encodings)
    return out


MIN_CYCLES = 3  # a calendar feature is learnable when the training part covers its period this often


def covered_calendar(candidates: list[str], freq: Frequency, train_lengths: np.ndarray) -> tuple[list[str], dict]:
    """The candidates the training part can support: a feature is kept when the longest training
    part spans at least :data:`MIN_CYCLES` of its period (day of year needs three years).

    Returns ``(kept, why)``: ``why[name]`` says how many periods the training part covers."""
    span = float(np.max(train_lengths, initial=0)) * freq.nominal_ns
    kept, why = [], {}
    for e in candidates:
        cycles = span / CALENDAR_PERIODS[e]
        ok = cycles >= MIN_CYCLES
        why[e] = f"{'kept' if ok else 'dropped'}: the training part covers {cycles:.1f} of its periods " \
                 f"({'>=' if ok else '<'} {MIN_CYCLES})"
        if ok:
            kept.append(e)
    return kept, why


def choose_calendar(calendar_features: list[str] | str, freq: Frequency, time_kind: str, train_lengths: np.ndarray,
                    time_col: str) -> tuple[list[str], dict]:
    """The calendar encodings of a training table and why each was kept or dropped:
    ``calendar_features`` ``"auto"`` (the frequency's :func:`~forecaster.timeaxis.default_calendar`
    that the training parts cover, :func:`covered_calendar`), ``"none"`` / ``""``, one name or a
    list of names; ``ValueError`` for an unknown name or any on integer time."""
    cal = calendar_features
    if isinstance(cal, str) and cal == "auto":
        return covered_calendar(default_calendar(freq), freq, train_lengths)
    cal = [] if isinstance(cal, str) and cal in ("none", "") else ([cal] if isinstance(cal, str) else list(cal))
    if cal and time_kind == "int":
        raise ValueError(f"calendar features {cal} need a datetime time column; {time_col!r} is integer "
                         "(use calendar_features='none')")
    for e in cal:
        if e not in CALENDAR_ENCODINGS:
            raise ValueError(f"unknown calendar feature {e!r}; choose from {list(CALENDAR_ENCODINGS)}")
    return cal, {e: "given" for e in cal}
