"""The plain reference is the yardstick: check it against torch.nn.GRU and by gradcheck."""

import pytest
import torch

from kernels import gru_cell_reference, gru_reference


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (6, 3, 4, 5), (9, 2, 7, 17)], ids=str)
def test_reference_matches_nn_gru(T, B, I, H):
    gru = torch.nn.GRU(I, H).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(1, B, H, dtype=torch.float64)
    expected_out, expected_hn = gru(x, h0)
    result_out, result_hn = gru_reference(
        x, h0[0], gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0, reset_after=True
    )
    torch.testing.assert_close(result_out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result_hn, expected_hn[0], rtol=1e-12, atol=1e-12)


def test_reference_cell_matches_nn_gru_cell():
    cell = torch.nn.GRUCell(3, 6).double()
    x, h = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    result = gru_cell_reference(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    torch.testing.assert_close(result, cell(x, h), rtol=1e-12, atol=1e-12)


def test_reset_before_differs_from_reset_after():
    # the two formulations must not silently coincide (a test that could not fail otherwise)
    H = 4
    w = [torch.randn(3 * H, 2, dtype=torch.float64), torch.randn(3 * H, H, dtype=torch.float64),
         torch.randn(3 * H, dtype=torch.float64), torch.randn(3 * H, dtype=torch.float64)]
    x, h = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, H, dtype=torch.float64)
    a = gru_cell_reference(x, h, *w, reset_after=True)
    b = gru_cell_reference(x, h, *w, reset_after=False)
    assert (a - b).abs().max() > 1e-3


def test_reset_before_formula_by_hand():
    H, I = 3, 2
    w_ih, w_hh = torch.randn(3 * H, I, dtype=torch.float64), torch.randn(3 * H, H, dtype=torch.float64)
    b_ih, b_hh = torch.randn(3 * H, dtype=torch.float64), torch.randn(3 * H, dtype=torch.float64)
    x, h = torch.randn(1, I, dtype=torch.float64), torch.randn(1, H, dtype=torch.float64)
    r = torch.sigmoid(x @ w_ih[:H].T + b_ih[:H] + h @ w_hh[:H].T + b_hh[:H])
    z = torch.sigmoid(x @ w_ih[H:2 * H].T + b_ih[H:2 * H] + h @ w_hh[H:2 * H].T + b_hh[H:2 * H])
    n = torch.tanh(x @ w_ih[2 * H:].T + b_ih[2 * H:] + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:])
    expected = (1 - z) * n + z * h
    result = gru_cell_reference(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=False)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


def test_mask_carries_state():
    T, B, I, H = 5, 3, 2, 4
    w = [torch.randn(3 * H, I), torch.randn(3 * H, H), torch.randn(3 * H), torch.randn(3 * H)]
    x, h0 = torch.randn(T, B, I), torch.randn(B, H)
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[2, 1] = False
    mask[:, 2] = False
    out, hn = gru_reference(x, h0, *w, mask=mask)
    torch.testing.assert_close(out[2, 1], out[1, 1])
    torch.testing.assert_close(out[:, 2], h0[2].expand(T, H))
    torch.testing.assert_close(hn[2], h0[2])
    assert (out[3, 1] - out[2, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_reference_gradcheck_float64(reset_after):
    T, B, I, H = 4, 2, 3, 5
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    w = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))]
    mask = torch.tensor([[1, 1], [0, 1], [1, 0], [1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda *a: gru_reference(*a, mask=mask, reset_after=reset_after), (x, h0, *w)
    )
