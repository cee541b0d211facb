"""Data section of ``python -m forecaster bench``: building windows from a large long table.

A synthetic long table (``n_series`` x ``n_steps`` hourly rows, string ids, ``n_cols`` float32
value columns: half targets, a quarter past and a quarter future covariates) goes through
:class:`forecaster.data.TimeSeriesDataModule`:

* ``setup``: read / validate / sort check / duplicate check / regularise / split / fit scalers /
  scale / calendar features (everything up to the contiguous arrays);
* ``batches``: build the train window index and gather a few shuffled batches (B=256, L=192).

Each row reports seconds, rows, the input table's size and the peak resident memory above the
baseline taken before the step (RSS sampled every 2 ms from ``/proc/self/statm``; Polars allocates
outside Python, so ``tracemalloc`` would miss it).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import polars as pl
import torch


class _PeakRSS:
    """Context manager: peak RSS (bytes) above the RSS at entry, sampled in a thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:  # not Linux
            return 0

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.base


def synthetic_long(n_series: int, n_steps: int, n_cols: int, seed: int = 0) -> pl.DataFrame:
    """(n_series * n_steps, 2 + n_cols) long frame: ``series`` (str), ``time`` (hourly datetime),
    ``v0 .. v{n_cols-1}`` float32 (daily sine + noise, a few nulls)."""
    rng = np.random.default_rng(seed)
    n = n_series * n_steps
    step = np.tile(np.arange(n_steps, dtype=np.int64), n_series)
    t0 = np.datetime64("2020-01-01T00:00", "ns").astype(np.int64)
    cols = {}
    for j in range(n_cols):
        cols[f"v{j}"] = np.sin(2 * np.pi * step / 24.0).astype(np.float32) + rng.standard_normal(n, dtype=np.float32)
    ids = pl.Series("series", [f"s{i:05d}" for i in range(n_series)]).gather(
        np.repeat(np.arange(n_series, dtype=np.uint32), n_steps))
    df = pl.DataFrame([ids, pl.Series("time", t0 + step * 3_600_000_000_000).cast(pl.Datetime("ns"))]) \
        .with_columns(pl.from_numpy(np.stack(list(cols.values()), axis=1), schema=list(cols)))
    # sprinkle ~0.1% nulls into the first target
    null_rows = rng.choice(n, size=max(1, n // 1000), replace=False)
    mask = np.zeros(n, dtype=bool)
    mask[null_rows] = True
    return df.with_columns(pl.when(pl.Series(mask)).then(None).otherwise(pl.col("v0")).alias("v0"))


def run(n_series: int = 1000, n_steps: int = 10_000, n_cols: int = 8, *, quick: bool = False,
        device: str = "cpu", n_batches: int = 20, batch_size: int = 256, shuffled: bool = True,
        **_) -> list[dict]:
    """Time the data module on synthetic long data; returns one dict per step (printed by the
    bench CLI). ``quick`` shrinks the table to 100 series x 2,000 steps; ``shuffled`` adds a setup
    row on the same table with its rows shuffled (the module sorts it)."""
    from forecaster.data import TimeSeriesDataModule

    if quick:
        n_series, n_steps = min(n_series, 100), min(n_steps, 2000)
    df = synthetic_long(n_series, n_steps, n_cols)
    rows, size_mb = df.height, df.estimated_size() / 2**20
    k = max(1, n_cols // 2)
    targets = [f"v{j}" for j in range(k)]
    past = [f"v{j}" for j in range(k, k + (n_cols - k) // 2)]
    future = [f"v{j}" for j in range(k + (n_cols - k) // 2, n_cols)]
    out = []
    base = {"rows": rows, "series": n_series, "cols": n_cols, "input_mb": round(size_mb, 1)}

    with _PeakRSS() as mem:
        t = time.perf_counter()
        dm = TimeSeriesDataModule(data=df, time_col="time", id_col="series", target_cols=targets,
                                  past_covariate_cols=past, future_covariate_cols=future, context_length=168,
                                  horizon=24, batch_size=batch_size)
        dm.setup("fit")
        secs = time.perf_counter() - t
    out.append({"step": "setup (read/validate/regularise/scale)", **base, "seconds": round(secs, 2),
                "peak_rss_mb": round(mem.delta / 2**20, 1),
                "arrays_mb": round(sum(v.numel() * v.element_size() for v in dm._arrays.values()) / 2**20, 1)})
    if shuffled:
        df = df.sample(fraction=1.0, shuffle=True, seed=1)
        with _PeakRSS() as mem:
            t = time.perf_counter()
            dm2 = TimeSeriesDataModule(data=df, time_col="time", id_col="series", target_cols=targets,
                                       past_covariate_cols=past, future_covariate_cols=future, context_length=168,
                                       horizon=24, batch_size=batch_size)
            dm2.setup("fit")
            secs = time.perf_counter() - t
        out.append({"step": "setup, rows shuffled (sorted by the module)", **base, "seconds": round(secs, 2),
                    "peak_rss_mb": round(mem.delta / 2**20, 1), "arrays_mb": out[0]["arrays_mb"]})
        del dm2
    del df

    with _PeakRSS() as mem:
        t = time.perf_counter()
        dl = dm.train_dataloader()  # the window index: per-series counts, O(series)
        n_windows = len(dl.dataset)
        t_index = time.perf_counter() - t
        it = iter(dl)
        next(it)  # warm-up (first randperm, allocator)
        times = []
        for _ in range(n_batches):
            t = time.perf_counter()
            b = next(it)
            if device != "cpu":
                b = {key: v.to(device, non_blocking=True) for key, v in b.items()}
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    out.append({"step": f"window index + {n_batches} shuffled batches (B={batch_size}, L=192)", **base,
                "seconds": round(t_index + sum(times), 3), "peak_rss_mb": round(mem.delta / 2**20, 1),
                "arrays_mb": "", "windows": n_windows, "ms_per_batch_median": round(1e3 * float(np.median(times)), 2)})
    return out


if __name__ == "__main__":
    import sys
    for r in run(quick="--quick" in sys.argv):
        print(r)
