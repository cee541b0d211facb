"""Kernels section of ``python -m forecaster bench``: a thin wrapper over ``kernels.bench.speed``
(the kernel benchmark lives with the kernels: ``python -m kernels.bench``). Rows compare FusedGRU
with torch.nn.GRU and the step kernel with nn.GRUCell + gather/scatter; ratios > 1: ours faster."""

from __future__ import annotations

from kernels.bench import speed


def run(device: str = "cpu", dtype: str = "float32", quick: bool = False, repeats: int = 5,
        backend: str = "auto", reset_before: bool = True) -> list[dict]:
    """Rows for the sequence kernels at the issue-17 shapes (both formulations unless
    ``reset_before`` is False) and the step, in ``dtype`` (float32 runs with TF32 on both sides)."""
    return speed.run(device=device, dtypes=(dtype,), quick=quick, repeats=repeats, backend=backend,
                     formulations=(True, False) if reset_before else (True,))
