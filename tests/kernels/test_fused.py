"""Kernels (Triton, and the torch loops with hand-written BPTT) against the plain reference:
outputs, final state and every gradient, with a loss touching both the sequence and the state.
On the CPU the Triton kernels run in Triton's interpreter (tests/conftest.py): there the split-H
body runs as one launch per step ("stepwise"), the batch path as one launch, and the persistent
body (grid barrier included) where each batch tile has one program."""

import math

import pytest
import torch

from kernels import gru_reference, gru_sequence, gru_step_
from kernels.gru import fused_recurrent, fused_step, plan as P
from tests.kernels.conftest import REL_RMS_TOL, gru_params, rel_rms, requires_triton

SHAPES = [  # (T, B, I, H): awkward on purpose
    (1, 2, 3, 8),       # T = 1
    (6, 3, 4, 17),      # odd H (two column programs), B below the 16-row tile
    (4, 19, 2, 100),    # B not a multiple of the tile, H = 100: 7 column programs, padded chunk
    (5, 1, 1, 16),      # B = 1, I = 1
]


def _impl(impl, path):
    marks = [requires_triton] if impl == "triton" else []
    return pytest.param(impl, path, marks=marks, id=impl if impl == "torch" else f"{impl}-{path}")


def impl_cases(H):
    """(impl, path) pairs that run at hidden size H: the batch path holds all of W_hh in one
    program and takes H <= 64 in float32."""
    cases = [_impl("triton", "stepwise"), _impl("torch", "auto")]
    if H <= P.BATCH_MAX_H:
        cases.insert(1, _impl("triton", "batch"))
    return cases


MASK_H0 = [(False, False), (False, True), (True, False), (True, True)]
# every (mask, h0) pair where the interpreter is quick; the two extremes at H = 100 (7 programs a step)
SEQ_CASES = [(*impl.values, *shape, m, h) for shape in SHAPES for impl in impl_cases(shape[3])
             for m, h in (MASK_H0 if shape[3] <= 64 or impl.values[0] == "torch" else MASK_H0[::3])]
SEQ_IDS = [f"{impl}-{path}-{(T, B, I, H)}-{'mask' if m else 'nomask'}-{'h0' if h else 'zero_h0'}"
           for impl, path, T, B, I, H, m, h in SEQ_CASES]


def run_with_grads(fn, x, h0, params, mask, reset_after, dout, dhn):
    out, hn = fn(x, h0, *params, mask=mask, reset_after=reset_after)
    loss = (out.float() * dout).sum() + (hn.float() * dhn).sum()
    inputs = [x] + ([h0] if h0 is not None else []) + [p for p in params if p is not None]
    return [out, hn, *torch.autograd.grad(loss, inputs)]


def make_case(T, B, I, H, use_mask, use_h0, dtype=torch.float32, device="cpu", bias=True):
    x = torch.randn(T, B, I, device=device).to(dtype).requires_grad_()
    h0 = torch.randn(B, H, device=device).to(dtype).requires_grad_() if use_h0 else None
    mask = (torch.rand(T, B, device=device) > 0.3) if use_mask else None
    dout, dhn = torch.randn(T, B, H, device=device), torch.randn(B, H, device=device)
    return x, h0, gru_params(I, H, dtype, device, bias), mask, dout, dhn


def upcast(t):
    return None if t is None else t.detach().float().requires_grad_()


NAMES = ["output", "h_n", "dx", "dh0", "dW_ih", "dW_hh", "db_ih", "db_hh"]


