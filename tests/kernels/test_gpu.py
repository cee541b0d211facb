"""On a real GPU (``pytest -m gpu``; skipped without one): every path against the reference with
every gradient, at the bench shapes with few steps; the persistent kernel's grid barrier, its tile
loop and its time-out; co-residency; and the registers/spills of the loaded kernels. The one
command that runs these with the benchmarks is ``scripts/gpu_check.sh``."""

import math

import pytest
import torch

from kernels import gru_step_
from kernels.gru import fused_recurrent, plan as P
from tests.kernels.conftest import gru_params, requires_triton
from tests.kernels.test_fused import assert_matches_reference

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
pytestmark = [pytest.mark.gpu, needs_cuda, requires_triton]

BENCH_LIKE = [(256, 6, 8, 128), (64, 5, 7, 256), (1024, 4, 16, 64), (32, 5, 1, 512)]  # (B, T, I, H)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("T,B,I,H", [(1, 2, 3, 8), (7, 19, 4, 100), (16, 64, 8, 128), (8, 33, 7, 256), (4, 16, 1, 512)],
                         ids=lambda s: str(s))
def test_gpu_sequence_matches_reference(dtype, reset_after, use_mask, T, B, I, H):
    assert_matches_reference("triton", T, B, I, H, reset_after, use_mask, True, dtype=dtype, device="cuda")


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gpu_float16_sequence_matches_reference(reset_after):
    assert_matches_reference("triton", 16, 64, 8, 128, reset_after, True, True, dtype=torch.float16, device="cuda")


def _path_cases():
    for B, T, I, H in BENCH_LIKE:
        for dtype in (torch.float32, torch.bfloat16):
            paths = ["persistent"] + (["stepwise"] if dtype == torch.float32 else [])
            paths += ["batch"] if H <= P.batch_max_h(dtype) else []
            for path in paths:
                yield pytest.param(path, B, T, I, H, dtype, id=f"{path}-{(B, T, I, H)}-{str(dtype)[6:]}")


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("path,B,T,I,H,dtype", list(_path_cases()))
def test_gpu_paths_match_reference(path, B, T, I, H, dtype, reset_after):
    info = {}
    assert_matches_reference("triton", T, B, I, H, reset_after, True, True, dtype=dtype, device="cuda",
                             path=path, info=info)
    # persistent: had the programs not all been co-resident, a barrier would have timed out
    assert info["forward"] == info["backward"] == f"triton-{path}"


def test_gpu_auto_fills_the_gpu_or_runs_persistent():
    dm = P.device_model(torch.device("cuda"))
    for B, T, I, H in BENCH_LIKE:
        for dtype in (torch.float32, torch.bfloat16):
            info = {}
            assert_matches_reference("triton", 2, B, I, H, True, False, True, dtype=dtype, device="cuda", info=info)
            for direction in ("forward_plan", "backward_plan"):
                plan = info[direction]
                assert plan.persistent or plan.ctas >= dm.n_sm, (B, H, dtype, direction, plan)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gpu_persistent_groups_loop_over_tiles(monkeypatch, reset_after):
    # pretend one CTA per SM: 8192 rows at H=128 are 128 tiles of 64 rows for 16 groups of 8
    def plan_for(*args):
        kernel_name, _kernel, B, H, dtype, path, device = args[:7]
        return P.plan_sequence(kernel_name, B, H, dtype, "persistent", dm=P.device_model(device),
                               occupancy_of=lambda blocks, tile_loop: 1)

    monkeypatch.setattr(fused_recurrent, "_plan_for", plan_for)
    info = {}
    assert_matches_reference("triton", 3, 8192, 4, 128, reset_after, True, True, device="cuda", info=info)
    plan = info["forward_plan"]
    assert plan.tile_loop and plan.n_groups < plan.n_tiles


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_gpu_barrier_timeout_raises_naming_the_fallback(monkeypatch, direction):
    # a spin limit of 0: the first program to reach a barrier gives up at once
    T, B, I, H = 4, 64, 3, 128
    params = gru_params(I, H, device="cuda")
    x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    if direction == "backward":
        out, hn = fused_sequence(x, params, "persistent")
        monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "0")
        with pytest.raises(RuntimeError, match="path='stepwise'"):
            (out.sum() + hn.sum()).backward()
    else:
        monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "0")
        with pytest.raises(RuntimeError, match="grid barrier .* timed out after 0 polls"):
            fused_sequence(x, params, "persistent")
    monkeypatch.delenv("KERNELS_GRU_SPIN_LIMIT")
    out, hn = fused_sequence(x, params, "persistent")  # and the next call is fine
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()


def fused_sequence(x, params, path):
    from kernels import gru_sequence

    return gru_sequence(x, None, *params, impl="triton", path=path)


def test_gpu_loaded_kernels_do_not_spill():
    # every variant the bench shapes launch, as loaded on this GPU (its ptxas, not the report's)
    fused_recurrent.LOADED.clear()
    for B, T, I, H in BENCH_LIKE:
        for dtype in (torch.float32, torch.bfloat16):
            for reset_after in (True, False):
                for path in ("persistent", "stepwise"):
                    params = gru_params(I, H, dtype, "cuda")
                    x = torch.randn(2, B, I, device="cuda", dtype=dtype, requires_grad=True)
                    out, hn = fused_sequence_ra(x, params, path, reset_after)
                    (out.float().sum() + hn.float().sum()).backward()
    torch.cuda.synchronize()
    loaded = list(fused_recurrent.LOADED.values())
    assert loaded and all("n_spills" in r for r in loaded), loaded[:3]
    spilling = [r for r in loaded if r["n_spills"]]
    assert not spilling, spilling


def fused_sequence_ra(x, params, path, reset_after):
    from kernels import gru_sequence

    return gru_sequence(x, None, *params, reset_after=reset_after, impl="triton", path=path)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("H", [17, 128, 512])
def test_gpu_step_matches_torch(reset_after, H):
    N, M, I = 5000, 1000, 8
    params = [p.detach() for p in gru_params(I, H, device="cuda")]
    state = torch.randn(N, H, device="cuda")
    expected_state = state.clone()
    idx = torch.randperm(N, device="cuda")[:M]
    x, mask = torch.randn(M, I, device="cuda"), torch.rand(M, device="cuda") > 0.2
    result = gru_step_(state, idx, x, *params, mask=mask, reset_after=reset_after, impl="triton")
    expected = gru_step_(expected_state, idx, x, *params, mask=mask, reset_after=reset_after, impl="torch")
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state, expected_state, rtol=1e-4, atol=1e-4)


def test_gpu_step_many_rows_uses_big_tiles():
    N, I, H = 100_000, 8, 128
    params = [p.detach() for p in gru_params(I, H, device="cuda")]
    state = torch.randn(N, H, device="cuda")
    expected_state = state.clone()
    idx = torch.randperm(N, device="cuda")
    x = torch.randn(N, I, device="cuda")
    info = {}
    result = gru_step_(state, idx, x, *params, impl="triton", assume_unique=True, info=info)
    expected = gru_step_(expected_state, idx, x, *params, impl="torch", assume_unique=True)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
    assert info["step"] == "triton-step-fused-input" and info["step_plan"].block_b == 64
    assert math.isclose(info["step_plan"].ctas, N / 64, rel_tol=0.01)
