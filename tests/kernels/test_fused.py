"""Kernels (Triton, and the torch loops with hand-written BPTT) against the plain reference:
outputs, final state and every gradient, with a loss touching both the sequence and the state.
On the CPU the Triton kernels run in Triton's interpreter (tests/conftest.py)."""

import pytest
import torch

from kernels import gru_reference, gru_sequence, gru_step_
from tests.kernels.conftest import REL_RMS_TOL, gru_params, rel_rms, requires_triton

IMPLS = [pytest.param("triton", marks=requires_triton), "torch"]
SHAPES = [  # (T, B, I, H): awkward on purpose
    (1, 2, 3, 8),       # T = 1
    (6, 3, 4, 17),      # odd H, B below the 16-row tile
    (4, 19, 2, 100),    # B not a multiple of the tile, H = 100 spans two column tiles
    (5, 1, 1, 16),      # B = 1, I = 1
]


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
                             device="cpu", bias=True):
    x, h0, params, mask, dout, dhn = make_case(T, B, I, H, use_mask, use_h0, dtype, device, bias)
    fn = lambda *a, **k: gru_sequence(*a, **k, impl=impl)  # noqa: E731
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
        assert err < REL_RMS_TOL[dtype], f"{name}: relative RMS error {err:.2e} ({impl}, {dtype})"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("use_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("T,B,I,H", SHAPES, ids=lambda s: str(s))
def test_sequence_matches_reference(impl, reset_after, use_mask, use_h0, T, B, I, H):
    assert_matches_reference(impl, T, B, I, H, reset_after, use_mask, use_h0)


@pytest.mark.parametrize("impl", IMPLS)
def test_sequence_without_bias(impl):
    assert_matches_reference(impl, 3, 5, 2, 17, True, True, True, bias=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@requires_triton
def test_half_precision_sequence(dtype, reset_after):
    assert_matches_reference("triton", 5, 4, 3, 24, reset_after, True, True, dtype=dtype)


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


@pytest.mark.parametrize("impl", IMPLS)
def test_all_masked_sequence_keeps_state_and_zero_input_grads(impl):
    T, B, I, H = 3, 2, 2, 8
    x, h0, params, _, dout, dhn = make_case(T, B, I, H, False, True)
    mask = torch.zeros(T, B, dtype=torch.bool)
    out, hn = gru_sequence(x, h0, *params, mask=mask, impl=impl)
    torch.testing.assert_close(hn, h0.detach())
    torch.testing.assert_close(out, h0.detach().expand(T, B, H))
    dx, dh0 = torch.autograd.grad((out * dout).sum() + (hn * dhn).sum(), [x, h0])
    assert dx.abs().max() == 0
    torch.testing.assert_close(dh0, dout.sum(0) + dhn)


# ---- the step kernel --------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("H", [16, 17, 100])
def test_step_matches_sequence_on_gathered_rows(impl, reset_after, H):
    N, M, I, T = 40, 19, 3, 3
    params = [p.detach() for p in gru_params(I, H)]
    state = torch.randn(N, H)
    idx = torch.randperm(N)[:M]
    x = torch.randn(T, M, I)
    mask = torch.rand(T, M) > 0.3
    untouched = torch.ones(N, dtype=torch.bool)
    untouched[idx] = False
    before = state.clone()
    expected_out, expected_hn = gru_reference(x, state[idx].clone(), *params, mask=mask, reset_after=reset_after)
    for t in range(T):
        result = gru_step_(state, idx, x[t], *params, mask=mask[t], reset_after=reset_after, impl=impl)
        torch.testing.assert_close(result, expected_out[t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[idx], expected_hn, rtol=1e-5, atol=1e-5)
    assert torch.equal(state[untouched], before[untouched])


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


# ---- real GPU ---------------------------------------------------------------------------------

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@gpu
@needs_cuda
@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("T,B,I,H", [(1, 2, 3, 8), (7, 19, 4, 100), (16, 64, 8, 128), (8, 33, 7, 256), (4, 16, 1, 512)],
                         ids=lambda s: str(s))
def test_gpu_sequence_matches_reference(dtype, reset_after, use_mask, T, B, I, H):
    assert_matches_reference("triton", T, B, I, H, reset_after, use_mask, True, dtype=dtype, device="cuda")


@gpu
@needs_cuda
@requires_triton
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
