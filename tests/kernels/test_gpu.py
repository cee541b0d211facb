"""On a real GPU (``pytest -m gpu``; skipped without one): every path against the reference with
every gradient, at the bench shapes with few steps; the persistent kernel's grid barrier, its tile
loop and its time-out; co-residency; and the registers/spills of the loaded kernels. The one
command that runs these with the benchmarks is ``scripts/gpu_check.sh``."""

import math

import pytest
import torch

from kernels import check_barriers, gru_step_
from kernels.gru import fused_recurrent, plan as P
from tests.kernels.conftest import REL_RMS_TOL, gru_params, rel_rms, requires_triton
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
            paths += ["batch"] if H <= P.BATCH_MAX_H else []
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
def test_gpu_barrier_timeout_is_reported_lazily_and_on_request(monkeypatch, direction):
    # a spin limit of 0: the first program to reach a barrier gives up at once. Lazy (default):
    # the launch returns without a host sync; check_barriers() reports it, once
    T, B, I, H = 4, 64, 3, 128
    params = gru_params(I, H, device="cuda")
    x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    check_barriers()
    if direction == "backward":
        out, hn = fused_sequence(x, params, "persistent")
        monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "0")
        (out.sum() + hn.sum()).backward()
    else:
        monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "0")
        fused_sequence(x, params, "persistent")
    with pytest.raises(RuntimeError, match="grid barrier wait.* timed out.*path='stepwise'"):
        check_barriers()
    check_barriers()  # reported once
    monkeypatch.delenv("KERNELS_GRU_SPIN_LIMIT")
    out, hn = fused_sequence(x, params, "persistent")  # and the next call is fine
    check_barriers()
    assert torch.isfinite(out).all()


def test_gpu_barrier_timeout_reaches_the_next_launch_without_a_sync(monkeypatch):
    T, B, I, H = 4, 64, 3, 128
    params = gru_params(I, H, device="cuda")
    x = torch.randn(T, B, I, device="cuda")
    check_barriers()
    monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "0")
    with torch.no_grad():
        fused_sequence(x, params, "persistent")
    monkeypatch.delenv("KERNELS_GRU_SPIN_LIMIT")
    torch.cuda.synchronize()  # the queued copy of the count has landed
    with pytest.raises(RuntimeError, match="of a persistent launch before this call timed out"):
        with torch.no_grad():
            fused_sequence(x, params, "persistent")
    check_barriers()


def test_gpu_barrier_check_sync_mode_raises_in_the_call(monkeypatch):
    T, B, I, H = 4, 64, 3, 128
    params = gru_params(I, H, device="cuda")
    x = torch.randn(T, B, I, device="cuda")
    check_barriers()
    monkeypatch.setenv("KERNELS_GRU_BARRIER_CHECK", "sync")
    monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "0")
    with pytest.raises(RuntimeError, match="of this call timed out after 0 polls"):
        with torch.no_grad():
            fused_sequence(x, params, "persistent")


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gpu_persistent_forward_in_a_cuda_graph(reset_after):
    # no host sync in the launcher: the persistent forward can be captured and replayed
    T, B, I, H = 6, 64, 3, 128
    params = [p.detach() for p in gru_params(I, H, device="cuda")]
    x = torch.randn(T, B, I, device="cuda")
    from kernels import gru_sequence

    def fwd():
        return gru_sequence(x, None, *params, reset_after=reset_after, impl="triton", path="persistent")

    with torch.no_grad():
        expected, _ = fwd()  # compiles, and allocates the barrier's status count, outside capture
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fwd()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = fwd()
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        check_barriers()
        expected, _ = fwd()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def fused_sequence(x, params, path):
    from kernels import gru_sequence

    return gru_sequence(x, None, *params, impl="triton", path=path)