def assert_matches_reference(impl, T, B, I, H, reset_after, use_mask, use_h0, dtype=torch.float32,
                             device="cpu", bias=True, path="auto", info=None):
    x, h0, params, mask, dout, dhn = make_case(T, B, I, H, use_mask, use_h0, dtype, device, bias)
    fn = lambda *a, **k: gru_sequence(*a, **k, impl=impl, path=path, info=info)  # noqa: E731
    result = run_with_grads(fn, x, h0, params, mask, reset_after, dout, dhn)
    # the reference sees the same (rounded) values in float32
    expected = run_with_grads(gru_reference, upcast(x), upcast(h0), [upcast(p) for p in params],
                              mask, reset_after, dout, dhn)
    names = [n for n in NAMES if (n != "dh0" or use_h0) and (bias or not n.startswith("db"))]
    assert len(result) == len(expected) == len(names)
    for name, r, e in zip(names, result, expected):
        assert r.dtype == dtype, name
        assert r.shape == e.shape, name
        err = rel_rms(r, e)
        assert err < REL_RMS_TOL[dtype], f"{name}: relative RMS error {err:.2e} ({impl}, {path}, {dtype})"


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("impl,path,T,B,I,H,use_mask,use_h0", SEQ_CASES, ids=SEQ_IDS)
def test_sequence_matches_reference(impl, path, T, B, I, H, use_mask, use_h0, reset_after):
    info = {} if impl == "triton" else None
    assert_matches_reference(impl, T, B, I, H, reset_after, use_mask, use_h0, path=path, info=info)
    if info is not None:
        assert info["forward"] == info["backward"] == f"triton-{path}"


@requires_triton
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("H,resident", [(120, True), (40, False)],
                         ids=["eight_resident_chunks_last_partial", "reloaded_every_step"])
def test_split_path_reduction_chunks(monkeypatch, reset_after, H, resident):
    # the real blocks chunk the reduction by 64 (H = 512: eight chunks on chip; H > 512: W_hh
    # re-read every step); chunks of 16 reach the same code at a size the interpreter runs quickly
    def blocks(kernel, H_, dtype, block_b=16, dot_prec="tf32"):
        return P.Blocks(block_b=16, block_n=16, block_k=16, nchunk=math.ceil(H_ / 16), resident=resident,
                        one_block=False, num_warps=4)

    monkeypatch.setattr(P, "split_blocks", blocks)
    assert blocks("fwd", H, torch.float32).nchunk == (8 if resident else 3)
    assert_matches_reference("triton", 2, 3, 2, H, reset_after, True, True, path="stepwise")


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=requires_triton), "torch"])
def test_sequence_without_bias(impl):
    assert_matches_reference(impl, 3, 5, 2, 17, True, True, True, bias=False,
                             path="stepwise" if impl == "triton" else "auto")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("path", ["stepwise", "batch"])
@requires_triton
def test_half_precision_sequence(dtype, reset_after, path):
    assert_matches_reference("triton", 5, 4, 3, 24, reset_after, True, True, dtype=dtype, path=path)


# ---- the persistent body and its grid barrier, under the interpreter ---------------------------

def forced_plan(monkeypatch, B, H, n_groups, spin_limit=None):
    """Make every sequence launch take the persistent path with ``n_groups`` groups of programs.
    Under the interpreter this can only pass where a group is one program (H <= 16)."""
    calls = []

    def plan_for(kernel_name, kernel, B_, H_, dtype, path, device, args, reset_after, has_mask, dot_prec):
        blocks = P.split_blocks(kernel_name, H_, dtype)
        n_tiles = math.ceil(B_ / blocks.block_b)
        plan = P.SeqPlan(kernel_name, "persistent", H_, B_, dtype, blocks, math.ceil(H_ / blocks.block_n),
                         n_tiles, n_groups, tile_loop=n_groups < n_tiles)
        calls.append(plan)
        return plan

    monkeypatch.setattr(fused_recurrent, "_plan_for", plan_for)
    if spin_limit is not None:
        monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", str(spin_limit))
    return calls


