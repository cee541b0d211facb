"""Tables of time series -> training windows, with Polars for I/O and validation, numpy index
arithmetic for the windows.

Pipeline (:class:`TimeSeriesDataModule` runs it once, lazily, on first use):

1. **Read** a path (CSV, Parquet, Arrow IPC, or a glob of them, scanned lazily by Polars), a
   ``polars.DataFrame`` or a ``polars.LazyFrame``. Long format (``id_col`` + ``time_col`` + value
   columns, many series) or wide format (``id_col=None``: one series).
2. **Validate** (each problem a ``ValueError`` naming the column / series / timestamp): missing
   columns, non-numeric values, empty table, duplicate ``(series, time)`` rows, infinities,
   all-null targets, a frequency that cannot be inferred or times off the frequency grid.
   Unsorted input is sorted, not rejected.
3. **Regularise** each series to its grid ``start + k * freq`` (``k = 0 .. n-1``): the grid
   position of every row is computed with Polars expressions, then values are scattered into one
   contiguous ``(N_grid, D)`` array per role. Missing periods are NaN (``observed = 0``); nothing
   is interpolated.
4. **Split** per series along its grid (fractions, row counts or cut-off times) and **scale**
   per series and column (``standard``: mean/std; ``robust``: median/IQR) fitted on the training
   part only.
5. **Windows** of ``L = context_length + horizon`` steps are never materialised: a window is
   ``(series, start)``; the number of windows per series is computed with index arithmetic and a
   batch is one fancy-indexing gather ``array[offset[s] + start + arange(L)]``.

Every dataloader yields dicts of tensors (``B`` windows, ``L`` steps, ``C`` targets, ``P`` past
covariates, ``F`` user future covariates + calendar features):

=============  =================  ===================================================
key            dtype, shape       meaning
=============  =================  ===================================================
target         float32 (B, L, C)  scaled targets, missing -> 0.0
observed       float32 (B, L, C)  1.0 where the target was observed, else 0.0
past_cov       float32 (B, L, P)  scaled past covariates, missing -> 0.0
future_cov     float32 (B, L, F)  scaled user future covariates, then calendar features
loc, scale     float32 (B, C)     the series' target scaler: original = scaled * scale + loc
series         int64 (B,)         index into ``dm.series_ids``
start          int64 (B,)         grid index of the window's first step in its series
=============  =================  ===================================================

Step ``i`` of a window is at time ``series_start + (start + i) * freq``
(:meth:`TimeSeriesDataModule.timestamps_for`, or :func:`grid_times` from a spec alone).

The pure functions :func:`calendar_features`, :func:`scale`, :func:`unscale`,
:func:`scaler_params` and :func:`grid_times` use only numpy and the JSON spec
(:meth:`TimeSeriesDataModule.spec`), so the streaming predictor can apply them to single new rows
without Polars or the training data.
"""

from __future__ import annotations

import glob as _glob
import os
import warnings
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = [
    "TimeSeriesDataModule", "WindowDataset", "calendar_features", "calendar_feature_names",
    "scale", "unscale", "scaler_params", "grid_times", "DEFAULT_DATASET", "SPEC_VERSION",
]

SPEC_VERSION = 1
DEFAULT_DATASET = Path(__file__).resolve().parent / "datasets" / "tmy3_weather.parquet"
# column roles of the embedded dataset (used when ``path`` and ``data`` are both None)
DEFAULT_ROLES = {
    "time_col": "time",
    "id_col": "station",
    "target_cols": ["temp_air", "relative_humidity", "wind_speed"],
    "past_covariate_cols": ["dew_point", "ghi", "dni", "dhi"],
    "future_covariate_cols": [],
}

_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
       "h": 3_600_000_000_000, "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_DAY_NS = _NS["d"]
# calendar encodings: name -> (function of numpy datetime64[ns] array giving a phase in [0, 1))
_CALENDAR = ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year",
             "month_of_year")


# ----------------------------------------------------------------------------------------------
# pure helpers (numpy only; reused by the streaming predictor)
# ----------------------------------------------------------------------------------------------

def parse_freq(freq: str | int) -> int:
    """A fixed Polars duration (``"15m"``, ``"1h"``, ``"1d"``, ``"1h30m"``) -> nanoseconds; an int
    (integer time step) is returned as is. Calendar durations (``"1mo"``, ``"1y"``, ``"1q"``) have no
    fixed length and are rejected with a ``ValueError``."""
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        if freq <= 0:
            raise ValueError(f"freq={freq}: an integer time step must be positive")
        return int(freq)
    s = str(freq).strip().lower()
    if s.lstrip("-").isdigit():
        return parse_freq(int(s))
    total, num = 0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c.isdigit():
            num += c
            i += 1
            continue
        unit = s[i:i + 2] if s[i:i + 2] in ("ns", "us", "ms", "mo") else c
        i += len(unit)
        if unit in ("mo", "y", "q") or unit not in _NS or not num:
            raise ValueError(
                f"freq={freq!r}: use a fixed Polars duration such as '15m', '1h', '1d' or '1w' (calendar "
                "durations like '1mo'/'1y' have no fixed length and are not supported), or an int step "
                "for integer time")
        total += int(num) * _NS[unit]
        num = ""
    if num or total <= 0:
        raise ValueError(f"freq={freq!r}: could not parse; use e.g. '1h', '30m', '1d'")
    return total


def format_freq(step_ns: int) -> str:
    """Nanoseconds -> the shortest Polars duration string (``3_600_000_000_000 -> "1h"``)."""
    for unit in ("w", "d", "h", "m", "s", "ms", "us", "ns"):
        if step_ns % _NS[unit] == 0:
            return f"{step_ns // _NS[unit]}{unit}"
    raise AssertionError


def default_calendar(step_ns: int | None) -> list[str]:
    """The calendar encodings that fit a frequency (``None`` = integer time: none)."""
    if step_ns is None:
        return []
    if step_ns < _NS["h"]:
        return ["minute_of_hour", "hour_of_day", "day_of_week"]
    if step_ns < _DAY_NS:
        return ["hour_of_day", "day_of_week", "day_of_year"]
    if step_ns < _NS["w"]:
        return ["day_of_week", "day_of_year"]
    return ["day_of_year"]


