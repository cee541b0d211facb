"""Readable PyTorch reference of the GRU recurrence: the math of the docs, nothing clever.

Everything else in ``kernels.gru`` is checked against this file, and this file is checked against
``torch.nn.GRU`` (reset-after) and by ``torch.autograd.gradcheck`` in float64.

Gate order and convention are PyTorch's (r, z, n), so ``nn.GRU`` weights load unchanged::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    reset_after=True  (PyTorch, cuDNN):  n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    reset_after=False (classic GRU):     n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
    h' = (1 - z) * n + z * h
    with a mask m in {0, 1}:             h_t = m * h' + (1 - m) * h_{t-1}
"""

from __future__ import annotations

import torch
from torch import Tensor


def gru_cell_reference(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    mask: Tensor | None = None,
    reset_after: bool = True,
) -> Tensor:
    """One GRU step.

    Args:
        x: (B, I) input.
        h: (B, H) previous state.
        weight_ih: (3H, I), rows [W_ir; W_iz; W_in].
        weight_hh: (3H, H), rows [W_hr; W_hz; W_hn].
        bias_ih, bias_hh: (3H,) or None.
        mask: (B,) in {0, 1} or None; where 0 the state is carried unchanged.
        reset_after: where the reset gate is applied (see the module docstring).

    Returns:
        (B, H) the new state.
    """
    H = h.shape[-1]
    w_ir, w_iz, w_in = weight_ih.split(H, dim=0)
    w_hr, w_hz, w_hn = weight_hh.split(H, dim=0)
    zeros = h.new_zeros(3 * H)
    b_ir, b_iz, b_in = (bias_ih if bias_ih is not None else zeros).split(H)
    b_hr, b_hz, b_hn = (bias_hh if bias_hh is not None else zeros).split(H)

    r = torch.sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    if reset_after:
        n = torch.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    else:
        n = torch.tanh(x @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn)
    h_new = (1 - z) * n + z * h
    if mask is not None:
        m = mask.to(h_new.dtype).unsqueeze(-1)
        h_new = m * h_new + (1 - m) * h
    return h_new


def gru_reference(
    x: Tensor,
    h0: Tensor | None,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    mask: Tensor | None = None,
    reset_after: bool = True,
) -> tuple[Tensor, Tensor]:
    """One GRU layer over a whole sequence, time-major, by a plain loop over time.

    Args:
        x: (T, B, I) input.
        h0: (B, H) initial state, or None for zeros.
        weight_ih, weight_hh, bias_ih, bias_hh: as in :func:`gru_cell_reference`.
        mask: (T, B) in {0, 1} or None.

    Returns:
        output (T, B, H): the state after every step (a masked step repeats the previous state),
        h_n (B, H): the state after the last step.
    """
    T, B, _ = x.shape
    H = weight_hh.shape[1]
    h = h0 if h0 is not None else x.new_zeros(B, H)
    outputs = []
    for t in range(T):
        h = gru_cell_reference(
            x[t], h, weight_ih, weight_hh, bias_ih, bias_hh,
            None if mask is None else mask[t], reset_after,
        )
        outputs.append(h)
    return torch.stack(outputs), h
