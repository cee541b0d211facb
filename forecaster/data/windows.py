"""Stage 4: splits, windows and samplers.

:class:`SplitArgs` and :func:`compute_splits` cut each series' grid into train / val / test;
:func:`window_counts` counts the windows of a part; :class:`WindowDataset` serves them;
:func:`gather` and :func:`predict_batch` build windows at any position (evaluation, prediction).

A window is ``(series, start)`` over the contiguous grid arrays: never materialised. The number of
windows per series is index arithmetic, and a batch is one fancy-indexing gather
``array[offset[s] + start + arange(L)]`` (``L = context_length + horizon``).

Every loader yields dicts of tensors (``B`` windows, ``C`` targets, ``P`` past covariates, ``F``
user future covariates + calendar features):

=============  =================  ===================================================
key            dtype, shape       meaning
=============  =================  ===================================================
target         float32 (B, L, C)  scaled targets, missing -> 0.0
observed       float32 (B, L, C)  1.0 where the target was observed, else 0.0
past_cov       float32 (B, L, P)  scaled past covariates, missing -> 0.0
future_cov     float32 (B, L, F)  scaled user future covariates, then calendar features
loc, scale     float32 (B, C)     the series' target scaler: original = scaled * scale + loc
baseline       float32 (B, C, 2K+7)  the series' naive blend and its first observation:
                                  [w_s K, w_l K, w_d, w_a, alpha, q, mu, y_first, age] (forecaster.baseline;
                                  age: steps from the first observation to the window's first step)
series         int64 (B,)         index into the data module's ``series_ids``
start          int64 (B,)         grid index of the window's first step in its series
=============  =================  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, SequentialSampler

from forecaster.baseline import NO_AGE, rotate_history, with_first
from forecaster.data.grid import Grid
from forecaster.spec import DataSpec
from forecaster.timeaxis import Frequency, to_axis

__all__ = ["WindowDataset", "TensorBatches", "NO_INDEX", "anchored", "TensorDictDataset", "collate_batched",
           "SplitArgs", "compute_splits", "cut_time", "window_counts", "observed_forecast_steps", "gather", "predict_batch"]


@dataclass(frozen=True)
class SplitArgs:
    """How each series is split (the data module's arguments of the same names; see
    :func:`compute_splits`): sizes, or cut-off times (read by the time rule, ints for integer time)
    that override them."""

    train_size: int | float | None = None
    val_size: int | float = 0.1
    test_size: int | float = 0.1
    val_start: str | int | None = None
    test_start: str | int | None = None
    min_part: int = 0  # a fraction gives at least this many steps (the horizon: one window)

    def bounds(self, lengths: np.ndarray, starts: np.ndarray, freq: Frequency, series_ids, time_kind: str,
               time_format: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """:func:`compute_splits` of series with grid ``lengths`` and ``starts`` (int64 (S,))."""
        vc = cut_time(self.val_start, "val_start", time_kind, time_format)
        tc = cut_time(self.test_start, "test_start", time_kind, time_format)
        if vc is not None and tc is not None and vc > tc:
            raise ValueError(f"val_start={self.val_start!r} is after test_start={self.test_start!r}")
        return compute_splits(lengths, starts, freq, train_size=self.train_size, val_size=self.val_size,
                              test_size=self.test_size, val_cut=vc, test_cut=tc, series_ids=series_ids,
                              min_part=self.min_part)


def cut_time(v, name: str, time_kind: str, time_format: str | None) -> int | None:
    """A cut-off (``val_start`` / ``test_start``) on the axis: an int for integer time, else a time
    read by the time rule (ISO first, then ``time_format``); None stays None."""
    if v is None:
        return None
    if time_kind == "int":
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={v!r}: time is integer, give an int") from None
    for fmt in dict.fromkeys((None, time_format)):  # ISO first, then the data's own format
        try:
            t, null, _ = to_axis([v], "datetime", fmt, what=name, strict=False)
        except ValueError:
            continue
        if not null[0]:
            return int(t[0])
    raise ValueError(f"{name}={v!r}: not a timestamp (ISO such as '2017-06-01 00:00'"
                     + (f", or in time_format {time_format!r})" if time_format else ")"))


def compute_splits(lengths: np.ndarray, starts: np.ndarray, freq: Frequency, *, train_size, val_size, test_size,
                   val_cut: int | None, test_cut: int | None, series_ids,
                   min_part: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-series ``[begin, end)`` grid ranges (int64 (S,)) of ``"train"``, ``"val"`` and ``"test"``.

    Cut-off times (``val_cut`` / ``test_cut``, axis values) override the sizes: val = [val_cut,
    test_cut), test = [test_cut, end), each starting at the first grid step at or after the cut.
    Otherwise sizes: a float in [0, 1) is a fraction of the series' length, an int (or a
    whole-number float) a number of steps; with ``train_size`` None test is the last ``test_size``
    steps, val the ``val_size`` before and train the rest, else the parts are consecutive from the
    start. A nonzero fraction gives at least ``min_part`` steps (the horizon: one evaluation window,
    so the default 10% works for short series too, such as 74 quarters at horizon 8)."""
    n = lengths.astype(np.int64)
    z = np.zeros_like(n)
    if val_cut is not None or test_cut is not None:
        def first_at_or_after(t):
            if t is None:
                return None
            k, on = freq.index(starts, np.full_like(starts, t))
            return np.clip(k + (~on), 0, n)

        ts, vs = first_at_or_after(test_cut), first_at_or_after(val_cut)
        ts = n.copy() if ts is None else ts
        vs = ts.copy() if vs is None else vs
        if np.any(vs > ts):
            raise ValueError("val_start is after test_start")
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
                part = np.round(n * float(v)).astype(np.int64)
                return np.maximum(part, int(min_part)) if v > 0 else part
        if int(v) < 0:
            raise ValueError(f"{name}={v!r}: must be >= 0")
        return np.full_like(n, int(v))

    nv, nte = size(val_size, "val_size"), size(test_size, "test_size")
    if train_size is None:
        te0 = n - nte
        v0 = te0 - nv
        if np.any(v0 < 0):
            raise ValueError(f"val_size + test_size exceed the length of some series (shortest {int(n.min())} steps)")
        return {"train": (z, v0), "val": (v0, te0), "test": (te0, n)}
    ntr = size(train_size, "train_size")
    end = ntr + nv + nte
    if np.any(end > n):
        s = int(np.argmax(end > n))
        raise ValueError(f"train_size + val_size + test_size = {int(end[s])} steps but series "
                         f"{series_ids[s]!r} has only {int(n[s])}")
    return {"train": (z, ntr), "val": (ntr, ntr + nv), "test": (ntr + nv, end)}


