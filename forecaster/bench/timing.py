"""A small timer for benchmarks: warm-up, then the median and the spread of repeated runs."""

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
    """Time ``fn`` (synchronising CUDA around each call). Returns median, p25, p75 in milliseconds
    and the number of runs; keeps running past ``repeats`` until ``min_seconds`` have passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return _summary(times)


def measure_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], device: torch.device | str,
                 repeats: int = 10, warmup: int = 2, min_seconds: float = 0.0) -> tuple[dict, dict]:
    """Time two contenders alternately (a, b, a, b, ...) so that drift and background load hit
    both alike; the ratio of the medians is the comparison to report."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    sync(device)
    times: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    while len(times[0]) < repeats or time.perf_counter() - start < min_seconds:
        for fn, acc in ((fn_a, times[0]), (fn_b, times[1])):
            t0 = time.perf_counter()
            fn()
            sync(device)
            acc.append((time.perf_counter() - t0) * 1e3)
    return _summary(times[0]), _summary(times[1])


def _summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "p25_ms": q[0], "p75_ms": q[2], "runs": len(times)}


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
