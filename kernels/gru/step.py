"""Single GRU step on a state table, for streaming: gather rows, step, scatter, in one launch.

The public function and its torch implementation. The Triton kernel and its launcher are in
``fused_step.py``, imported only when Triton runs, so that ``import kernels`` needs torch only; it
shares the cell math (``_gate``, ``_candidate``, ``_update``) with the sequence kernels of ``fused_recurrent.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.gru.backend import check_impl
from kernels.gru.common import check_gru_inputs, folded_bias, input_projection


def _torch_step(state, idx, gi, weight_hh, b_hn, mask, reset_after):
    H = state.shape[1]
    h = state.index_select(0, idx)
    w = weight_hh.to(gi.dtype)
    rz = torch.sigmoid(torch.addmm(gi[:, : 2 * H], h, w[: 2 * H].T))
    r, z = rz[:, :H], rz[:, H:]
    if reset_after:
        n = torch.tanh(gi[:, 2 * H:] + r * torch.addmm(b_hn, h, w[2 * H:].T))
    else:
        n = torch.tanh(torch.addmm(gi[:, 2 * H:], r * h, w[2 * H:].T))
    h_new = n + z * (h - n)
    if mask is not None:
        h_new = torch.where(mask.unsqueeze(-1), h_new, h)
    state.index_copy_(0, idx, h_new)
    return h_new


@torch.no_grad()
def gru_step_(
    state: Tensor,
    idx: Tensor,
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    mask: Tensor | None = None,
    reset_after: bool = True,
    impl: str = "triton",
    assume_unique: bool = False,
    info: dict | None = None,
    path: str = "auto",
) -> Tensor:
    """Advance ``state[idx]`` by one GRU step in place (inference; no autograd).

    Args:
        state: (N, H) float32 state table, contiguous; rows ``idx`` are updated in place.
        idx: (M,) integer row indices into ``state``, no repeats.
        x: (M, I) this step's input, float32, bfloat16 or float16.
        weight_ih: (3H, I); weight_hh: (3H, H); bias_ih, bias_hh: (3H,) or None; dtype of ``x``.
        mask: (M,) bool or {0, 1}, or None; where False the row keeps its state.
        reset_after: the formulation (see ``kernels.gru.naive``).
        impl: "triton" (one fused launch) or "torch".
        assume_unique: skip the check that ``idx`` has no repeats (a device sync on CUDA).
        info: a dict that receives "step" (the kernel variant that ran, e.g.
            "triton-step-resident-fused-input") and its plan, or None.
        path: the Triton step variant (``kernels.gru.plan.STEP_PATHS``): "auto" (the first that
            fits the device), "resident" (W_hh on chip while each program loops over row tiles:
            half precision or TF32, H <= 128 or so) or "streaming" (one row tile per program,
            W_hh re-read per tile). Only "auto" with impl="torch".

    Returns:
        (M, H) float32: the new state of each row (equal to ``state[idx]`` after the call).

    Raises:
        ValueError: bad shapes, dtypes or devices, an index out of range or repeated, a state
            table that is not float32 and contiguous.
    """
    if state.dim() != 2 or state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(
            f"state must be a contiguous float32 (N, H) table, got {state.dtype} "
            f"{tuple(state.shape)}{'' if state.is_contiguous() else ' (not contiguous)'}"
        )
    if state.shape[1] != weight_hh.shape[1]:
        raise ValueError(f"state has H={state.shape[1]} but weight_hh has H={weight_hh.shape[1]}")
    check_gru_inputs(x, None, weight_ih, weight_hh, bias_ih, bias_hh, mask, time_major=False)
    if idx.dim() != 1 or idx.shape[0] != x.shape[0] or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(
            f"idx must be a 1-d integer tensor with one row index per input row ({x.shape[0]}), "
            f"got {idx.dtype} {tuple(idx.shape)}"
        )
    if state.device != x.device or idx.device != x.device:
        raise ValueError(f"state ({state.device}), idx ({idx.device}) and x ({x.device}) must share a device")
    idx = idx.long()
    if idx.numel() == 0:
        return state.new_empty(0, state.shape[1])
    if not assume_unique:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= state.shape[0]:
            raise ValueError(f"idx holds rows outside [0, {state.shape[0]}): min {lo}, max {hi}")
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError(
                "idx has repeated rows; each row can advance once per step (a repeated row would "
                "be written twice with undefined order); deduplicate idx or step twice"
            )
    mask = None if mask is None else mask.bool()
    check_impl(impl, path, step=True, device=x.device, dtype=x.dtype)
    if impl == "triton":
        from kernels.gru.fused_step import fused_gru_step
        from kernels.gru.plan import STEP_FUSE_MAX_I

        H = weight_hh.shape[1]
        bias, b_hn = folded_bias(bias_ih, bias_hh, H, reset_after, torch.float32, x.device)
        # small I: the kernel computes x W_ih^T itself (no (M, 3H) float32 round trip)
        gi = None if x.shape[1] <= STEP_FUSE_MAX_I else input_projection(x, weight_ih, bias_ih, bias_hh, reset_after)[0]
        out, plan = fused_gru_step(state, idx, x.contiguous(), weight_ih.contiguous(), bias, gi,
                                   weight_hh.contiguous(), b_hn, mask, reset_after, path)
        if info is not None:
            info["step"], info["step_plan"] = f"triton-{plan.path}", plan
        return out
    if reset_after and x.dtype == torch.float32:
        # ATen's fused cell, as nn.GRUCell runs it
        h = state.index_select(0, idx)
        h_new = torch.gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
        if mask is not None:
            h_new = torch.where(mask.unsqueeze(-1), h_new, h)
        state.index_copy_(0, idx, h_new)
        return h_new
    gi, b_hn = input_projection(x, weight_ih, bias_ih, bias_hh, reset_after)
    return _torch_step(state, idx, gi, weight_hh, b_hn, mask, reset_after)
