"""Timers for benchmarks: warm-up, then the median and the spread of repeated runs, two contenders
timed alternately (a, b, a, b, ...) so that drift and background load hit both alike.

On CUDA the time of a run is measured with CUDA events around ``inner`` back-to-back calls (so
launch gaps the host leaves are counted, and tiny kernels are not drowned by one synchronisation
per call); on the CPU with ``time.perf_counter``.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], device: torch.device | str, repeats: int = 10, warmup: int = 2,
            min_seconds: float = 0.0) -> dict:
    """Time ``fn`` alone; see :func:`measure_pair`."""
    return measure_pair(fn, None, device, repeats, warmup, min_seconds)[0]


def measure_pair(fn_a: Callable[[], object], fn_b: Callable[[], object] | None, device: torch.device | str,
                 repeats: int = 10, warmup: int = 2, min_seconds: float = 0.0,
                 inner: int = 1) -> tuple[dict, dict | None]:
    """Time two contenders alternately; the ratio of the medians is the comparison to report.

    Args:
        fn_a, fn_b: the contenders (``fn_b`` may be None).
        device: where they run (CUDA: event timing).
        repeats: at least this many timed runs of each; more until ``min_seconds`` have passed.
        warmup: untimed runs of each first (compilation, allocator, cuDNN plans).
        inner: calls per timed run (CUDA: raise it for calls of a few microseconds).

    Returns:
        For each contender: median_ms, p25_ms, p75_ms (per call) and runs.
    """
    fns = [fn for fn in (fn_a, fn_b) if fn is not None]
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    cuda = torch.device(device).type == "cuda"
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < repeats or time.perf_counter() - start < min_seconds:
        for fn, acc in zip(fns, times):
            if cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(inner):
                    fn()
                e1.record()
                e1.synchronize()
                acc.append(e0.elapsed_time(e1) / inner)
            else:
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                acc.append((time.perf_counter() - t0) * 1e3 / inner)
    out = [_summary(t) for t in times]
    return out[0], (out[1] if fn_b is not None else None)


def _summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "p25_ms": q[0], "p75_ms": q[2], "runs": len(times)}


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
