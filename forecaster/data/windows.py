"""Stage 4: splits, windows and samplers.

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
baseline       float32 (B, C, 2K+1)  the series' naive blend (forecaster.baseline)
series         int64 (B,)         index into the data module's ``series_ids``
start          int64 (B,)         grid index of the window's first step in its series
=============  =================  ===================================================
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, SequentialSampler

from forecaster.timeaxis import Frequency

__all__ = ["WindowDataset", "TensorBatches", "TensorDictDataset", "collate_batched", "compute_splits",
           "window_counts"]


def compute_splits(lengths: np.ndarray, starts: np.ndarray, freq: Frequency, *, train_size, val_size, test_size,
                   val_cut: int | None, test_cut: int | None, series_ids) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-series ``[begin, end)`` grid ranges (int64 (S,)) of ``"train"``, ``"val"`` and ``"test"``.

    Cut-off times (``val_cut`` / ``test_cut``, axis values) override the sizes: val = [val_cut,
    test_cut), test = [test_cut, end), each starting at the first grid step at or after the cut.
    Otherwise sizes: a float in [0, 1) is a fraction of the series' length, an int (or a
    whole-number float) a number of steps; with ``train_size`` None test is the last ``test_size``
    steps, val the ``val_size`` before and train the rest, else the parts are consecutive from the
    start."""
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
                return np.round(n * float(v)).astype(np.int64)
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
            "baseline": torch.from_numpy(self.a["baseline"][s]),
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