@requires_triton
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("n_groups", [2, 3], ids=["groups_loop_over_tiles", "one_tile_per_group"])
def test_persistent_body_with_one_program_per_tile(monkeypatch, reset_after, n_groups):
    # H = 16: one column program per batch tile, so its barrier never waits. 40 rows are 3 tiles:
    # with 2 groups one group loops over two tiles (the counter keeps counting across tiles); with
    # 3 the loop over tiles is compiled away
    calls = forced_plan(monkeypatch, 40, 16, n_groups=n_groups)
    info = {}
    assert_matches_reference("triton", 4, 40, 3, 16, reset_after, True, True, info=info)
    assert info["forward"] == info["backward"] == "triton-persistent"
    assert [(c.kernel, c.n_col, c.n_tiles, c.n_groups, c.tile_loop) for c in calls] == \
        [("fwd", 1, 3, n_groups, n_groups < 3), ("bwd", 1, 3, n_groups, n_groups < 3)]


@requires_triton
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_barrier_timeout_raises_naming_the_fallback(monkeypatch, direction):
    # H = 17: two column programs per tile. The interpreter runs them one after the other, so the
    # first waits at its barrier for a program that has not started: after the spin limit it
    # poisons the counter, the launch finishes, and the host raises instead of hanging
    T, B, I, H = 3, 2, 2, 17
    x, h0, params, _, dout, dhn = make_case(T, B, I, H, False, True)
    if direction == "backward":
        out, hn = gru_sequence(x, h0, *params, impl="triton", path="stepwise")
        forced_plan(monkeypatch, B, H, n_groups=1, spin_limit=3)
        with pytest.raises(RuntimeError, match="path='stepwise'"):
            torch.autograd.grad((out * dout).sum() + (hn * dhn).sum(), [x])
    else:
        forced_plan(monkeypatch, B, H, n_groups=1, spin_limit=3)
        with pytest.raises(RuntimeError, match=r"grid barrier .* timed out after 3 polls.*path='stepwise'"):
            gru_sequence(x, h0, *params, impl="triton")


@requires_triton
def test_lazy_barrier_check_raises_on_request_or_at_the_next_launch(monkeypatch):
    # lazy (the default on a GPU): no host sync per launch; a time-out is reported by
    # check_barriers() or by the next persistent launch, once, and the count never goes back
    from kernels.gru import check_barriers

    T, B, I, H = 3, 2, 2, 17
    x, h0, params, _, dout, dhn = make_case(T, B, I, H, False, True)
    forced_plan(monkeypatch, B, H, n_groups=1, spin_limit=3)
    monkeypatch.setenv("KERNELS_GRU_BARRIER_CHECK", "lazy")
    watch = fused_recurrent.BarrierWatch.of(torch.device("cpu"))
    count = int(watch.count[0])
    gru_sequence(x, h0, *params, impl="triton")  # times out and says nothing yet
    assert int(watch.count[0]) > count
    with pytest.raises(RuntimeError, match=r"grid barrier wait\(s\) of a persistent launch timed out.*path='stepwise'"):
        check_barriers()
    check_barriers()  # reported once
    gru_sequence(x, h0, *params, impl="triton")
    with pytest.raises(RuntimeError, match="of a persistent launch before this call timed out"):
        gru_sequence(x, h0, *params, impl="triton")
    monkeypatch.setenv("KERNELS_GRU_BARRIER_CHECK", "never")
    with pytest.raises(ValueError, match="KERNELS_GRU_BARRIER_CHECK must be one of"):
        gru_sequence(x, h0, *params, impl="triton")


def test_spin_limit_setting(monkeypatch):
    monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "12")
    assert P.spin_limit() == 12
    monkeypatch.setenv("KERNELS_GRU_SPIN_LIMIT", "soon")
    with pytest.raises(ValueError, match="KERNELS_GRU_SPIN_LIMIT must be a non-negative integer"):
        P.spin_limit()


# ---- masked steps contribute nothing, even a NaN input (issue 16, item 10) ---------------------

