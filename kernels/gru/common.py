"""Pieces shared by every GRU implementation: input checks, the GEMMs outside the time loop, and
the torch time loops (forward and hand-written backward) that the Triton kernels mirror.

Layout: time-major. Per step the loops need ``gi`` = x W_ih^T + b_ih + [b_hr, b_hz, b'_hn] in
float32, where b'_hn is folded in only for the reset-before formulation (there b_hn sits outside
the reset gate). For reset-after, b_hn stays inside ``r * (W_hn h + b_hn)`` and is passed apart.

Backward derivation (g = dL/dh_t from the output at t plus the carry from t+1, m the mask)::

    dh'   = m g                        carry = (1 - m) g
    dn    = dh' (1 - z)                dz    = dh' (h_{t-1} - n)     carry += dh' z
    da_n  = dn (1 - n^2)
    reset-after:   dr = da_n * hn      (hn = W_hn h + b_hn)    dgh_n = da_n * r
    reset-before:  d(rh) = da_n W_hn   dr = d(rh) * h_{t-1}    carry += d(rh) * r
    da_r  = dr r (1 - r)               da_z = dz z (1 - z)
    carry += [da_r, da_z] W_hh[:2H]    (+ dgh_n W_hn for reset-after)
    dG_t  = [da_r, da_z, da_n] = dL/d(gi_t)

After the loop everything else is a GEMM over all steps at once: dx = dG W_ih,
dW_ih = dG^T x, db_ih = sum dG, dW_hh[r,z] = dG[r,z]^T h_{t-1}, dW_hh[n] = dgh_n^T h_{t-1}
(reset-after) or da_n^T (r h_{t-1}) (reset-before), db_hh = sum [da_r, da_z, dgh_n].

Masked steps contribute exact zeros: every ``m *`` above is a ``torch.where`` / ``tl.where`` in the
code, and the GEMMs see zeros in place of x and r at masked steps. A multiply would turn a NaN
input at a masked step (its gates are NaN; the output is right, it repeats h_{t-1}) into NaN
weight gradients, since 0 * NaN = NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype states and gates are carried in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_gru_inputs(
    x: Tensor,
    h0: Tensor | None,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    mask: Tensor | None,
    *,
    time_major: bool = True,
) -> None:
    """Raise ``ValueError`` naming the problem when shapes, dtypes or devices do not fit.

    With ``time_major`` x is (T, B, I) and mask (T, B); otherwise x is (B, I) and mask (B,).
    """
    want_dims = 3 if time_major else 2
    x_desc = "(T, B, I)" if time_major else "(B, I)"
    if x.dim() != want_dims:
        raise ValueError(f"input must be {x_desc}, got shape {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"input dtype {x.dtype} is not supported; use one of float32, bfloat16, float16 "
            f"(or float64 with the torch backend)"
        )
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 3 * weight_hh.shape[1]:
        raise ValueError(f"weight_hh must be (3H, H), got shape {tuple(weight_hh.shape)}")
    H = weight_hh.shape[1]
    I = x.shape[-1]
    if tuple(weight_ih.shape) != (3 * H, I):
        raise ValueError(
            f"weight_ih must be (3H, I) = ({3 * H}, {I}) for hidden size {H} and input size {I}, "
            f"got {tuple(weight_ih.shape)}"
        )
    B = x.shape[-2]
    for name, t in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if t is not None and tuple(t.shape) != (3 * H,):
            raise ValueError(f"{name} must be (3H,) = ({3 * H},), got {tuple(t.shape)}")
    if h0 is not None and tuple(h0.shape) != (B, H):
        raise ValueError(f"initial state must be (B, H) = ({B}, {H}), got {tuple(h0.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:-1]):
        m_desc = "(T, B)" if time_major else "(B,)"
        raise ValueError(
            f"mask must be {m_desc} = {tuple(x.shape[:-1])} to match the input, got {tuple(mask.shape)}"
        )
    for name, t in (("weight_ih", weight_ih), ("weight_hh", weight_hh),
                    ("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(
                f"{name} is {t.dtype} but the input is {x.dtype}; cast the input or the module "
                f"(e.g. module.to(input.dtype)) so they match"
            )
    for name, t in (("h0", h0), ("weight_ih", weight_ih), ("weight_hh", weight_hh),
                    ("bias_ih", bias_ih), ("bias_hh", bias_hh), ("mask", mask)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but the input is on {x.device}")


def folded_bias(
    bias_ih: Tensor | None, bias_hh: Tensor | None, H: int, reset_after: bool, dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The biases as the kernels take them: ``bias`` (3H,) = b_ih + [b_hr, b_hz, b'_hn], with b'_hn
    = b_hn for reset-before and 0 for reset-after, and ``b_hn`` (H,), the recurrent n-bias kept
    apart for reset-after (zeros otherwise). Both in ``dtype``."""
    bias = torch.zeros(3 * H, dtype=dtype, device=device)
    b_hn = torch.zeros(H, dtype=dtype, device=device)
    if bias_ih is not None:
        bias = bias + bias_ih.to(dtype)
    if bias_hh is not None:
        b = bias_hh.to(dtype)
        if reset_after:
            bias = bias + torch.cat([b[: 2 * H], b.new_zeros(H)])
            b_hn = b[2 * H:].contiguous()
        else:
            bias = bias + b
    return bias, b_hn