def default_season_length(step_ns: int | None) -> int:
    """Steps per season: per day for sub-daily data (24 for hourly), 7 for daily, 52 for weekly,
    12 for ~monthly; 1 (no seasonality) for integer time or anything else."""
    if step_ns is None:
        return 1
    if step_ns < _DAY_NS and _DAY_NS % step_ns == 0:
        return _DAY_NS // step_ns
    if step_ns == _DAY_NS:
        return 7
    if step_ns == _NS["w"]:
        return 52
    return 1


def calendar_feature_names(encodings: Sequence[str]) -> list[str]:
    """``["hour_of_day"] -> ["hour_of_day_sin", "hour_of_day_cos"]``."""
    return [f"{e}_{f}" for e in encodings for f in ("sin", "cos")]


def calendar_features(times: np.ndarray, spec: dict | Sequence[str]) -> np.ndarray:
    """Calendar features of timestamps, as the model sees them in ``future_cov`` (after the user
    future covariates).

    Args:
        times: int64 array (n,): nanoseconds since 1970-01-01 of naive (wall-clock) datetimes, as
            ``polars`` ``Datetime("ns")`` ``.to_numpy().view("int64")``; ignored for integer time.
        spec: the data spec (:meth:`TimeSeriesDataModule.spec`; its ``"calendar"`` list is used) or
            the list of encodings itself.

    Returns:
        float32 array (n, 2 * len(encodings)): ``sin(2 pi phase), cos(2 pi phase)`` per encoding, in
        the order of :func:`calendar_feature_names`. Phases: minute of hour / 60, (hour + minute/60)
        / 24, weekday (Monday = 0) / 7, (day of month - 1) / 31, (day of year - 1 + fraction of day)
        / 366, (month - 1) / 12.
    """
    enc = list(spec["calendar"] if isinstance(spec, dict) else spec)
    t = np.asarray(times, dtype=np.int64).reshape(-1)
    out = np.empty((t.shape[0], 2 * len(enc)), dtype=np.float32)
    if not enc:
        return out
    day = np.floor_divide(t, _DAY_NS)
    tod = (t - day * _DAY_NS).astype(np.float64) / _DAY_NS  # fraction of the day in [0, 1)
    dt64 = t.astype("datetime64[ns]")
    for j, e in enumerate(enc):
        if e == "minute_of_hour":
            phase = np.mod(tod * 24.0, 1.0)
        elif e == "hour_of_day":
            phase = tod
        elif e == "day_of_week":
            phase = np.mod(day + 3, 7) / 7.0  # 1970-01-01 was a Thursday (Monday = 0)
        elif e == "day_of_month":
            phase = (dt64.astype("datetime64[D]") - dt64.astype("datetime64[M]")).astype(np.int64) / 31.0
        elif e == "day_of_year":
            doy = (dt64.astype("datetime64[D]") - dt64.astype("datetime64[Y]")).astype(np.int64)
            phase = (doy + tod) / 366.0
        elif e == "month_of_year":
            phase = np.mod(dt64.astype("datetime64[M]").astype(np.int64), 12) / 12.0
        else:
            raise ValueError(f"unknown calendar feature {e!r}; choose from {list(_CALENDAR)}")
        ang = 2.0 * np.pi * phase
        out[:, 2 * j] = np.sin(ang)
        out[:, 2 * j + 1] = np.cos(ang)
    return out