MASK_CASES = [pytest.param("triton", "stepwise", marks=requires_triton, id="triton-stepwise"),
              pytest.param("triton", "batch", marks=requires_triton, id="triton-batch"),
              pytest.param("torch", "auto", id="torch")]


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("impl,path", MASK_CASES)
def test_nan_input_at_masked_step_leaves_every_gradient_finite(impl, path, reset_after):
    T, B, I, H = 4, 3, 2, 17
    x, h0, params, _, dout, dhn = make_case(T, B, I, H, False, True)
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[1, 0] = mask[2, 2] = mask[3, 1] = False
    poisoned = x.detach().clone()
    poisoned[~mask] = float("nan")
    poisoned[3, 1, 0] = float("inf")
    zeroed = torch.where(mask.unsqueeze(-1), x.detach(), 0.0)

    def grads(x_in):
        xs = x_in.clone().requires_grad_()
        h = h0.detach().clone().requires_grad_()
        ps = [p.detach().clone().requires_grad_() for p in params]
        fn = lambda *a, **k: gru_sequence(*a, **k, impl=impl, path=path)  # noqa: E731
        return run_with_grads(fn, xs, h, ps, mask, reset_after, dout, dhn)

    result, expected = grads(poisoned), grads(zeroed)
    for name, r, e in zip(NAMES, result, expected):
        assert torch.isfinite(r).all(), f"{name} is not finite ({impl}, {path})"
        torch.testing.assert_close(r, e, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("impl", ["torch"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_hand_written_backward_gradcheck_float64(impl, reset_after):
    T, B, I, H = 4, 3, 2, 5
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    w = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))]
    mask = torch.rand(T, B) > 0.3
    assert torch.autograd.gradcheck(
        lambda *a: gru_sequence(*a, mask=mask, reset_after=reset_after, impl=impl), (x, h0, *w)
    )


@pytest.mark.parametrize("impl,path", MASK_CASES)
def test_all_masked_sequence_keeps_state_and_zero_input_grads(impl, path):
    T, B, I, H = 3, 2, 2, 8
    x, h0, params, _, dout, dhn = make_case(T, B, I, H, False, True)
    mask = torch.zeros(T, B, dtype=torch.bool)
    out, hn = gru_sequence(x, h0, *params, mask=mask, impl=impl, path=path)
    torch.testing.assert_close(hn, h0.detach())
    torch.testing.assert_close(out, h0.detach().expand(T, B, H))
    dx, dh0, *dw = torch.autograd.grad((out * dout).sum() + (hn * dhn).sum(), [x, h0, *params])
    assert dx.abs().max() == 0
    assert all(d.abs().max() == 0 for d in dw)
    torch.testing.assert_close(dh0, dout.sum(0) + dhn)


# ---- the step kernel --------------------------------------------------------------------------