@pytest.mark.parametrize("tf32", [True, False], ids=["float32_tf32", "float32_ieee"])
def test_gpu_loaded_kernels_do_not_spill(tf32):
    # every sequence variant the bench shapes launch (persistent and stepwise), in bfloat16 and in
    # float32 with the TF32 switch on and off (IEEE dots: torch's default, other blocks), and the
    # step at 100,000 x 128; as loaded on this GPU (its ptxas, not the report's), held to
    # plan.SPILL_BUDGET of this arch (none on sm_90)
    major, minor = torch.cuda.get_device_capability()
    budget = P.SPILL_BUDGET.get(10 * major + minor, P.SPILL_BUDGET[90])
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    loaded = []
    try:
        for dtype in (torch.float32, torch.bfloat16):
            label = "bfloat16" if dtype == torch.bfloat16 else ("float32" if tf32 else "float32-ieee")
            fused_recurrent.LOADED.clear()
            for B, T, I, H in BENCH_LIKE:
                for reset_after in (True, False):
                    for path in ("persistent", "stepwise"):
                        params = gru_params(I, H, dtype, "cuda")
                        x = torch.randn(2, B, I, device="cuda", dtype=dtype, requires_grad=True)
                        out, hn = fused_sequence_ra(x, params, path, reset_after)
                        (out.float().sum() + hn.float().sum()).backward()
            for reset_after in (True, False):
                N, I_s, H_s = 100_000, 8, 128
                p = [q.detach() for q in gru_params(I_s, H_s, dtype, "cuda")]
                gru_step_(torch.randn(N, H_s, device="cuda"), torch.randperm(N, device="cuda"),
                          torch.randn(N, I_s, device="cuda", dtype=dtype), *p, reset_after=reset_after,
                          impl="triton", assume_unique=True)
            torch.cuda.synchronize()
            loaded += [{**r, "label": label} for r in fused_recurrent.LOADED.values()]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    assert loaded and all("n_spills" in r for r in loaded), loaded[:3]
    assert any(r["kernel"] == "_gru_step_kernel" for r in loaded)
    over = [r for r in loaded if r["n_spills"] > budget[r["label"]]]
    assert not over, over


def fused_sequence_ra(x, params, path, reset_after):
    from kernels import gru_sequence

    return gru_sequence(x, None, *params, reset_after=reset_after, impl="triton", path=path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("H", [17, 128, 512])
def test_gpu_step_matches_torch(reset_after, H, dtype):
    # H=512 in float32: the first plan asked for 238,592 B of shared memory, more than a block may
    # have; the launcher checks each variant before launching it
    N, M, I = 5000, 1000, 8
    params = [p.detach() for p in gru_params(I, H, dtype, device="cuda")]
    state = torch.randn(N, H, device="cuda")
    expected_state = state.clone()
    idx = torch.randperm(N, device="cuda")[:M]
    x, mask = torch.randn(M, I, device="cuda").to(dtype), torch.rand(M, device="cuda") > 0.2
    result = gru_step_(state, idx, x, *params, mask=mask, reset_after=reset_after, impl="triton")
    expected = gru_step_(expected_state, idx, x, *params, mask=mask, reset_after=reset_after, impl="torch")
    if dtype == torch.float32:
        torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(state, expected_state, rtol=1e-4, atol=1e-4)
    else:
        assert rel_rms(result, expected) < REL_RMS_TOL[dtype]
        assert rel_rms(state, expected_state) < REL_RMS_TOL[dtype]


# resident only where W_hh fits on chip with tensor-core dots: bfloat16 at H=128 (float32's 192 KB
# does not; IEEE float32 dots keep both operands in registers)
STEP_VARIANTS = [(torch.float32, False, p) for p in ("auto", "streaming")] + \
    [(torch.float32, True, p) for p in ("auto", "streaming")] + \
    [(torch.bfloat16, False, p) for p in ("auto", "resident", "streaming")]


@pytest.mark.parametrize("dtype,tf32,step_path", STEP_VARIANTS,
                         ids=[f"{str(d)[6:]}{'_tf32' if t else ''}-{p}" for d, t, p in STEP_VARIANTS])
def test_gpu_step_many_rows_variants(dtype, tf32, step_path):
    N, I, H = 100_000, 8, 128
    prec = "tf32" if tf32 else "ieee"
    params = [p.detach() for p in gru_params(I, H, dtype, device="cuda")]
    state = torch.randn(N, H, device="cuda")
    expected_state = state.clone()
    idx = torch.randperm(N, device="cuda")
    x = torch.randn(N, I, device="cuda").to(dtype)
    info = {}
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        result = gru_step_(state, idx, x, *params, impl="triton", assume_unique=True, info=info, path=step_path)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    expected = gru_step_(expected_state, idx, x, *params, impl="torch", assume_unique=True)
    tol = 1e-4 if not tf32 and dtype == torch.float32 else None
    if tol:
        torch.testing.assert_close(result, expected, rtol=tol, atol=tol)
    else:
        assert rel_rms(result, expected) < (2e-3 if dtype == torch.float32 else REL_RMS_TOL[dtype])
    plan = info["step_plan"]
    dm = P.device_model(torch.device("cuda"))
    first = P.step_candidates(N, H, I, dtype, prec, step_path, dm)[0]
    assert plan.resident == first.resident and plan.block_b == first.block_b
    if plan.resident:
        assert plan.ctas >= dm.n_sm and plan.ctas % dm.n_sm == 0 and plan.row_loop
        streaming = P.step_candidates(N, H, I, dtype, prec, "streaming", dm)[0]
        assert plan.weight_bytes_per_call() * 4 < streaming.weight_bytes_per_call()
    else:
        assert plan.ctas == math.ceil(N / plan.block_b)