def window_counts(split: str, begin: np.ndarray, end: np.ndarray, context_length: int, horizon: int,
                  stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first, counts)``, int64 (S,): the first window start and the number of windows per series.
    Training windows lie inside the part; validation/test windows forecast ``[f, f + horizon)``
    inside the part and take their context from before it (``f - context_length >= 0``)."""
    L = context_length + horizon
    if split == "train":
        first = begin.copy()
        span = end - first - L  # last valid start - first
    else:
        f0 = np.maximum(begin, context_length)
        first = f0 - context_length
        span = (end - horizon) - f0
    counts = np.where(span >= 0, span // stride + 1, 0).astype(np.int64)
    return first, counts


def observed_forecast_steps(observed: np.ndarray, offsets: np.ndarray, begin: np.ndarray, end: np.ndarray,
                            context_length: int, horizon: int, stride: int) -> np.ndarray:
    """int64 (S, C): observed values (``observed``: (N, C) grid rows, nonzero = observed) per
    series and target in the steps that the val/test windows of the parts ``[begin, end)``
    forecast at ``stride``."""
    first, counts = window_counts("val", begin, end, context_length, horizon, stride)
    out = np.zeros((len(begin), observed.shape[1]), dtype=np.int64)
    for i in np.flatnonzero(counts):
        f0 = int(offsets[i] + first[i]) + context_length
        seg = observed[f0:f0 + int(counts[i] - 1) * stride + horizon]
        if stride > horizon:  # the steps between one window's forecast and the next are not scored
            seg = seg[np.arange(len(seg)) % stride < horizon]
        out[i] = np.count_nonzero(seg, axis=0)
    return out


#: ``first_index`` of a target never observed
NO_INDEX = np.iinfo(np.int64).max


def anchored(baseline: np.ndarray, first_value: np.ndarray, first_index: np.ndarray, start: np.ndarray,
             season_length: int, horizon: int) -> torch.Tensor:
    """A batch's baseline entry (B, C, 2K + 7 + HISTORY_SLOTS): the fitted blend (B, C, 2K + 5 +
    HISTORY_SLOTS; its history profiles with phase 0 at the series' grid step 0, turned here to the
    window's first step, :func:`forecaster.baseline.rotate_history`), each series' first observed
    value (B, C) and the age of the window's first step, ``start - first_index`` (steps since that
    observation; ``NO_AGE`` for a target never observed, ``first_index == NO_INDEX``)."""
    baseline = rotate_history(baseline, np.asarray(start, np.int64)[:, None], season_length, horizon)
    seen = first_index != NO_INDEX
    age = np.where(seen, np.asarray(start, np.int64)[:, None] - np.where(seen, first_index, 0), 0)
    age = np.where(seen, age.astype(np.float32), np.float32(NO_AGE))
    return torch.from_numpy(with_first(baseline.astype(np.float32, copy=False), first_value, age))


def gather(arrays: dict[str, torch.Tensor], grid: Grid, spec: DataSpec, series, start,
           length: int) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Windows of ``length`` grid steps of series ``series`` (int64 (B,), indices into
    ``spec.series_ids``) from grid index ``start`` (int64 (B,), may run off either end of a series):
    ``(batch, inside)``, the batch in the layout of the module docstring (steps outside a series'
    grid are unobserved zeros; calendar features are those of their times) and the bool (B, length)
    mask of steps inside the grid. ``arrays``: the data module's ``data`` (N, D + K), ``observed``
    (N, C), ``loc``/``scale`` (S, C), ``baseline`` (S, C, 2K + 5 + HISTORY_SLOTS), ``first_value`` and ``first_index``
    (S, C) tensors over ``grid``'s rows (:func:`forecaster.data.build.first_observations`)."""
    s, g = spec, grid
    series = np.asarray(series, dtype=np.int64).reshape(-1)
    start = np.asarray(start, dtype=np.int64).reshape(-1)
    B, C, P = len(series), s.n_targets, s.n_past_covariates
    D = len(s.value_cols)
    local = start[:, None] + np.arange(length, dtype=np.int64)  # (B, L)
    inside = (local >= 0) & (local < g.lengths[series][:, None])
    rows = torch.from_numpy(np.where(inside, g.offsets[series][:, None] + local, 0))
    ins = torch.from_numpy(inside)[..., None]
    data = arrays["data"][rows] * ins  # (B, L, D+K)
    obs = arrays["observed"][rows] * ins
    if s.calendar and not inside.all():
        t = s.grid_times(g.starts[series][:, None], local)
        data[..., D:] = torch.from_numpy(s.calendar_features(t.reshape(-1)).reshape(B, length, -1))
    return {
        "target": data[..., :C].contiguous(),
        "observed": obs.contiguous(),
        "past_cov": data[..., C:C + P].contiguous(),
        "future_cov": data[..., C + P:].contiguous(),
        "loc": arrays["loc"][series],
        "scale": arrays["scale"][series],
        "baseline": anchored(arrays["baseline"][series].numpy(), arrays["first_value"][series].numpy(),
                             arrays["first_index"][series].numpy(), start, s.season_length, s.horizon),
        "series": torch.from_numpy(series),
        "start": torch.from_numpy(start),
    }, inside


