"""Snapshots of the stream's state at scale: a full snapshot (a base), a delta after a share of the
series changed, loading the log back, and the background compaction, for 100,000 and 1,000,000
series (``--quick``: 10,000 and 100,000). Time and bytes side by side, with the bytes per series.

The table is filled directly (``SeriesTable.install`` with one real series' row repeated, each
with its own id and state): what a snapshot costs depends on the number of series and the bytes
per series, not on their values. The changes are real ``observe`` calls (the vectorised path)."""

from __future__ import annotations

import datetime as dt
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from forecaster.bench.stream_bench import T0, _setup
from forecaster.streaming import StreamingForecaster


def _filled(net, spec, n: int) -> StreamingForecaster:
    stream = StreamingForecaster(net, spec, max_series=None)
    rec = {"id": "seed", "time": T0, "y": 0.5, "x": 0.1}
    stream.observe([rec])
    t = stream.table
    row = {k: v[0] for k, v in t.t.items()}
    ids = [f"series-{i:07d}" for i in range(n)]
    tables = {k: np.broadcast_to(v, (n, *v.shape)).copy() for k, v in row.items()}
    tables["born"] = np.arange(n, dtype=np.int64)
    tables["seen"] = np.ones(n, dtype=np.int64)
    state = torch.randn(t.L, n if t.carries else 0, t.H) * 0.1
    t.install(ids, state, tables)
    return stream


def _changes(stream: StreamingForecaster, k: int) -> pl.DataFrame:
    """One new observation for the first k series (the next hour of each)."""
    return pl.DataFrame({"id": stream.table.id_list[:k], "time": [T0 + dt.timedelta(hours=1)] * k,
                         "y": np.full(k, 0.7), "x": np.zeros(k)}).with_columns(pl.col("time").cast(pl.Datetime("us")))


def run(device: str = "cpu", quick: bool = False, sizes: list[int] | None = None, context: int = 72,
        hidden: int = 64) -> list[dict]:
    sizes = sizes or ([10_000, 100_000] if quick else [100_000, 1_000_000])
    _, dm, net = _setup(4, hidden, context, 24, "cpu")
    rows = []
    for n in sizes:
        stream = _filled(net, dm.spec, n)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.pt"
            base = stream.save_state(path)
            row = {"series": n, "bytes_per_series": stream.memory_per_series(), "base_s": round(base["seconds"], 2),
                   "base_MB": round(base["bytes"] / 1e6, 1)}
            for share in (0.01, 0.001):
                k = max(1, int(n * share))
                stream.observe(_changes(stream, k) if share == 0.01 else _changes(stream, k).with_columns(
                    pl.col("time") + dt.timedelta(hours=1)))
                delta = stream.save_state(path)
                assert delta["kind"] == "delta" and delta["series"] == k, delta
                row[f"delta_{share:.1%}_s"] = round(delta["seconds"], 3)
                row[f"delta_{share:.1%}_MB"] = round(delta["bytes"] / 1e6, 2)
            stream.close()
            gc.collect()
            other = StreamingForecaster(net, dm.spec, max_series=None)
            t0 = time.perf_counter()
            other.load_state(path)
            row["load_s"] = round(time.perf_counter() - t0, 2)
            assert len(other) == n
            from forecaster.snapshot import Compactor, read_log
            from forecaster.streaming.statefile import merge_payloads

            _, info = read_log(path)
            other.lock_state(path)
            t0 = time.perf_counter()
            c = Compactor(info, other._file.lock, merge_payloads)
            c.wait()
            c.finish(info)
            row["compaction_s"] = round(time.perf_counter() - t0, 2)
            other.close()
            del other
        del stream
        gc.collect()
        rows.append(row)
    return rows