def scaler_params(spec: dict, series_id: str, cols: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(loc, scale)``, float32 arrays (len(cols),), of one series from the spec; ``cols`` defaults
    to the target columns. Raises ``ValueError`` for an unknown series id or column."""
    cols = list(spec["target_cols"] if cols is None else cols)
    try:
        params = spec["scalers"][str(series_id)]
    except KeyError:
        raise ValueError(f"series {series_id!r} is not in the spec (known: {list(spec['scalers'])[:10]}...); "
                         "a checkpoint can only forecast series it was trained on") from None
    missing = [c for c in cols if c not in params]
    if missing:
        raise ValueError(f"no scaler for column(s) {missing} of series {series_id!r}")
    loc = np.array([params[c][0] for c in cols], dtype=np.float32)
    sc = np.array([params[c][1] for c in cols], dtype=np.float32)
    return loc, sc


def scale(values: np.ndarray, spec: dict, series_id: str, cols: Sequence[str] | None = None) -> np.ndarray:
    """Original units -> model units: ``(values - loc) / scale``. ``values``: (..., len(cols))
    with ``cols`` defaulting to the target columns; returns float32, same shape."""
    loc, sc = scaler_params(spec, series_id, cols)
    return ((np.asarray(values, dtype=np.float32) - loc) / sc).astype(np.float32, copy=False)


def unscale(values: np.ndarray, spec: dict, series_id: str, cols: Sequence[str] | None = None) -> np.ndarray:
    """Model units -> original units: ``values * scale + loc``. ``values``: (..., len(cols)) with
    ``cols`` defaulting to the target columns; returns float32, same shape."""
    loc, sc = scaler_params(spec, series_id, cols)
    return (np.asarray(values, dtype=np.float32) * sc + loc).astype(np.float32, copy=False)


def grid_times(spec: dict, series_id: str, start: int | np.ndarray, steps: int = 1) -> np.ndarray:
    """Times of grid steps ``start .. start + steps - 1`` of a series, from the spec alone.

    Returns int64 array (steps,) (or (len(start), steps) for an array of starts): nanoseconds since
    1970-01-01 (naive) for datetime time, the integer time values for integer time. Turn the former
    into datetimes with ``.astype("datetime64[ns]")`` or ``pl.Series(x).cast(pl.Datetime("ns"))``."""
    info = spec["series"][str(series_id)]
    k = np.asarray(start, dtype=np.int64)[..., None] + np.arange(steps, dtype=np.int64)
    return int(info["start"]) + k * int(spec["freq_step"])


# ----------------------------------------------------------------------------------------------
# reading and validation (Polars)
# ----------------------------------------------------------------------------------------------

def _scan(path: str) -> pl.LazyFrame:
    """Lazily scan a CSV / Parquet / Arrow IPC file or glob (one Polars scan over all files)."""
    p = str(path)
    files = sorted(_glob.glob(p)) if any(ch in p for ch in "*?[") else [p]
    if not files:
        raise ValueError(f"path {p!r}: no file matches this glob")
    if not os.path.exists(files[0]):
        raise ValueError(f"path {p!r}: file not found")
    suffix = Path(files[0]).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pl.scan_parquet(p)
    if suffix in (".arrow", ".ipc", ".feather"):
        return pl.scan_ipc(p)
    if suffix in (".csv", ".txt", ".tsv"):
        return pl.scan_csv(p, try_parse_dates=True, separator="\t" if suffix == ".tsv" else ",")
    raise ValueError(f"path {p!r}: unknown file type {suffix!r}; use .csv, .parquet or .arrow/.ipc")


def _closest(name: str, options: Sequence[str]) -> str:
    import difflib
    m = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {m[0]!r}?)" if m else ""


class _Prepared:
    """Everything the windows need, in contiguous arrays over the concatenated regular grids."""

    series_ids: list[str]
    offsets: np.ndarray        # int64 (S + 1,): series s occupies grid rows offsets[s]:offsets[s+1]
    start_time: np.ndarray     # int64 (S,): ns (datetime) or int value of grid step 0
    step: int                  # ns per step, or the integer time step
    last_observed: np.ndarray  # int64 (S,): grid index of the last step with any target observed


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------

def _collate_batched(batch):
    """The dataset's ``__getitems__`` already returns a batched dict."""
    return batch


class WindowDataset(Dataset):
    """Windows ``(series, start)`` over the module's contiguous arrays, gathered in batches.

    ``windows_per_series[s]`` windows start at grid indices ``first[s] + k * stride``; window ``i``
    is found by ``searchsorted`` over the cumulative counts, so memory is O(series), not O(windows).
    ``__getitems__(indices)`` (used by the DataLoader) returns the batched dict of the module
    docstring; ``__getitem__(i)`` returns one window without the batch dimension.
    """

    def __init__(self, arrays: dict[str, torch.Tensor], offsets: np.ndarray, first: np.ndarray,
                 counts: np.ndarray, stride: int, length: int, split_sizes: tuple[int, int, int]):
        # data (N, C+P+Fu+K) scaled & zero-filled, observed (N, C), loc/scale (S, C); gathered with
        # numpy (np.take: no intra-op thread pool, fast on a busy CPU), returned as tensors
        self.a = {k: v.numpy() for k, v in arrays.items()}
        self.offsets = np.ascontiguousarray(offsets[:-1], dtype=np.int64)
        self.first = np.asarray(first, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.cum = np.cumsum(self.counts)
        self.stride = int(stride)
        self.length = int(length)
        self.C, self.P, self.Fu = split_sizes
        self._ar = np.arange(self.length, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.cum[-1]) if len(self.cum) else 0

    def locate(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """Window indices (B,) -> (series (B,), start (B,)) int64 arrays."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)})")
        s = np.searchsorted(self.cum, idx, side="right")
        before = np.where(s > 0, self.cum[np.maximum(s - 1, 0)], 0)
        start = self.first[s] + (idx - before) * self.stride
        return s, start

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        """``indices``: window indices (B,) (list, numpy or tensor) -> the batched dict."""
        s, start = self.locate(indices)
        rows = (self.offsets[s] + start)[:, None] + self._ar  # (B, L) grid rows
        x = torch.from_numpy(np.take(self.a["data"], rows, axis=0))  # (B, L, D): one gather
        C, P = self.C, self.P
        return {
            "target": x[..., :C],
            "observed": torch.from_numpy(np.take(self.a["observed"], rows, axis=0)),
            "past_cov": x[..., C:C + P],
            "future_cov": x[..., C + P:],
            "loc": torch.from_numpy(self.a["loc"][s]),
            "scale": torch.from_numpy(self.a["scale"][s]),
            "series": torch.from_numpy(s.astype(np.int64, copy=False)),
            "start": torch.from_numpy(start),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class _TensorBatches(BatchSampler):
    """A ``BatchSampler`` yielding int64 index tensors sliced from one ``torch.randperm`` (shuffled)
    or ``arange`` (in order): no Python list of millions of ints as ``RandomSampler`` +
    ``BatchSampler`` build. With any other sampler (e.g. Lightning's ``DistributedSampler`` swapped
    in), it falls back to the standard ``BatchSampler`` behaviour."""

    def __iter__(self):
        if type(self.sampler) not in (RandomSampler, SequentialSampler):
            yield from super().__iter__()
            return
        n = len(self.sampler)
        if type(self.sampler) is RandomSampler:
            order = torch.randperm(n, generator=self.sampler.generator)
        else:
            order = torch.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        for i in range(0, stop, self.batch_size):
            yield order[i:i + self.batch_size]


class _TensorDictDataset(Dataset):
    """A fixed set of already-built windows (the predict windows): dict of (S, ...) tensors."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["series"])

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return {k: v[idx] for k, v in self.batch.items()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


# ----------------------------------------------------------------------------------------------
# the data module
# ----------------------------------------------------------------------------------------------

class TimeSeriesDataModule(L.LightningDataModule):
    """A user's table of time series as windows for a forecaster (see the module docstring for the
    batch layout: target/observed (B, L, C), past_cov (B, L, P), future_cov (B, L, F), loc/scale
    (B, C), series/start (B,), with L = context_length + horizon).

    Args:
        path: CSV / Parquet / Arrow IPC file or glob; None (and ``data`` None) = the embedded TMY3
            weather dataset (2 stations, hourly, 1 year), whose column roles are then the defaults.
        data: an in-memory ``polars.DataFrame`` / ``LazyFrame`` instead of ``path`` (Python use).
        time_col: datetime/date column (ISO strings are parsed; time-zone-aware datetimes are
            converted to UTC, so calendar features are then UTC-based) or an integer time index.
        id_col: series id column (long format); None = the whole table is one series (wide format).
        target_cols: columns to forecast (C >= 1); None = every numeric column not otherwise used.
        past_covariate_cols: numeric columns observed only up to now (P); None = none.
        future_covariate_cols: numeric columns known ahead (user part of F); None = none.
        calendar_features: ``"auto"`` (by frequency: hourly -> hour_of_day, day_of_week,
            day_of_year), ``"none"``, or a list of ``minute_of_hour, hour_of_day, day_of_week,
            day_of_month, day_of_year, month_of_year``; each gives a sin and a cos column.
        freq: fixed Polars duration (``"1h"``) or an int step for integer time; None = inferred as
            the most common positive time difference.
        context_length, horizon: window = context + horizon steps.
        stride: step between train windows' starts.
        eval_stride: step between val/test windows (None = ``horizon``; 1 for the ETTh1 protocol).
        train_size, val_size, test_size: split per series along its regular grid. A float in
            [0, 1) is a fraction of the series' length, an int (or a whole-number float such as
            ``8640.0``) a number of steps. With
            ``train_size`` None, test is the last ``test_size`` steps, val the ``val_size`` before,
            train the rest; with ``train_size`` set the parts are consecutive from the start and
            anything after them is unused (ETTh1: 8640 / 2880 / 2880).
        val_start, test_start: cut-off times (ISO strings, or ints for integer time); when given
            they override the sizes: val = [val_start, test_start), test = [test_start, end).
        scaling: ``"standard"`` (mean, std), ``"robust"`` (median, IQR) or ``"none"``, per series
            and column, fitted on the training part's observed values only.
        season_length: override the seasonal period (None = from the frequency, 24 for hourly).
        batch_size, eval_batch_size (None = batch_size), num_workers, shuffle.
        pin_memory: None = when CUDA is available.

    Nothing is read in the constructor; the first access to a schema attribute (``n_targets``,
    ``freq``, ``series_ids``, ...), ``setup()`` or ``spec()`` builds everything once. Series whose
    grid is shorter than ``context_length + horizon`` are dropped with a warning. Wide data without
    ``id_col`` is one series with id ``"0"``.
    """

    def __init__(
        self,
        path: str | None = None,
        time_col: str | None = None,
        id_col: str | None = None,
        target_cols: list[str] | None = None,
        past_covariate_cols: list[str] | None = None,
        future_covariate_cols: list[str] | None = None,
        calendar_features: list[str] | str = "auto",
        freq: str | int | None = None,
        context_length: int = 168,
        horizon: int = 24,
        stride: int = 1,
        eval_stride: int | None = None,
        train_size: int | float | None = None,
        val_size: int | float = 0.1,
        test_size: int | float = 0.1,
        val_start: str | int | None = None,
        test_start: str | int | None = None,
        scaling: str = "standard",
        season_length: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        pin_memory: bool | None = None,
        data: pl.DataFrame | pl.LazyFrame | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["data"])
        if path is None and data is None:
            roles = DEFAULT_ROLES
            time_col = time_col or roles["time_col"]
            id_col = id_col if id_col is not None else roles["id_col"]
            target_cols = target_cols if target_cols is not None else list(roles["target_cols"])
            if past_covariate_cols is None:
                past_covariate_cols = list(roles["past_covariate_cols"])
            if future_covariate_cols is None:
                future_covariate_cols = list(roles["future_covariate_cols"])
        if path is not None and data is not None:
            raise ValueError("give either path or data, not both")
        if not time_col:
            raise ValueError("time_col is required (the name of the time column)")
        for name, v in (("context_length", context_length), ("horizon", horizon), ("stride", stride)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r}: must be an int >= 1")
        if eval_stride is not None and eval_stride < 1:
            raise ValueError(f"eval_stride={eval_stride!r}: must be >= 1")
        if scaling not in ("standard", "robust", "none"):
            raise ValueError(f"scaling={scaling!r}: choose 'standard', 'robust' or 'none'")
        self.path = path
        self.data = data
        self.time_col = time_col
        self.id_col = id_col
        self._target_cols = list(target_cols) if target_cols is not None else None
        self.past_covariate_cols = list(past_covariate_cols or [])
        self.future_covariate_cols = list(future_covariate_cols or [])
        self._calendar_arg = calendar_features
        self._freq_arg = freq
        self.context_length = int(context_length)
        self.horizon = int(horizon)
        self.stride = int(stride)
        self.eval_stride = int(eval_stride) if eval_stride is not None else self.horizon
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.val_start, self.test_start = val_start, test_start
        self.scaling = scaling
        self._season_arg = season_length
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.shuffle = shuffle
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._built = False

    @classmethod
    def from_frame(cls, data: pl.DataFrame | pl.LazyFrame, **kwargs) -> "TimeSeriesDataModule":
        """Build from an in-memory Polars frame: ``TimeSeriesDataModule.from_frame(df, time_col=...)``."""
        return cls(data=data, **kwargs)

    # ---- schema, available on first access (the CLI links these to the model) ----

    @property
    def target_cols(self) -> list[str]:
        self._build()
        return list(self._target_cols)

    @property
    def n_targets(self) -> int:
        """C: number of target columns."""
        self._build()
        return len(self._target_cols)

    @property
    def n_past_covariates(self) -> int:
        """P: number of past covariates."""
        self._build()
        return len(self.past_covariate_cols)

    @property
    def n_future_covariates(self) -> int:
        """F: user future covariates + calendar feature columns."""
        self._build()
        return len(self.future_covariate_cols) + len(self.calendar_feature_names)

    @property
    def freq(self) -> str | int:
        """The regular step: a Polars duration string (``"1h"``) or an int for integer time."""
        self._build()
        return self._freq

    @property
    def season_length(self) -> int:
        self._build()
        return self._season_length

    @property
    def series_ids(self) -> list[str]:
        self._build()
        return list(self._p.series_ids)

    @property
    def calendar_feature_names(self) -> list[str]:
        self._build()
        return calendar_feature_names(self._calendar)

    @property
    def window_length(self) -> int:
        return self.context_length + self.horizon

    # ---- the pipeline ----

    def prepare_data(self) -> None:  # nothing to download
        pass

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _frame(self) -> pl.LazyFrame:
        if self.data is not None:
            if isinstance(self.data, pl.DataFrame):
                return self.data.lazy()
            if isinstance(self.data, pl.LazyFrame):
                return self.data
            raise ValueError(f"data must be a polars DataFrame or LazyFrame, got {type(self.data).__name__}")
        return _scan(self.path if self.path is not None else str(DEFAULT_DATASET))

    def _where(self) -> str:
        if self.data is not None:
            return "the given frame"
        return repr(self.path) if self.path is not None else f"the embedded dataset {DEFAULT_DATASET.name}"

    def _build(self) -> None:
        if self._built:
            return
        lf = self._frame()
        where = self._where()
        schema = lf.collect_schema()
        names = schema.names()

        # -- column roles --
        def need(col: str, role: str) -> None:
            if col not in names:
                raise ValueError(f"{role} column {col!r} not found in {where}{_closest(col, names)}; "
                                 f"columns are {names}")

        need(self.time_col, "time_col")
        if self.id_col is not None:
            need(self.id_col, "id_col")
        used = {self.time_col, self.id_col, *self.past_covariate_cols, *self.future_covariate_cols}
        if self._target_cols is None:
            self._target_cols = [c for c in names if c not in used and schema[c].is_numeric()]
            if not self._target_cols:
                raise ValueError(f"no numeric target column in {where}; set target_cols (columns: {names})")
        if not self._target_cols:
            raise ValueError("target_cols is empty; give at least one target column")
        for role, cols in (("target", self._target_cols), ("past covariate", self.past_covariate_cols),
                           ("future covariate", self.future_covariate_cols)):
            for c in cols:
                need(c, role)
                if not (schema[c].is_numeric() or schema[c] == pl.Null):
                    raise ValueError(f"{role} column {c!r} in {where} is {schema[c]}, not numeric; cast it "
                                     "to a number or choose another column")
        value_cols = [*self._target_cols, *self.past_covariate_cols, *self.future_covariate_cols]
        dup = sorted({c for c in value_cols if value_cols.count(c) > 1})
        if dup:
            raise ValueError(f"column(s) {dup} have more than one role (target/past/future covariate)")
        if self.time_col in value_cols or (self.id_col is not None and self.id_col in value_cols):
            raise ValueError("time_col / id_col cannot also be a value column")

        # -- time kind --
        tdt = schema[self.time_col]
        if tdt == pl.Date:
            tkind, texpr = "datetime", pl.col(self.time_col).cast(pl.Datetime("ns"))
        elif isinstance(tdt, pl.Datetime):
            tcol = pl.col(self.time_col)
            if tdt.time_zone is not None:  # wall clock would have DST gaps; use UTC
                tcol = tcol.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            tkind, texpr = "datetime", tcol.cast(pl.Datetime("ns"))
        elif tdt.is_integer():
            tkind, texpr = "int", pl.col(self.time_col).cast(pl.Int64)
        elif tdt == pl.String:
            tkind, texpr = "datetime", pl.col(self.time_col).str.to_datetime(time_unit="ns", strict=False)
        else:
            raise ValueError(f"time_col {self.time_col!r} in {where} is {tdt}; it must be a datetime, date, "
                             "ISO datetime string or integer column")
        idexpr = (pl.col(self.id_col).cast(pl.String) if self.id_col is not None else pl.lit("0")).alias("__id")
        df = lf.select(
            idexpr, texpr.alias("__t"),
            *[pl.col(c).cast(pl.Float32) for c in value_cols],
        ).collect()
        if df.height == 0:
            raise ValueError(f"{where} is empty: no rows to build series from")
        if tdt == pl.String and df["__t"].null_count():
            raw = lf.select(pl.col(self.time_col)).filter(
                pl.col(self.time_col).str.to_datetime(time_unit="ns", strict=False).is_null()
                & pl.col(self.time_col).is_not_null()).head(1).collect()
            if raw.height:
                raise ValueError(f"time_col {self.time_col!r}: value {raw.item()!r} could not be parsed as a datetime; "
                                 "give ISO timestamps or parse the column first")
        nt = df["__t"].null_count()
        if nt:
            ex = df.filter(pl.col("__t").is_null()).row(0, named=True)["__id"]
            raise ValueError(f"time_col {self.time_col!r} has {nt} null value(s) (e.g. in series {ex!r}); drop "
                             "or fill those rows")
        if df["__id"].null_count():
            raise ValueError(f"id_col {self.id_col!r} has null values; every row needs a series id")

        if tkind == "datetime":
            df = df.with_columns(pl.col("__t").dt.epoch("ns").alias("__t"))  # int64 ns from here on
        show = (lambda v: v) if tkind == "int" else (lambda v: np.datetime64(int(v), "ns"))

        # -- sort (don't fail on unsorted input); from here rows are grouped by series, time-ordered --
        same = (pl.col("__id") == pl.col("__id").shift(1)).fill_null(False)
        in_order = df["__id"].is_sorted() and df.select(
            (~same | (pl.col("__t") >= pl.col("__t").shift(1))).all()).item()
        if not in_order:  # sort on (integer code of the id, time): ~2x faster than on the strings
            uniq = df["__id"].unique().sort()
            code = pl.col("__id").replace_strict(uniq, pl.Series(np.arange(len(uniq), dtype=np.int32)))
            df = df[df.select(pl.arg_sort_by(code, "__t")).to_series()]
        df = df.with_columns(pl.col("__id").rle_id().cast(pl.Int32).alias("__s"))
        first_row = (pl.col("__s") != pl.col("__s").shift(1)).fill_null(True)
        df = df.with_columns(pl.when(first_row).then(None).otherwise(pl.col("__t") - pl.col("__t").shift(1))
                             .alias("__d"))  # time step to the previous row of the same series

        # -- duplicates --
        dups = df.filter(pl.col("__d") == 0)
        if dups.height:
            ex = dups.unique(["__s", "__t"], maintain_order=True).head(3)
            pairs = [f"({i!r}, {show(t)})" for i, t in zip(ex["__id"].to_list(), ex["__t"].to_list())]
            raise ValueError(f"{dups.height} duplicate (series, {self.time_col}) rows in {where}, e.g. "
                             f"{', '.join(pairs)}; aggregate or drop duplicates first")

        # -- infinities, all-null targets --
        has_inf = df.select([pl.col(c).is_infinite().any().alias(c) for c in value_cols]).row(0, named=True)
        for c in value_cols:
            if has_inf[c]:
                inf = df.filter(pl.col(c).is_infinite())
                r = inf.row(0, named=True)
                raise ValueError(f"column {c!r} has {inf.height} infinite value(s), first in series {r['__id']!r} "
                                 f"at {self.time_col}={show(r['__t'])}; replace them with null")
        counts = df.group_by("__s", maintain_order=True).agg(
            pl.col("__id").first(), *[(pl.col(c).is_not_null() & pl.col(c).is_not_nan()).sum().alias(c)
                                      for c in self._target_cols])
        for c in self._target_cols:
            bad = counts.filter(pl.col(c) == 0)["__id"].to_list()
            if len(bad) == counts.height:
                raise ValueError(f"target column {c!r} is entirely null/NaN in {where}; nothing to learn")
            if bad:
                raise ValueError(f"target {c!r} is all null/NaN in series {bad[:5]}"
                                 f"{' ...' if len(bad) > 5 else ''}; drop these series or fill the target")
        del counts

        # -- frequency --
        if self._freq_arg is None:
            d = df["__d"].drop_nulls()
            if d.len() == 0:
                raise ValueError(f"cannot infer the frequency of {where}: no series has two distinct times; "
                                 "set freq (e.g. '1h' or an int step)")
            step = int(d.mode().min())
            del d
        else:
            step = parse_freq(self._freq_arg)
            if tkind == "int" and not isinstance(self._freq_arg, (int, np.integer)) \
                    and not str(self._freq_arg).strip().lstrip("-").isdigit():
                raise ValueError(f"freq={self._freq_arg!r} is a duration but time_col {self.time_col!r} is integer; "
                                 "give an int step")
        off = df.filter(pl.col("__d") % step != 0)
        if off.height:
            r = off.row(0, named=True)
            what = (f"the inferred frequency {format_freq(step) if tkind == 'datetime' else step}"
                    if self._freq_arg is None else f"freq={self._freq_arg!r}")
            raise ValueError(
                f"cannot regularise {where} to {what}: series {r['__id']!r} has {self.time_col}={show(r['__t'])} "
                f"off the grid ({off.height} row(s) in all)"
                + ("; the frequency cannot be inferred consistently" if self._freq_arg is None else "")
                + ". Resample/aggregate to a regular frequency first, or set freq to a step that divides all time "
                "differences")
        del off
        if tkind == "datetime":
            self._freq = format_freq(step)
            self._step_ns: int | None = step
        else:
            self._freq = step
            self._step_ns = None
        self._time_kind = tkind
        self._step = step

        # -- regularise: grid index per row, then one scatter into a contiguous array --
        ends = df.group_by("__s", maintain_order=True).agg(
            pl.col("__id").first(), pl.col("__t").first().alias("t0"), pl.col("__t").last().alias("t1"))
        lengths = ((ends["t1"] - ends["t0"]) // step + 1).to_numpy().astype(np.int64)
        ids = ends["__id"].to_list()
        t0s = ends["t0"].to_numpy().astype(np.int64)
        Lw = self.window_length
        short = [(i, int(n)) for i, n in zip(ids, lengths) if n < Lw]
        if short:
            if len(short) == len(ids):
                raise ValueError(f"every series in {where} is shorter than context_length + horizon = {Lw} "
                                 f"steps (e.g. {short[:5]} (series, steps)); use a shorter context/horizon")
            warnings.warn(f"dropping {len(short)} series shorter than context_length + horizon = {Lw} steps: "
                          f"{short[:10]}{' ...' if len(short) > 10 else ''}", UserWarning, stacklevel=2)
            keep = lengths >= Lw
            df = df.filter(pl.col("__s").is_in(np.flatnonzero(~keep).astype(np.int32)).not_())
            df = df.with_columns(pl.col("__s").rle_id().cast(pl.Int32))
            ids = [i for i, k in zip(ids, keep) if k]
            lengths, t0s = lengths[keep], t0s[keep]
        S = len(ids)
        offsets = np.zeros(S + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        N = int(offsets[-1])
        C, P, Fu = len(self._target_cols), len(self.past_covariate_cols), len(self.future_covariate_cols)
        D = C + P + Fu

        # -- calendar encodings --
        cal = self._calendar_arg
        if isinstance(cal, str):
            cal = default_calendar(self._step_ns) if cal == "auto" else ([] if cal in ("none", "") else [cal])
        cal = list(cal)
        if cal and tkind == "int":
            raise ValueError(f"calendar features {cal} need a datetime time column; {self.time_col!r} is integer "
                             "(use calendar_features='none')")
        for e in cal:
            if e not in _CALENDAR:
                raise ValueError(f"unknown calendar feature {e!r}; choose from {list(_CALENDAR)}")
        self._calendar = cal
        K = 2 * len(cal)
        self._season_length = int(self._season_arg) if self._season_arg else default_season_length(self._step_ns)

        # the one big array: (N, D + K) float32 = [targets | past cov | future cov | calendar]
        if N == df.height:  # no gaps: the grid is the table itself
            data = np.empty((N, D + K), dtype=np.float32)
            rows = slice(None)
        else:
            data = np.full((N, D + K), np.nan, dtype=np.float32)
            s_np = df["__s"].to_numpy()
            rows = t0s[s_np]  # (n_rows,) int64, reused in place: grid row of every table row
            del s_np
            np.subtract(df["__t"].to_numpy(), rows, out=rows)
            rows //= step
            rows += offsets[:-1][df["__s"].to_numpy()]
        for j, c in enumerate(value_cols):
            data[rows, j] = df[c].to_numpy()
        del df, rows
        observed = ~np.isnan(data[:, :C])

        # -- splits --
        self._p = p = _Prepared()
        p.series_ids, p.offsets, p.step, p.start_time = ids, offsets, step, t0s
        self._splits = self._compute_splits(lengths, t0s, step, tkind)
        tr0, tr1 = self._splits["train"]

        # -- per series (vectorised over its rows): fit scalers on the train part, scale in place,
        #    last observed step, calendar features --
        loc = np.zeros((S, D), dtype=np.float64)
        scl = np.ones((S, D), dtype=np.float64)
        last_obs = np.zeros(S, dtype=np.int64)
        cal_all, cal_base = None, 0
        if K:
            tmin = int(t0s.min())
            aligned = bool(np.all((t0s - tmin) % step == 0))
            total = int(((t0s - tmin) // step + lengths).max())
            if aligned and total <= 2 * N:  # one calendar over the union of all grids, sliced per series
                cal_all = calendar_features(tmin + np.arange(total, dtype=np.int64) * step, cal)
                cal_base = tmin
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> handled below
            for s in range(S):
                a, b = int(offsets[s]), int(offsets[s + 1])
                blk = data[a:b, :D]
                if self.scaling != "none" and D:
                    tr = blk[tr0[s]:tr1[s]]
                    if self.scaling == "standard":
                        loc[s] = np.nanmean(tr, axis=0, dtype=np.float64)
                        scl[s] = np.nanstd(tr, axis=0, dtype=np.float64)
                    else:
                        q25, q50, q75 = np.nanquantile(tr.astype(np.float64), [0.25, 0.5, 0.75], axis=0)
                        loc[s], scl[s] = q50, q75 - q25
                    no_loc = np.isnan(loc[s])
                    if no_loc[:C].any():
                        warnings.warn(f"series {ids[s]!r}: no observed training value of "
                                      f"{[value_cols[j] for j in np.flatnonzero(no_loc[:C])]} to fit the scaler; "
                                      "using loc=0, scale=1", UserWarning, stacklevel=3)
                    loc[s][no_loc] = 0.0
                    bad = ~np.isfinite(scl[s]) | (scl[s] <= 1e-12 * np.maximum(1.0, np.abs(loc[s])))
                    scl[s][bad] = 1.0
                    blk -= loc[s].astype(np.float32)
                    blk /= scl[s].astype(np.float32)
                np.copyto(blk, 0.0, where=np.isnan(blk))  # missing -> 0 (no infinities: validated)
                nz = np.flatnonzero(observed[a:b].any(axis=1))
                last_obs[s] = nz[-1]
                if K:
                    if cal_all is not None:
                        i0 = (int(t0s[s]) - cal_base) // step
                        data[a:b, D:] = cal_all[i0:i0 + (b - a)]
                    else:
                        data[a:b, D:] = calendar_features(t0s[s] + np.arange(b - a, dtype=np.int64) * step, cal)
        p.last_observed = last_obs
        self._loc, self._scl = loc, scl
        self._arrays = {
            "data": torch.from_numpy(data),
            "observed": torch.from_numpy(observed.astype(np.float32)),
            "loc": torch.from_numpy(loc[:, :C].astype(np.float32)),
            "scale": torch.from_numpy(scl[:, :C].astype(np.float32)),
        }
        del observed
        self._lengths = lengths
        self._value_cols = value_cols
        self._built = True

    def _compute_splits(self, lengths: np.ndarray, t0: np.ndarray, step: int, tkind: str) -> dict:
        """Per-series [begin, end) grid ranges of train/val/test, int64 arrays (S,)."""
        n = lengths.astype(np.int64)
        z = np.zeros_like(n)
        if self.val_start is not None or self.test_start is not None:
            def cut(v, name):
                if v is None:
                    return None
                if tkind == "int":
                    try:
                        tv = int(v)
                    except (TypeError, ValueError):
                        raise ValueError(f"{name}={v!r}: time is integer, give an int") from None
                else:
                    try:
                        tv = int(np.datetime64(str(v), "ns").astype(np.int64))
                    except ValueError:
                        raise ValueError(f"{name}={v!r}: not an ISO timestamp (e.g. '2017-06-01 00:00')") from None
                # first grid index with time >= cut
                return np.clip(-((t0 - tv) // step), 0, n)

            ts = cut(self.test_start, "test_start")
            vs = cut(self.val_start, "val_start")
            if ts is None:
                ts = n.copy()
            if vs is None:
                vs = ts.copy()
            if np.any(vs > ts):
                raise ValueError(f"val_start={self.val_start!r} is after test_start={self.test_start!r}")
            return {"train": (z, vs), "val": (vs, ts), "test": (ts, n)}

        def size(v, name):
            if isinstance(v, bool) or v is None:
                raise ValueError(f"{name}={v!r}: give a fraction in [0, 1) or an int number of steps")
            if isinstance(v, (float, np.floating)):
                # a whole number >= 1 is a step count: config parsers may hand an int over as 8640.0
                if v >= 1.0 and float(v).is_integer():
                    v = int(v)
                elif not 0.0 <= v < 1.0:
                    raise ValueError(f"{name}={v!r}: a float is a fraction and must be in [0, 1); give a whole "
                                     "number for a number of steps")
                else:
                    return np.round(n * float(v)).astype(np.int64)
            if int(v) < 0:
                raise ValueError(f"{name}={v!r}: must be >= 0")
            return np.full_like(n, int(v))

        nv, nte = size(self.val_size, "val_size"), size(self.test_size, "test_size")
        if self.train_size is None:
            te0 = n - nte
            v0 = te0 - nv
            if np.any(v0 < 0):
                raise ValueError(f"val_size + test_size exceed the length of some series "
                                 f"(shortest {int(n.min())} steps)")
            return {"train": (z, v0), "val": (v0, te0), "test": (te0, n)}
        ntr = size(self.train_size, "train_size")
        end = ntr + nv + nte
        if np.any(end > n):
            s = int(np.argmax(end > n))
            raise ValueError(f"train_size + val_size + test_size = {int(end[s])} steps but series "
                             f"{self._p.series_ids[s]!r} has only {int(n[s])}")
        return {"train": (z, ntr), "val": (ntr, ntr + nv), "test": (ntr + nv, end)}

    def split_bounds(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(begin, end)``: int64 arrays (S,) of the grid indices ``[begin, end)`` of ``split``
        ("train" | "val" | "test") per series (index into ``series_ids``). The first time of the
        test part of series ``i`` is ``timestamps_for(i, begin[i], 1)[0]``."""
        self._build()
        if split not in self._splits:
            raise ValueError(f"split={split!r}: choose 'train', 'val' or 'test'")
        b, e = self._splits[split]
        return b.copy(), e.copy()

    def frame(self) -> pl.LazyFrame:
        """The input table as given (path scanned lazily, or the in-memory frame), unvalidated."""
        return self._frame()

    # ---- windows ----

    def _windows(self, split: str) -> WindowDataset:
        self._build()
        b, e = self._splits[split]
        Lw, h, ctx = self.window_length, self.horizon, self.context_length
        if split == "train":
            stride = self.stride
            first = b.copy()
            span = e - first - Lw  # last valid start - first
        else:
            stride = self.eval_stride
            # forecast part [f, f + h) inside [b, e) and window start f - ctx >= 0
            f0 = np.maximum(b, ctx)
            first = f0 - ctx
            span = (e - h) - f0
        counts = np.where(span >= 0, span // stride + 1, 0).astype(np.int64)
        C, P, Fu = len(self._target_cols), len(self.past_covariate_cols), len(self.future_covariate_cols)
        return WindowDataset(self._arrays, self._p.offsets, first, counts, stride, Lw, (C, P, Fu))

    def train_dataset(self) -> WindowDataset:
        return self._windows("train")

    def val_dataset(self) -> WindowDataset:
        return self._windows("val")

    def test_dataset(self) -> WindowDataset:
        return self._windows("test")

    def predict_batch(self) -> dict[str, torch.Tensor]:
        """One window per series (S windows): the context is the ``context_length`` steps up to and
        including the last step with an observed target, the last ``horizon`` steps are the future
        (target 0, observed 0, past_cov 0; calendar features from the future timestamps; user
        future covariates from rows of the table beyond the last observed target, else
        ``ValueError``). Same dict layout as the other loaders, first dimension S."""
        self._build()
        p = self._p
        S, Lw, ctx, h = len(p.series_ids), self.window_length, self.context_length, self.horizon
        C, P, Fu = len(self._target_cols), len(self.past_covariate_cols), len(self.future_covariate_cols)
        D = C + P + Fu
        start = p.last_observed + 1 - ctx  # may be < 0 for a series with trailing gaps: zero-padded
        local = start[:, None] + np.arange(Lw, dtype=np.int64)  # (S, L)
        n = self._lengths[:, None]
        inside = (local >= 0) & (local < n)
        rows = torch.from_numpy(np.where(inside, p.offsets[:-1, None] + local, 0))
        ins = torch.from_numpy(inside)
        data = self._arrays["data"][rows] * ins[..., None]  # (S, L, D+K)
        obs = self._arrays["observed"][rows] * ins[..., None]
        future = torch.zeros(S, Lw, dtype=torch.bool)
        future[:, ctx:] = True
        data[..., :C + P] = data[..., :C + P].masked_fill(future[..., None], 0.0)
        obs = obs.masked_fill(future[..., None], 0.0)
        if Fu:
            fut_inside = inside[:, ctx:]
            if not fut_inside.all():
                s = int(np.argmin(fut_inside.all(axis=1)))
                raise ValueError(
                    f"future covariates {self.future_covariate_cols} are needed for the {h} steps after the last "
                    f"observed target, but series {p.series_ids[s]!r} has only {int(fut_inside[s].sum())} of those "
                    "rows; append rows with the future covariates (and null targets) to the table")
        if self._calendar:
            t = p.start_time[:, None] + local * self._step  # (S, L)
            data[..., D:] = torch.from_numpy(calendar_features(t.reshape(-1), self._calendar).reshape(S, Lw, -1))
        return {
            "target": data[..., :C].contiguous(),
            "observed": obs.contiguous(),
            "past_cov": data[..., C:C + P].contiguous(),
            "future_cov": data[..., C + P:].contiguous(),
            "loc": self._arrays["loc"].clone(),
            "scale": self._arrays["scale"].clone(),
            "series": torch.arange(S, dtype=torch.int64),
            "start": torch.from_numpy(start.astype(np.int64)),
        }

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
        return DataLoader(ds, batch_sampler=_TensorBatches(sampler, batch_size, drop_last=False),
                          collate_fn=_collate_batched, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset()
        if len(ds) == 0:
            raise ValueError(f"no training window: every series' train part is shorter than context_length + "
                             f"horizon = {self.window_length} steps; shorten the window or enlarge train_size")
        return self._loader(ds, self.batch_size, self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset(), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset(), self.eval_batch_size, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(_TensorDictDataset(self.predict_batch()), self.eval_batch_size, False)

    # ---- time and spec ----

    def timestamps_for(self, series_idx: int, start: int, steps: int) -> pl.Series:
        """Times of steps ``start .. start + steps - 1`` of series ``series_idx`` (an index into
        ``series_ids``, as in a batch's ``"series"``; ``start`` as in its ``"start"``): a Polars
        ``Datetime("ns")`` Series (or Int64 for integer time) of length ``steps``. The forecast of a
        window is at ``timestamps_for(series, start + context_length, horizon)``."""
        self._build()
        t = self._p.start_time[int(series_idx)] + (int(start) + np.arange(int(steps), dtype=np.int64)) * self._step
        s = pl.Series(self.time_col, t, dtype=pl.Int64)
        return s.cast(pl.Datetime("ns")) if self._time_kind == "datetime" else s

    def spec(self) -> dict:
        """Everything a checkpoint needs to forecast without the training data (JSON-serialisable):

        ``version``, ``time_col``, ``id_col``, ``target_cols``, ``past_covariate_cols``,
        ``future_covariate_cols``, ``time_kind`` ("datetime" | "int"), ``freq`` ("1h" or int step),
        ``freq_step`` (ns per step, or the int step), ``calendar`` (encodings) and
        ``calendar_feature_names``, ``season_length``, ``context_length``, ``horizon``, ``scaling``,
        ``series_ids``, ``series`` ({id: {"start": grid step 0 as ns/int, "length": grid steps,
        "last_observed": grid index}}), ``scalers`` ({id: {column: [loc, scale]}} for targets, past
        and future covariates; original = scaled * scale + loc).
        """
        self._build()
        p = self._p
        return {
            "version": SPEC_VERSION,
            "time_col": self.time_col,
            "id_col": self.id_col,
            "target_cols": list(self._target_cols),
            "past_covariate_cols": list(self.past_covariate_cols),
            "future_covariate_cols": list(self.future_covariate_cols),
            "time_kind": self._time_kind,
            "freq": self._freq,
            "freq_step": int(self._step),
            "calendar": list(self._calendar),
            "calendar_feature_names": calendar_feature_names(self._calendar),
            "season_length": int(self._season_length),
            "context_length": self.context_length,
            "horizon": self.horizon,
            "scaling": self.scaling,
            "series_ids": list(p.series_ids),
            "series": {sid: {"start": int(p.start_time[i]), "length": int(self._lengths[i]),
                             "last_observed": int(p.last_observed[i])} for i, sid in enumerate(p.series_ids)},
            "scalers": {sid: {c: [float(self._loc[i, j]), float(self._scl[i, j])]
                              for j, c in enumerate(self._value_cols)} for i, sid in enumerate(p.series_ids)},
        }

    def state_dict(self) -> dict:
        """Saved into Lightning checkpoints: ``{"spec": spec()}`` when the data were built."""
        return {"spec": self.spec()} if self._built else {}
