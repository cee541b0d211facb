"""The autograd Function for one GRU layer over a sequence, and the public ``gru_sequence``.

One Function, two implementations of its inner time loops: ``"triton"`` (the fused kernels of
``fused_recurrent.py``, on the path ``plan.py`` picks) and ``"torch"`` (the loops of ``common.py``, a
hand-written backward through time, not autograd over a Python loop). Both share the GEMMs outside
the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.gru.backend import IMPLS, check_impl, log_backend
from kernels.gru.common import (
    check_gru_inputs,
    input_projection,
    torch_backward_loop,
    torch_forward_loop,
    weight_grads,
)
from kernels.gru.plan import PATHS


class GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, reset_after, impl, path, info):
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        gi, b_hn = input_projection(x, weight_ih, bias_ih, bias_hh, reset_after)
        h0f = gi.new_zeros(B, H) if h0 is None else h0.to(gi.dtype).contiguous()
        if impl == "triton":
            from kernels.gru.fused_recurrent import fused_gru_fwd

            hs, gates, plan = fused_gru_fwd(gi, h0f, weight_hh.contiguous(), b_hn, mask, reset_after, path)
            _note(info, "forward", plan)
        else:
            hs, gates = torch_forward_loop(gi, h0f, weight_hh, b_hn, mask, reset_after)
        ctx.save_for_backward(x, weight_ih, weight_hh, hs, gates, mask)
        ctx.reset_after, ctx.impl, ctx.path, ctx.info = reset_after, impl, path, info
        ctx.has_h0, ctx.has_bias_ih, ctx.has_bias_hh = h0 is not None, bias_ih is not None, bias_hh is not None
        ctx.mark_non_differentiable(*(() if mask is None else (mask,)))
        return hs[1:].to(x.dtype), hs[-1].to(x.dtype)

    @staticmethod
    def backward(ctx, dout, dh_n):
        x, weight_ih, weight_hh, hs, gates, mask = ctx.saved_tensors
        T1, B, H = hs.shape
        dout = hs.new_zeros(T1 - 1, B, H) if dout is None else dout.to(hs.dtype).contiguous()
        dh_n = hs.new_zeros(B, H) if dh_n is None else dh_n.to(hs.dtype).contiguous()
        if ctx.impl == "triton":
            from kernels.gru.fused_recurrent import fused_gru_bwd

            dG, dh0, plan, dgh_n = fused_gru_bwd(dout, dh_n, hs, gates, weight_hh.contiguous(), mask,
                                                 ctx.reset_after, ctx.path)
            _note(ctx.info, "backward", plan)
        else:
            dG, dh0 = torch_backward_loop(dout, dh_n, hs, gates, weight_hh, mask, ctx.reset_after)
            dgh_n = None
        dx, dW_ih, dW_hh, db_ih, db_hh = weight_grads(
            dG, x, hs[:-1], gates[..., :H], weight_ih, ctx.reset_after, ctx.needs_input_grad[0], mask,
            dgh_n=dgh_n,
        )
        dt = x.dtype
        return (
            None if dx is None else dx.to(dt),
            dh0.to(dt) if ctx.has_h0 else None,
            dW_ih.to(dt),
            dW_hh.to(dt),
            db_ih.to(dt) if ctx.has_bias_ih else None,
            db_hh.to(dt) if ctx.has_bias_hh else None,
            None, None, None, None, None,
        )


def _note(info: dict | None, direction: str, plan) -> None:
    """Say which Triton path ran: the ``kernels`` logger (once per path) and the caller's dict."""
    name = f"triton-{plan.path}"
    log_backend("triton", f"{name} ({direction}, H={plan.H}, {plan.ctas} programs per launch)")
    if info is not None:
        info[direction] = name
        info[f"{direction}_plan"] = plan


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
    path: str = "auto",
    info: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """One GRU layer over a whole sequence, differentiable in every tensor argument but the mask.

    Args:
        x: (T, B, I) input, float32, bfloat16 or float16 (time-major).
        h0: (B, H) initial state, or None for zeros.
        weight_ih: (3H, I) rows [W_ir; W_iz; W_in], the dtype of ``x``.
        weight_hh: (3H, H) rows [W_hr; W_hz; W_hn], the dtype of ``x``.
        bias_ih, bias_hh: (3H,) or None.
        mask: (T, B), bool or {0, 1}, or None; where False the state is carried unchanged, the
            output repeats the previous state, and the step adds exactly nothing to any gradient
            (even if its input is NaN).
        reset_after: True for PyTorch's/cuDNN's formulation, False for the classic one.
        impl: "triton" (fused kernels; CUDA tensors, or CPU under ``TRITON_INTERPRET=1``) or
            "torch" (torch loops with a hand-written backward).
        path: the Triton kernels' path (``kernels.gru.plan``): "auto", "batch" (one program per
            16 rows, H <= 64), "persistent" (hidden columns split across co-resident programs
            with a grid barrier per step; CUDA only) or "stepwise" (the same split kernel
            launched once per step). Forward and backward each take it; an explicit path that
            cannot run raises instead of falling back.
        info: a dict that receives "forward" / "backward" (the path that ran, e.g.
            "triton-persistent") and the plans, or None.

    Returns:
        output (T, B, H) and h_n (B, H), both in the dtype of ``x``. The state is carried in
        float32 inside; half-precision inputs accumulate in float32.

    Raises:
        ValueError: on shapes, dtypes or devices that do not fit, an unknown ``impl`` or ``path``,
            or a path that cannot run on this device.
        RuntimeError: a persistent launch whose grid barrier timed out (names the fallback).
    """
    check_gru_inputs(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)
    if x.shape[0] == 0:
        raise ValueError("input has no time steps (T = 0); pass at least one step")
    check_impl(impl, path, device=x.device, dtype=x.dtype)
    if mask is not None:
        mask = mask.bool().contiguous()
    return GRUFunction.apply(
        x.contiguous(), h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, reset_after, impl, path, info
    )


__all__ = ["IMPLS", "PATHS", "GRUFunction", "gru_sequence"]