IMPLS = [pytest.param("triton", marks=requires_triton), "torch"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("H,I", [(16, 3), (17, 3), (100, 3), (17, 70)],
                         ids=["H16", "H17", "H100", "H17_I70_unfused_input"])
def test_step_matches_sequence_on_gathered_rows(impl, reset_after, H, I):
    N, M, T = 40, 19, 3
    params = [p.detach() for p in gru_params(I, H)]
    state = torch.randn(N, H)
    idx = torch.randperm(N)[:M]
    x = torch.randn(T, M, I)
    mask = torch.rand(T, M) > 0.3
    untouched = torch.ones(N, dtype=torch.bool)
    untouched[idx] = False
    before = state.clone()
    expected_out, expected_hn = gru_reference(x, state[idx].clone(), *params, mask=mask, reset_after=reset_after)
    info = {}
    for t in range(T):
        result = gru_step_(state, idx, x[t], *params, mask=mask[t], reset_after=reset_after, impl=impl, info=info)
        torch.testing.assert_close(result, expected_out[t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[idx], expected_hn, rtol=1e-5, atol=1e-5)
    assert torch.equal(state[untouched], before[untouched])
    if impl == "triton":
        # float32 with TF32 off: IEEE dots, so the streaming variant (resident needs tensor cores)
        assert info["step"] == ("triton-step-fused-input" if I <= P.STEP_FUSE_MAX_I else "triton-step")


def _step_args(M, I, H, reset_after, gi_input, dtype=torch.float32, N=None):
    from kernels.gru.common import folded_bias, input_projection

    params = [p.detach() for p in gru_params(I, H, dtype)]
    N = N or M + 7
    state = torch.randn(N, H)
    idx = torch.randperm(N)[:M]
    x = torch.randn(M, I).to(dtype)
    bias, b_hn = folded_bias(params[2], params[3], H, reset_after, torch.float32, x.device)
    gi = input_projection(x, params[0], params[2], params[3], reset_after)[0] if gi_input else None
    return params, state, idx, x, bias, b_hn, gi


@requires_triton
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("gi_input", [False, True], ids=["fused_input", "gi_input"])
@pytest.mark.parametrize("variant", ["resident_row_loop", "resident_one_tile_each", "streaming_bn16"])
def test_step_kernel_variants_match_torch(variant, gi_input, reset_after):
    # 70 rows are 3 resident tiles of 32: two programs loop over 2 and 1 of them, W_hh loaded once
    # each; H = 20 pads the column block to 32; streaming with BLOCK_N 16 takes two column blocks
    M, I, H = 70, 3, 20
    params, state, idx, x, bias, b_hn, gi = _step_args(M, I, H, reset_after, gi_input)
    mask = torch.rand(M) > 0.25
    expected_state = state.clone()
    expected = gru_step_(expected_state, idx, x, *params, mask=mask, reset_after=reset_after, impl="torch")
    base = P.plan_step(M, H, I, torch.float32, "tf32", "resident" if variant.startswith("resident") else "streaming")
    plan = {"resident_row_loop": P.replace(base, n_programs=2),
            "resident_one_tile_each": P.replace(base, n_programs=64),
            "streaming_bn16": P.replace(base, block_b=16, block_n=16)}[variant]
    assert plan.row_loop == (variant == "resident_row_loop") and plan.resident == variant.startswith("resident")
    result, ran = fused_step.fused_gru_step(state, idx, x, params[0], bias, gi, params[1], b_hn, mask,
                                                 reset_after, plan=plan)
    assert ran.ctas == {"resident_row_loop": 2, "resident_one_tile_each": 3, "streaming_bn16": 5}[variant]
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, expected_state, rtol=1e-5, atol=1e-5)


@requires_triton
def test_step_path_resident_in_half_precision_and_its_errors():
    M, I, H = 40, 3, 24
    params, state, idx, x, *_ = _step_args(M, I, H, True, False, dtype=torch.bfloat16)
    expected_state = state.clone()
    info = {}
    result = gru_step_(state, idx, x, *params, impl="triton", path="resident", info=info)
    expected = gru_step_(expected_state, idx, x, *params, impl="torch")
    assert info["step"] == "triton-step-resident-fused-input" and info["step_plan"].resident
    assert rel_rms(result, expected) < REL_RMS_TOL[torch.bfloat16]
    p32 = [p.detach() for p in gru_params(I, H)]
    with pytest.raises(ValueError, match="step path 'resident' keeps W_hh .* tensor-core dots"):
        gru_step_(torch.randn(M + 7, H), idx, x.float(), *p32, impl="triton", path="resident")  # IEEE (TF32 off)
    with pytest.raises(ValueError, match="step path must be one of"):
        gru_step_(torch.randn(M + 7, H), idx, x.float(), *p32, impl="triton", path="fast")
    with pytest.raises(ValueError, match="impl='torch' takes only path='auto'"):
        gru_step_(torch.randn(M + 7, H), idx, x.float(), *p32, impl="torch", path="streaming")


@requires_triton
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_step_bfloat16_matches_torch(reset_after):
    N, M, I, H = 30, 21, 5, 24
    params = [p.detach() for p in gru_params(I, H, torch.bfloat16)]
    state = torch.randn(N, H)
    expected_state = state.clone()
    idx = torch.randperm(N)[:M]
    x, mask = torch.randn(M, I).bfloat16(), torch.rand(M) > 0.2
    result = gru_step_(state, idx, x, *params, mask=mask, reset_after=reset_after, impl="triton")
    expected = gru_step_(expected_state, idx, x, *params, mask=mask, reset_after=reset_after, impl="torch")
    assert rel_rms(result, expected) < REL_RMS_TOL[torch.bfloat16]
    assert rel_rms(state, expected_state) < REL_RMS_TOL[torch.bfloat16]


@pytest.mark.parametrize("impl", IMPLS)
def test_step_rejects_repeated_and_out_of_range_index(impl):
    H, I = 8, 2
    params = [p.detach() for p in gru_params(I, H)]
    state = torch.randn(5, H)
    before = state.clone()
    with pytest.raises(ValueError, match="repeated rows"):
        gru_step_(state, torch.tensor([1, 3, 1]), torch.randn(3, I), *params, impl=impl)
    with pytest.raises(ValueError, match="outside"):
        gru_step_(state, torch.tensor([0, 5]), torch.randn(2, I), *params, impl=impl)
    assert torch.equal(state, before)


def test_step_rejects_bad_state_table():
    H, I = 8, 2
    params = [p.detach() for p in gru_params(I, H)]
    with pytest.raises(ValueError, match="float32"):
        gru_step_(torch.randn(5, H, dtype=torch.float64), torch.tensor([0]), torch.randn(1, I), *params, impl="torch")
    with pytest.raises(ValueError, match="not contiguous"):
        gru_step_(torch.randn(H, 5).T, torch.tensor([0]), torch.randn(1, I), *params, impl="torch")
    with pytest.raises(ValueError, match="one row index per input row"):
        gru_step_(torch.randn(5, H), torch.tensor([0, 1]), torch.randn(1, I), *params, impl="torch")


# ---- bad input --------------------------------------------------------------------------------

def test_sequence_errors():
    T, B, I, H = 3, 2, 4, 8
    x = torch.randn(T, B, I)
    params = [p.detach() for p in gru_params(I, H)]
    with pytest.raises(ValueError, match=r"input must be \(T, B, I\)"):
        gru_sequence(x[0], None, *params, impl="torch")
    with pytest.raises(ValueError, match="weight_ih must be"):
        gru_sequence(torch.randn(T, B, I + 1), None, *params, impl="torch")
    with pytest.raises(ValueError, match="initial state must be"):
        gru_sequence(x, torch.randn(B + 1, H), *params, impl="torch")
    with pytest.raises(ValueError, match="mask must be"):
        gru_sequence(x, None, *params, mask=torch.ones(T, B + 1), impl="torch")
    with pytest.raises(ValueError, match="but the input is torch.float32"):
        gru_sequence(x, None, params[0].double(), *params[1:], impl="torch")
    with pytest.raises(ValueError, match="not supported"):
        gru_sequence(x.int(), None, *params, impl="torch")
    with pytest.raises(ValueError, match="impl must be"):
        gru_sequence(x, None, *params, impl="cuda")
    with pytest.raises(ValueError, match="no time steps"):
        gru_sequence(x[:0], None, *params, impl="torch")
    with pytest.raises(ValueError, match="path must be one of"):
        gru_sequence(x, None, *params, impl="torch", path="fastest")
    with pytest.raises(ValueError, match="impl='torch' takes only path='auto'"):
        gru_sequence(x, None, *params, impl="torch", path="batch")


@requires_triton
def test_explicit_paths_that_cannot_run_raise():
    T, B, I = 2, 3, 2
    for H, path, match in [(100, "batch", r"fits up to H=64; H=100 needs path='persistent', 'stepwise'"),
                           (17, "persistent", r"needs a CUDA device.*use\s+path='stepwise'")]:
        x = torch.randn(T, B, I)
        params = [p.detach() for p in gru_params(I, H)]
        with pytest.raises(ValueError, match=match):
            gru_sequence(x, None, *params, impl="triton", path=path)


# GPU tests: tests/kernels/test_gpu.py