def input_projection(
    x: Tensor, weight_ih: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None, reset_after: bool
) -> tuple[Tensor, Tensor]:
    """One GEMM for all steps: ``gi`` (..., 3H) float32 (float64 for float64 inputs) with the
    foldable biases added, and ``b_hn`` (H,), the recurrent n-bias kept apart for reset-after
    (zeros otherwise); see :func:`folded_bias`."""
    H = weight_ih.shape[0] // 3
    acc = acc_dtype(x.dtype)
    bias, b_hn = folded_bias(bias_ih, bias_hh, H, reset_after, acc, x.device)
    gi = (x @ weight_ih.T).to(acc) + bias
    return gi.contiguous(), b_hn


def weight_grads(
    dG: Tensor,
    x: Tensor,
    h_prev: Tensor,
    r: Tensor,
    weight_ih: Tensor,
    reset_after: bool,
    need_dx: bool,
    mask: Tensor | None = None,
    dgh_n: Tensor | None = None,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """GEMMs over all steps at once, from ``dG`` (T, B, 3H) = dL/d(gi) float32.

    ``h_prev`` (T, B, H) is the state entering each step, ``r`` (T, B, H) the reset gate, ``mask``
    (T, B) bool or None. ``dG`` must be exactly zero at masked steps; there x and r are replaced by
    zeros (torch.where) so that a NaN or inf input at a masked step cannot reach a weight gradient
    (0 * NaN is NaN inside the GEMMs). ``dgh_n`` (T, B, H), reset-after only: da_n * r as the
    Triton backward already computed it (zero at masked steps), or None to compute it here.
    Returns dx (T, B, I) or None, dW_ih (3H, I), dW_hh (3H, H), db_ih (3H,), db_hh (3H,), all float32.
    """
    T, B, G = dG.shape
    H = G // 3
    if mask is not None:
        keep = mask.unsqueeze(-1)
        x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        r = torch.where(keep, r, torch.zeros((), dtype=r.dtype, device=r.device))
    dG2 = dG.reshape(T * B, G)
    x2 = x.reshape(T * B, -1).to(dG.dtype)
    hp2 = h_prev.reshape(T * B, H)
    dx = (dG2 @ weight_ih.to(dG.dtype)).reshape(T, B, -1) if need_dx else None
    dW_ih = dG2.T @ x2
    db_ih = dG2.sum(0)
    if reset_after:
        dgh_n = dG2[:, 2 * H:] * r.reshape(T * B, H) if dgh_n is None else dgh_n.reshape(T * B, H)
        hin_n = hp2
    else:
        dgh_n = dG2[:, 2 * H:]
        hin_n = r.reshape(T * B, H) * hp2
    dW_hh = torch.cat([dG2[:, : 2 * H].T @ hp2, dgh_n.T @ hin_n])
    db_hh = torch.cat([dG2[:, : 2 * H].sum(0), dgh_n.sum(0)])
    return dx, dW_ih, dW_hh, db_ih, db_hh


def torch_forward_loop(
    gi: Tensor, h0: Tensor, weight_hh: Tensor, b_hn: Tensor, mask: Tensor | None, reset_after: bool
) -> tuple[Tensor, Tensor]:
    """Forward over time in torch, saving what the backward needs.

    Args: gi (T, B, 3H) and h0 (B, H) in the accumulation dtype (float32, or float64), weight_hh (3H, H), b_hn (H,), mask (T, B) bool or None.
    Returns: hs (T + 1, B, H) float32, h0 then the state after every step, and gates
    (T, B, NG*H) float32 with NG = 4 ([r, z, n, hn]) for reset-after and 3 ([r, z, n]) for reset-before.
    """
    T, B, G = gi.shape
    H = G // 3
    w = weight_hh.to(gi.dtype)
    w_rz_t, w_n_t = w[: 2 * H].T, w[2 * H:].T
    ng = 4 if reset_after else 3
    hs = gi.new_empty(T + 1, B, H)
    hs[0] = h0
    gates = gi.new_empty(T, B, ng * H)
    h = h0
    for t in range(T):
        rz = torch.sigmoid(torch.addmm(gi[t, :, : 2 * H], h, w_rz_t))
        r, z = rz[:, :H], rz[:, H:]
        if reset_after:
            hn = torch.addmm(b_hn, h, w_n_t)
            n = torch.tanh(gi[t, :, 2 * H:] + r * hn)
            gates[t, :, 3 * H:] = hn
        else:
            n = torch.tanh(torch.addmm(gi[t, :, 2 * H:], r * h, w_n_t))
        h_new = n + z * (h - n)
        if mask is not None:
            h_new = torch.where(mask[t].unsqueeze(-1), h_new, h)
        gates[t, :, : 2 * H] = rz
        gates[t, :, 2 * H: 3 * H] = n
        hs[t + 1] = h_new
        h = h_new
    return hs, gates


def torch_backward_loop(
    dout: Tensor, dh_n: Tensor, hs: Tensor, gates: Tensor, weight_hh: Tensor,
    mask: Tensor | None, reset_after: bool,
) -> tuple[Tensor, Tensor]:
    """Reverse-time loop of the derivation in the module docstring.

    Args: dout (T, B, H) float32, dh_n (B, H) float32, hs and gates from :func:`torch_forward_loop`,
    weight_hh (3H, H), mask (T, B) bool or None.
    Returns: dG (T, B, 3H) float32, exactly zero at masked steps (torch.where, not a multiply by the
    mask: the gates of a masked step hold NaN when its input did), and dh0 (B, H) float32.
    """
    T, B, H = dout.shape
    w = weight_hh.to(dout.dtype)
    w_rz, w_n = w[: 2 * H], w[2 * H:]
    dG = dout.new_empty(T, B, 3 * H)
    zero = torch.zeros((), dtype=dout.dtype, device=dout.device)
    dh = dh_n
    for t in range(T - 1, -1, -1):
        g = dout[t] + dh
        hp = hs[t]
        r, z, n = gates[t, :, :H], gates[t, :, H: 2 * H], gates[t, :, 2 * H: 3 * H]
        keep = mask[t].unsqueeze(-1) if mask is not None else None

        def kept(v, other=zero):
            return v if keep is None else torch.where(keep, v, other)

        dan = kept(g * (1 - z) * (1 - n * n))
        da_z = kept(g * (hp - n) * z * (1 - z))
        carry = g * z
        if reset_after:
            da_r = kept(dan * gates[t, :, 3 * H:] * r * (1 - r))
            dgh_n = kept(dan * r)
            carry = kept(carry, g) + dgh_n @ w_n
        else:
            drh = dan @ w_n
            da_r = kept(drh * hp * r * (1 - r))
            carry = kept(carry + drh * r, g)
        dG[t, :, :H] = da_r
        dG[t, :, H: 2 * H] = da_z
        dG[t, :, 2 * H:] = dan
        dh = torch.addmm(carry, dG[t, :, : 2 * H], w_rz)
    return dG, dh
