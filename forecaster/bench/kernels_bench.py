"""FusedGRU against torch.nn.GRU on the same device in one run, and the step kernel against
nn.GRUCell with gather/scatter. Ratios > 1 mean ours is faster."""

from __future__ import annotations

import torch

from forecaster.bench.timing import measure_pair
from kernels import FusedGRU

# (B, T, I, H): the shapes of the issue; the quick set keeps a CPU run short
SHAPES = [(256, 168, 8, 128), (64, 720, 7, 256), (1024, 96, 16, 64), (32, 336, 1, 512)]
QUICK_SHAPES = [(64, 48, 8, 64), (16, 96, 1, 128)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sequence_case(B, T, I, H, device, dtype, backend, reset_after, repeats):
    ref = torch.nn.GRU(I, H, batch_first=True).to(device, dtype)
    ours = FusedGRU(I, H, batch_first=True, backend=backend, reset_after=reset_after).to(device, dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, device=device, dtype=dtype, requires_grad=True)

    def fwd(m):
        with torch.no_grad():
            m(x)

    def fwd_bwd(m):
        out, hn = m(x)
        (out.float().sum() + hn.float().sum()).backward()

    rows = []
    for mode, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        t_ours, t_ref = measure_pair(lambda: fn(ours), lambda: fn(ref), device, repeats)
        rows.append({
            "bench": "sequence", "mode": mode, "B": B, "T": T, "I": I, "H": H,
            "dtype": str(dtype).replace("torch.", ""), "formulation": "reset_after" if reset_after else "reset_before",
            "ours": ours.last_backend, "ours_ms": round(t_ours["median_ms"], 3),
            "ours_iqr_ms": round(t_ours["p75_ms"] - t_ours["p25_ms"], 3),
            "nn.GRU_ms": round(t_ref["median_ms"], 3),
            "nn.GRU_iqr_ms": round(t_ref["p75_ms"] - t_ref["p25_ms"], 3),
            "speedup": round(t_ref["median_ms"] / t_ours["median_ms"], 2),
        })
    return rows


def _step_case(N, M, I, H, device, dtype, backend, repeats):
    ours = FusedGRU(I, H, backend=backend).to(device, dtype)
    cell = torch.nn.GRUCell(I, H).to(device, dtype)
    with torch.no_grad():
        for a, b in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                     ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):
            getattr(cell, a).copy_(getattr(ours, b))
    state = torch.randn(1, N, H, device=device)
    table = state[0].to(dtype).clone()
    idx = torch.randperm(N, device=device)[:M]
    x = torch.randn(M, I, device=device, dtype=dtype)

    def ours_step():
        ours.step_(state, idx, x, assume_unique=True)

    @torch.no_grad()
    def cell_step():
        table.index_copy_(0, idx, cell(x, table.index_select(0, idx)))

    t_ours, t_ref = measure_pair(ours_step, cell_step, device, repeats, min_seconds=0.2)
    return [{
        "bench": "step", "N": N, "M": M, "I": I, "H": H, "dtype": str(dtype).replace("torch.", ""),
        "ours_us": round(t_ours["median_ms"] * 1e3, 1), "GRUCell+gather/scatter_us": round(t_ref["median_ms"] * 1e3, 1),
        "speedup": round(t_ref["median_ms"] / t_ours["median_ms"], 2),
    }]


def run(device: str = "cpu", dtype: str = "float32", quick: bool = False, repeats: int = 5,
        backend: str = "auto", reset_before: bool = True) -> list[dict]:
    """Rows for the sequence kernels (both formulations; nn.GRU only has reset-after, so the
    reset-before row compares the same shapes against nn.GRU's reset-after time) and the step."""
    dt = DTYPES[dtype]
    rows = []
    for B, T, I, H in QUICK_SHAPES if quick else SHAPES:
        rows += _sequence_case(B, T, I, H, device, dt, backend, True, repeats)
        if reset_before:
            rows += _sequence_case(B, T, I, H, device, dt, backend, False, repeats)
    n = 10_000 if quick else 100_000
    rows += _step_case(n, n, 8, 128, device, dt, backend, repeats)
    return rows
