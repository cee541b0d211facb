"""FusedGRU against torch.nn.GRU on the same device in one run, and the step kernel against
nn.GRUCell with index_select/index_copy_. Ratios > 1 mean ours is faster.

float32 runs with TF32 allowed on both sides (cuDNN uses it under nn.GRU by default; our kernels
follow ``torch.backends.cuda.matmul.allow_tf32``, switched on here for the comparison). nn.GRU has
only the reset-after formulation, so reset-before rows compare against nn.GRU's reset-after time.
"""

from __future__ import annotations

import contextlib

import torch

from kernels import FusedGRU
from kernels.bench.timing import measure_pair

#: (B, T, I, H): the shapes of issue 17; the quick set keeps a CPU run short
SHAPES = [(256, 168, 8, 128), (64, 720, 7, 256), (1024, 96, 16, 64), (32, 336, 1, 512)]
QUICK_SHAPES = [(64, 48, 8, 64), (16, 96, 1, 128)]
#: (N, M, I, H): a table of N series, M of them stepped per call
STEP = (100_000, 100_000, 8, 128)
QUICK_STEP = (10_000, 10_000, 8, 128)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("forward", "forward+backward")


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for float32 matmuls on both sides (cuDNN's RNN and our kernels' dots)."""
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def sequence_rows(B: int, T: int, I: int, H: int, device: str, dtype: torch.dtype, reset_after: bool,
                  backend: str = "auto", path: str = "auto", repeats: int = 5,
                  modes=MODES) -> list[dict]:
    """Rows for one shape: ours vs nn.GRU, forward (no grad) and forward+backward (random output
    gradients into the sequence and the final state), timed alternately."""
    g = torch.Generator(device="cpu").manual_seed(0)
    ref = torch.nn.GRU(I, H, batch_first=True).to(device, dtype)
    ours = FusedGRU(I, H, batch_first=True, backend=backend, reset_after=reset_after, path=path).to(device, dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, generator=g).to(device, dtype).requires_grad_()
    dout = torch.randn(B, T, H, generator=g).to(device, dtype)
    dhn = torch.randn(1, B, H, generator=g).to(device, dtype)

    def fwd(m):
        with torch.no_grad():
            return m(x)

    def fwd_bwd(m):
        out, hn = m(x)
        torch.autograd.backward([out, hn], [dout, dhn])

    check = ""
    if reset_after:
        with torch.no_grad():
            check = f"{_rel(ours(x)[0], ref(x)[0]):.1e}"
    rows = []
    for mode in modes:
        fn = fwd if mode == "forward" else fwd_bwd
        t_ours, t_ref = measure_pair(lambda: fn(ours), lambda: fn(ref), device, repeats)
        paths = ours.last_paths or {}
        ran = ours.last_backend if mode == "forward" or not paths else f"{paths['forward']} / {paths['backward']}"
        rows.append({
            "bench": "sequence", "mode": mode, "B": B, "T": T, "I": I, "H": H,
            "dtype": str(dtype).replace("torch.", ""), "formulation": "reset_after" if reset_after else "reset_before",
            "ours": ran, "ours_ms": round(t_ours["median_ms"], 3),
            "ours_iqr_ms": round(t_ours["p75_ms"] - t_ours["p25_ms"], 3),
            "nn.GRU_ms": round(t_ref["median_ms"], 3),
            "nn.GRU_iqr_ms": round(t_ref["p75_ms"] - t_ref["p25_ms"], 3),
            "speedup": round(t_ref["median_ms"] / t_ours["median_ms"], 2),
            "runs": t_ours["runs"], "rel_err_vs_nn.GRU": check,
        })
    return rows


def step_rows(N: int, M: int, I: int, H: int, device: str, dtype: torch.dtype, backend: str = "auto",
              repeats: int = 5, step_path: str = "auto") -> list[dict]:
    """ours.step_ on a (1, N, H) float32 table vs nn.GRUCell between index_select and index_copy_;
    ``step_path`` forces a Triton step variant ("resident", "streaming") for comparison."""
    g = torch.Generator(device="cpu").manual_seed(0)
    ours = FusedGRU(I, H, backend=backend).to(device, dtype)
    cell = torch.nn.GRUCell(I, H).to(device, dtype)
    with torch.no_grad():
        for a, b in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                     ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):
            getattr(cell, a).copy_(getattr(ours, b))
    state = torch.randn(1, N, H, generator=g).to(device)
    table = state[0].to(dtype).clone()
    idx = torch.randperm(N, generator=g)[:M].to(device)
    x = torch.randn(M, I, generator=g).to(device, dtype)

    def ours_step():
        ours.step_(state, idx, x, assume_unique=True, step_path=step_path)

    @torch.no_grad()
    def cell_step():
        table.index_copy_(0, idx, cell(x, table.index_select(0, idx)))

    inner = 20 if torch.device(device).type == "cuda" else 1
    t_ours, t_ref = measure_pair(ours_step, cell_step, device, repeats, min_seconds=0.2, inner=inner)
    check = ""
    if torch.device(device).type == "cuda" or backend != "auto":
        h = state[0].clone()  # one starting state for both
        with torch.no_grad():
            got = ours.step_(h.unsqueeze(0).clone(), idx, x, assume_unique=True, step_path=step_path)
            want = cell(x, h.to(dtype).index_select(0, idx)).float()
        check = f"{_rel(got, want):.1e}"
    return [{
        "bench": "step", "N": N, "M": M, "I": I, "H": H, "dtype": str(dtype).replace("torch.", ""),
        "step_path": step_path, "ours": ours.last_step, "rel_err_vs_GRUCell": check,
        "ours_us": round(t_ours["median_ms"] * 1e3, 1), "ours_iqr_us": round((t_ours["p75_ms"] - t_ours["p25_ms"]) * 1e3, 1),
        "GRUCell+gather/scatter_us": round(t_ref["median_ms"] * 1e3, 1),
        "GRUCell_iqr_us": round((t_ref["p75_ms"] - t_ref["p25_ms"]) * 1e3, 1),
        "speedup": round(t_ref["median_ms"] / t_ours["median_ms"], 2), "runs": t_ours["runs"],
    }]


def run(device: str = "cpu", dtypes=("float32", "bfloat16"), quick: bool = False, repeats: int = 5,
        backend: str = "auto", path: str = "auto", formulations=(True, False), shapes=None,
        modes=MODES, step: bool = True, sequence: bool = True, progress=None) -> list[dict]:
    """All rows: every shape x dtype x formulation x mode, then the step per dtype.

    Args:
        device: "cuda" or "cpu". dtypes: keys of :data:`DTYPES` (float32 runs with TF32 on).
        quick: small shapes for a look on a CPU. repeats: timed runs per contender (at least).
        backend, path: FusedGRU's. formulations: reset_after values. shapes: (B, T, I, H) list
        (default: :data:`SHAPES`, or :data:`QUICK_SHAPES` with ``quick``). modes: of :data:`MODES`.
        step, sequence: which benches to run. progress: optional callable(str) told each case.
    """
    rows = []
    for label in dtypes:
        dt = DTYPES[label]
        with tf32(dt == torch.float32):
            if sequence:
                for B, T, I, H in shapes or (QUICK_SHAPES if quick else SHAPES):
                    for ra in formulations:
                        if progress:
                            progress(f"sequence {(B, T, I, H)} {label} {'RA' if ra else 'RB'}")
                        rows += sequence_rows(B, T, I, H, device, dt, ra, backend, path, repeats, modes)
            if step:
                if progress:
                    progress(f"step {label}")
                rows += step_rows(*(QUICK_STEP if quick else STEP), device, dt, backend, repeats)
    return rows