def predict_batch(arrays: dict[str, torch.Tensor], grid: Grid, spec: DataSpec) -> dict[str, torch.Tensor]:
    """One window per series (S windows, the spec's context and horizon; arguments as in
    :func:`gather`): the context is the ``context_length`` steps up to and including the last step
    with an observed target, the last ``horizon`` steps are the future (target 0, observed 0,
    past_cov 0; calendar features from the future times; user future covariates from rows of the
    table beyond the last observed target, else ``ValueError``). Same dict layout as the loaders,
    first dimension S."""
    s = spec
    S, ctx, h = len(s.series_ids), s.context_length, s.horizon
    start = s.last_observed + 1 - ctx  # may be < 0 for a series with trailing gaps: zero-padded
    batch, inside = gather(arrays, grid, s, np.arange(S), start, ctx + h)
    batch["target"][:, ctx:] = 0.0
    batch["observed"][:, ctx:] = 0.0
    batch["past_cov"][:, ctx:] = 0.0
    if s.future_covariate_cols:
        fut_inside = inside[:, ctx:]
        if not fut_inside.all():
            i = int(np.argmin(fut_inside.all(axis=1)))
            raise ValueError(
                f"future covariates {s.future_covariate_cols} are needed for the {h} steps after the last "
                f"observed target, but series {s.series_ids[i]!r} has only {int(fut_inside[i].sum())} of those "
                "rows; append rows with the future covariates (and null targets) to the table")
    return batch


def collate_batched(batch):
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
                 counts: np.ndarray, stride: int, length: int, split_sizes: tuple[int, int, int],
                 season_length: int, horizon: int):
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
        self.season_length, self.horizon = int(season_length), int(horizon)  # the history profiles' rotation

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
            "baseline": anchored(self.a["baseline"][s], self.a["first_value"][s], self.a["first_index"][s], start,
                                 self.season_length, self.horizon),
            "series": torch.from_numpy(s.astype(np.int64, copy=False)),
            "start": torch.from_numpy(start),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class TensorBatches(BatchSampler):
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


class TensorDictDataset(Dataset):
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
