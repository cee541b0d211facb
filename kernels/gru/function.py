"""The autograd Function for one GRU layer over a sequence, and the public ``gru_sequence``.

One Function, two implementations of its inner time loops: ``"triton"`` (the fused kernels of
``fused_recurrent.py``) and ``"torch"`` (the loops of ``common.py``, a hand-written backward through
time, not autograd over a Python loop). Both share the GEMMs outside the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.gru.common import (
    check_gru_inputs,
    input_projection,
    torch_backward_loop,
    torch_forward_loop,
    weight_grads,
)

IMPLS = ("triton", "torch")


def _loops(impl: str):
    if impl == "triton":
        from kernels.gru.fused_recurrent import fused_gru_bwd, fused_gru_fwd

        return fused_gru_fwd, fused_gru_bwd
    return torch_forward_loop, torch_backward_loop


class GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, reset_after, impl):
        fwd, _ = _loops(impl)
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        gi, b_hn = input_projection(x, weight_ih, bias_ih, bias_hh, reset_after)
        h0f = gi.new_zeros(B, H) if h0 is None else h0.to(gi.dtype).contiguous()
        hs, gates = fwd(gi, h0f, weight_hh.contiguous(), b_hn, mask, reset_after)
        ctx.save_for_backward(x, weight_ih, weight_hh, hs, gates, mask)
        ctx.reset_after, ctx.impl = reset_after, impl
        ctx.has_h0, ctx.has_bias_ih, ctx.has_bias_hh = h0 is not None, bias_ih is not None, bias_hh is not None
        ctx.mark_non_differentiable(*(() if mask is None else (mask,)))
        return hs[1:].to(x.dtype), hs[-1].to(x.dtype)

    @staticmethod
    def backward(ctx, dout, dh_n):
        x, weight_ih, weight_hh, hs, gates, mask = ctx.saved_tensors
        _, bwd = _loops(ctx.impl)
        T1, B, H = hs.shape
        dout = hs.new_zeros(T1 - 1, B, H) if dout is None else dout.to(hs.dtype).contiguous()
        dh_n = hs.new_zeros(B, H) if dh_n is None else dh_n.to(hs.dtype).contiguous()
        dG, dh0 = bwd(dout, dh_n, hs, gates, weight_hh.contiguous(), mask, ctx.reset_after)
        dx, dW_ih, dW_hh, db_ih, db_hh = weight_grads(
            dG, x, hs[:-1], gates[..., :H], weight_ih, ctx.reset_after, ctx.needs_input_grad[0]
        )
        dt = x.dtype
        return (
            None if dx is None else dx.to(dt),
            dh0.to(dt) if ctx.has_h0 else None,
            dW_ih.to(dt),
            dW_hh.to(dt),
            db_ih.to(dt) if ctx.has_bias_ih else None,
            db_hh.to(dt) if ctx.has_bias_hh else None,
            None, None, None,
        )


def gru_sequence(
    x: Tensor,
    h0: Tensor | None,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    mask: Tensor | None = None,
    reset_after: bool = True,
    impl: str = "triton",
) -> tuple[Tensor, Tensor]:
    """One GRU layer over a whole sequence, differentiable in every tensor argument but the mask.

    Args:
        x: (T, B, I) input, float32, bfloat16 or float16 (time-major).
        h0: (B, H) initial state, or None for zeros.
        weight_ih: (3H, I) rows [W_ir; W_iz; W_in], the dtype of ``x``.
        weight_hh: (3H, H) rows [W_hr; W_hz; W_hn], the dtype of ``x``.
        bias_ih, bias_hh: (3H,) or None.
        mask: (T, B), bool or {0, 1}, or None; where False the state is carried unchanged and the
            output repeats the previous state.
        reset_after: True for PyTorch's/cuDNN's formulation, False for the classic one.
        impl: "triton" (fused kernels; CUDA tensors, or CPU under ``TRITON_INTERPRET=1``) or
            "torch" (torch loops with a hand-written backward).

    Returns:
        output (T, B, H) and h_n (B, H), both in the dtype of ``x``. The state is carried in
        float32 inside; half-precision inputs accumulate in float32.

    Raises:
        ValueError: on shapes, dtypes or devices that do not fit, or an unknown ``impl``.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    check_gru_inputs(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)
    if x.shape[0] == 0:
        raise ValueError("input has no time steps (T = 0); pass at least one step")
    if impl == "triton":
        from kernels.gru.backend import require_triton

        require_triton(x.device)
        if x.dtype == torch.float64:
            raise ValueError("the triton backend takes float32, bfloat16 or float16; use impl='torch' for float64")
    if mask is not None:
        mask = mask.bool().contiguous()
    return GRUFunction.apply(
        x.contiguous(), h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, reset_after, impl
    )
