"""Fused Triton kernels for the GRU recurrence: forward over a sequence, reverse-time backward, and a
single step on a gathered/scattered state table. Host launchers at the bottom.

Layout and why:
- One program owns BLOCK_B batch rows for the whole sequence and loops over time inside the kernel
  (one launch per layer, not one per step). The input projection of every step is one GEMM outside
  (``common.input_projection``); the recurrent matmul ``h W_hh^T`` runs per step with ``tl.dot``.
- H is tiled: the state of step t lives in ``hs[t]`` (float32, global memory that stays hot in
  L1/L2) and each step walks output column blocks (BLOCK_N) and reduction blocks (BLOCK_K), so H=512
  needs no more registers or shared memory than H=64. A block barrier (``tl.debug_barrier``) orders
  the writes of step t before the reads of step t+1 inside the program; no cross-program sync is
  needed because programs own disjoint batch rows.
- State and gates are float32; half-precision operands of ``tl.dot`` accumulate in float32.
- Reset-before needs ``r`` of every column before ``W_hn (r * h)``: a second pass per step, through
  the ``rh`` scratch (B, H).
- Row indices are int64, so every offset is: (t*B + b) * 4H passes 2^31 at B=4096, T=720, H=512.
- The backward kernel implements the derivation in ``common.py`` (dG = dL/d(gi) per step, dh
  carried in float32); the weight gradients are GEMMs over all steps afterwards.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.gru.backend import interpreter_enabled


@triton.jit
def _tanh(x):
    # tl has no portable tanh (libdevice differs per backend and the interpreter); 2*sigmoid(2x)-1
    # is exact in float32 to ~1e-7 absolute, which is below every tolerance we test.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _dot(a, w, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a (float32) @ w (weight dtype), accumulating in float32. Triton's interpreter mishandles
    bfloat16 operands of tl.dot (numpy has no bfloat16; measured: garbage results), so there
    UPCAST rounds a to the weight dtype and multiplies in float32, which is what the bfloat16 MMA
    computes (exact products, float32 sums). On a GPU the native half-precision dot runs."""
    if UPCAST:
        return tl.dot(a.to(w.dtype).to(tl.float32), w.to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(w.dtype), w, input_precision=DOT_PREC)


@triton.jit
def _gru_cell(
    GI, HP, HO, W, BHN, GATES, RH,
    gi_off, hp_off, ho_off, g_off, rh_off, rmask, keep,
    H,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, STORE_GATES: tl.constexpr,
    NG: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One GRU step for BLOCK_B rows. Row r reads gi at GI + gi_off[r] (3H), the previous state at
    HP + hp_off[r] (H), writes the new state at HO + ho_off[r] and the gates at GATES + g_off[r]
    (NG*H). ``keep`` (BLOCK_B,) is the mask (ignored unless HAS_MASK)."""
    cols_n = tl.arange(0, BLOCK_N)
    cols_k = tl.arange(0, BLOCK_K)
    for j0 in range(0, H, BLOCK_N):
        cj = j0 + cols_n
        cm = cj < H
        m2 = rmask[:, None] & cm[None, :]
        acc_r = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        acc_z = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + cols_k
            km = ck < H
            hk = tl.load(HP + hp_off[:, None] + ck[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
            # W^T tile (BLOCK_K, BLOCK_N): element [k, j] = W[gate * H + j, k]
            wp = W + cj[None, :] * H + ck[:, None]
            wm = km[:, None] & cm[None, :]
            acc_r += _dot(hk, tl.load(wp, mask=wm, other=0.0), DOT_PREC, UPCAST)
            acc_z += _dot(hk, tl.load(wp + H * H, mask=wm, other=0.0), DOT_PREC, UPCAST)
            if RESET_AFTER:
                acc_n += _dot(hk, tl.load(wp + 2 * H * H, mask=wm, other=0.0), DOT_PREC, UPCAST)
        gptr = GI + gi_off[:, None] + cj[None, :]
        r = tl.sigmoid(tl.load(gptr, mask=m2, other=0.0) + acc_r)
        z = tl.sigmoid(tl.load(gptr + H, mask=m2, other=0.0) + acc_z)
        hp = tl.load(HP + hp_off[:, None] + cj[None, :], mask=m2, other=0.0)
        if STORE_GATES:
            tl.store(GATES + g_off[:, None] + cj[None, :], r, mask=m2)
            tl.store(GATES + g_off[:, None] + H + cj[None, :], z, mask=m2)
        if RESET_AFTER:
            hn = acc_n + tl.load(BHN + cj, mask=cm, other=0.0)[None, :]
            n = _tanh(tl.load(gptr + 2 * H, mask=m2, other=0.0) + r * hn)
            h_new = n + z * (hp - n)
            if HAS_MASK:
                h_new = tl.where(keep[:, None], h_new, hp)
            tl.store(HO + ho_off[:, None] + cj[None, :], h_new, mask=m2)
            if STORE_GATES:
                tl.store(GATES + g_off[:, None] + 2 * H + cj[None, :], n, mask=m2)
                tl.store(GATES + g_off[:, None] + 3 * H + cj[None, :], hn, mask=m2)
        else:
            tl.store(RH + rh_off[:, None] + cj[None, :], r * hp, mask=m2)
            if not STORE_GATES:
                # the second pass needs z; without a gates buffer keep it in the output slot
                tl.store(HO + ho_off[:, None] + cj[None, :], z, mask=m2)
    if not RESET_AFTER:
        tl.debug_barrier()
        for j0 in range(0, H, BLOCK_N):
            cj = j0 + cols_n
            cm = cj < H
            m2 = rmask[:, None] & cm[None, :]
            acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, H, BLOCK_K):
                ck = k0 + cols_k
                km = ck < H
                rhk = tl.load(RH + rh_off[:, None] + ck[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
                wp = W + 2 * H * H + cj[None, :] * H + ck[:, None]
                acc_n += _dot(rhk, tl.load(wp, mask=km[:, None] & cm[None, :], other=0.0), DOT_PREC, UPCAST)
            n = _tanh(tl.load(GI + gi_off[:, None] + 2 * H + cj[None, :], mask=m2, other=0.0) + acc_n)
            if STORE_GATES:
                z = tl.load(GATES + g_off[:, None] + H + cj[None, :], mask=m2, other=0.0)
            else:
                z = tl.load(HO + ho_off[:, None] + cj[None, :], mask=m2, other=0.0)
            hp = tl.load(HP + hp_off[:, None] + cj[None, :], mask=m2, other=0.0)
            h_new = n + z * (hp - n)
            if HAS_MASK:
                h_new = tl.where(keep[:, None], h_new, hp)
            tl.store(HO + ho_off[:, None] + cj[None, :], h_new, mask=m2)
            if STORE_GATES:
                tl.store(GATES + g_off[:, None] + 2 * H + cj[None, :], n, mask=m2)


@triton.jit(do_not_specialize=["T"])
def _gru_fwd_kernel(
    GI, HS, W, BHN, MASK, GATES, RH, T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, NG: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    rmask = rows < B
    keep = rmask
    for t in range(T):
        if HAS_MASK:
            keep = tl.load(MASK + t * B + rows, mask=rmask, other=0) != 0
        _gru_cell(
            GI, HS, HS, W, BHN, GATES, RH,
            (t * B + rows) * 3 * H, (t * B + rows) * H, ((t + 1) * B + rows) * H,
            (t * B + rows) * NG * H, rows * H, rmask, keep, H,
            BLOCK_B, BLOCK_N, BLOCK_K, RESET_AFTER, HAS_MASK, True, NG, DOT_PREC, UPCAST,
        )
        # step t+1 reads the state this step wrote, in other threads of the program
        tl.debug_barrier()


@triton.jit
def _gru_step_kernel(
    GI, S, IDX, W, BHN, MASK, OUT, RH, M, H,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    rmask = rows < M
    keep = rmask
    if HAS_MASK:
        keep = tl.load(MASK + rows, mask=rmask, other=0) != 0
    srow = tl.load(IDX + rows, mask=rmask, other=0)
    # gather S[idx] -> step -> OUT; the scatter waits for every column block, because the matmul
    # of a later column block still reads the old state of this row
    _gru_cell(
        GI, S, OUT, W, BHN, OUT, RH,
        rows * 3 * H, srow * H, rows * H, rows * 0, rows * H, rmask, keep, H,
        BLOCK_B, BLOCK_N, BLOCK_K, RESET_AFTER, HAS_MASK, False, 4, DOT_PREC, UPCAST,
    )
    tl.debug_barrier()
    cols = tl.arange(0, BLOCK_N)
    for j0 in range(0, H, BLOCK_N):
        cj = j0 + cols
        m2 = rmask[:, None] & (cj < H)[None, :]
        h = tl.load(OUT + rows[:, None] * H + cj[None, :], mask=m2, other=0.0)
        tl.store(S + srow[:, None] * H + cj[None, :], h, mask=m2)


@triton.jit(do_not_specialize=["T"])
def _gru_bwd_kernel(
    DOUT, HS, GATES, W, MASK, DG, DH, CARRY, T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, NG: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """Reverse time. DH (B, H) holds dL/dh_t on entry to step t (initially dL/dh_n) and dL/dh0 at
    the end; CARRY (B, H) collects the column-local part of dL/dh_{t-1} before the matmuls."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    rmask = rows < B
    cols_n = tl.arange(0, BLOCK_N)
    cols_k = tl.arange(0, BLOCK_K)
    for tt in range(T):
        t = T - 1 - tt
        if HAS_MASK:
            mf = (tl.load(MASK + t * B + rows, mask=rmask, other=0) != 0).to(tl.float32)
        else:
            mf = tl.full((BLOCK_B,), 1.0, tl.float32)
        g_off = (t * B + rows) * NG * H
        d_off = (t * B + rows) * 3 * H
        # pass A: column-local terms
        for j0 in range(0, H, BLOCK_N):
            cj = j0 + cols_n
            m2 = rmask[:, None] & (cj < H)[None, :]
            off = rows[:, None] * H + cj[None, :]
            toff = (t * B + rows[:, None]) * H + cj[None, :]
            g = tl.load(DOUT + toff, mask=m2, other=0.0) + tl.load(DH + off, mask=m2, other=0.0)
            hp = tl.load(HS + toff, mask=m2, other=0.0)
            r = tl.load(GATES + g_off[:, None] + cj[None, :], mask=m2, other=0.0)
            z = tl.load(GATES + g_off[:, None] + H + cj[None, :], mask=m2, other=0.0)
            n = tl.load(GATES + g_off[:, None] + 2 * H + cj[None, :], mask=m2, other=0.0)
            dhp = g * mf[:, None]
            carry = g - dhp + dhp * z
            dz = dhp * (hp - n)
            dan = dhp * (1.0 - z) * (1.0 - n * n)
            tl.store(DG + d_off[:, None] + H + cj[None, :], dz * z * (1.0 - z), mask=m2)
            tl.store(DG + d_off[:, None] + 2 * H + cj[None, :], dan, mask=m2)
            if RESET_AFTER:
                hn = tl.load(GATES + g_off[:, None] + 3 * H + cj[None, :], mask=m2, other=0.0)
                dr = dan * hn
                tl.store(DG + d_off[:, None] + cj[None, :], dr * r * (1.0 - r), mask=m2)
            tl.store(CARRY + off, carry, mask=m2)
        tl.debug_barrier()
        if not RESET_AFTER:
            # pass A2: d(r*h) = da_n W_hn needs da_n of every column
            for k0 in range(0, H, BLOCK_K):
                ck = k0 + cols_k
                km = ck < H
                mk = rmask[:, None] & km[None, :]
                drh = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
                for j0 in range(0, H, BLOCK_N):
                    cj = j0 + cols_n
                    jm = cj < H
                    dan = tl.load(DG + d_off[:, None] + 2 * H + cj[None, :], mask=rmask[:, None] & jm[None, :], other=0.0)
                    # W tile (BLOCK_N, BLOCK_K): element [j, k] = W[2H + j, k]
                    w = tl.load(W + (2 * H + cj[:, None]) * H + ck[None, :], mask=jm[:, None] & km[None, :], other=0.0)
                    drh += _dot(dan, w, DOT_PREC, UPCAST)
                off = rows[:, None] * H + ck[None, :]
                hp = tl.load(HS + (t * B + rows[:, None]) * H + ck[None, :], mask=mk, other=0.0)
                r = tl.load(GATES + g_off[:, None] + ck[None, :], mask=mk, other=0.0)
                tl.store(DG + d_off[:, None] + ck[None, :], drh * hp * r * (1.0 - r), mask=mk)
                tl.store(CARRY + off, tl.load(CARRY + off, mask=mk, other=0.0) + drh * r, mask=mk)
            tl.debug_barrier()
        # pass B: dL/dh_{t-1} = carry + [da_r, da_z, (dgh_n)] W_hh
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + cols_k
            km = ck < H
            mk = rmask[:, None] & km[None, :]
            off = rows[:, None] * H + ck[None, :]
            acc = tl.load(CARRY + off, mask=mk, other=0.0)
            for j0 in range(0, H, BLOCK_N):
                cj = j0 + cols_n
                jm = cj < H
                mj = rmask[:, None] & jm[None, :]
                wp = W + cj[:, None] * H + ck[None, :]
                wm = jm[:, None] & km[None, :]
                dar = tl.load(DG + d_off[:, None] + cj[None, :], mask=mj, other=0.0)
                daz = tl.load(DG + d_off[:, None] + H + cj[None, :], mask=mj, other=0.0)
                acc += _dot(dar, tl.load(wp, mask=wm, other=0.0), DOT_PREC, UPCAST)
                acc += _dot(daz, tl.load(wp + H * H, mask=wm, other=0.0), DOT_PREC, UPCAST)
                if RESET_AFTER:
                    dan = tl.load(DG + d_off[:, None] + 2 * H + cj[None, :], mask=mj, other=0.0)
                    r = tl.load(GATES + g_off[:, None] + cj[None, :], mask=mj, other=0.0)
                    acc += _dot((dan * r), tl.load(wp + 2 * H * H, mask=wm, other=0.0), DOT_PREC, UPCAST)
            tl.store(DH + off, acc, mask=mk)
        tl.debug_barrier()


# ------------------------------------------------------------------------------------------------
# host launchers


def _blocks(H: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_N, BLOCK_K): 16 rows is the ``tl.dot`` minimum; column tiles up to 64."""
    bh = max(16, min(64, triton.next_power_of_2(H)))
    return 16, bh, bh


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 follows torch's TF32 switch, like cuDNN does under nn.GRU
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32" if dtype == torch.float32 else "ieee"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and interpreter_enabled()


def _dummy(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(1, dtype=torch.uint8)


def fused_gru_fwd(gi, h0, weight_hh, b_hn, mask, reset_after):
    """Forward over time. gi (T, B, 3H) float32, h0 (B, H) float32, weight_hh (3H, H), b_hn (H,)
    float32, mask (T, B) bool or None. Returns hs (T + 1, B, H) float32 and gates (T, B, NG*H)."""
    T, B, G = gi.shape
    H = G // 3
    ng = 4 if reset_after else 3
    hs = gi.new_empty(T + 1, B, H)
    hs[0] = h0
    gates = gi.new_empty(T, B, ng * H)
    rh = gi.new_empty(B, H) if not reset_after else gi.new_empty(1)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(gi)
    BB, BN, BK = _blocks(H)
    _gru_fwd_kernel[(triton.cdiv(B, BB),)](
        gi, hs, weight_hh, b_hn, mask_u8, gates, rh, T, B, H,
        BLOCK_B=BB, BLOCK_N=BN, BLOCK_K=BK, RESET_AFTER=reset_after, HAS_MASK=mask is not None,
        NG=ng, DOT_PREC=_dot_precision(weight_hh.dtype), UPCAST=_upcast(weight_hh.dtype),
    )
    return hs, gates


def fused_gru_bwd(dout, dh_n, hs, gates, weight_hh, mask, reset_after):
    """Reverse time. dout (T, B, H) float32, dh_n (B, H) float32, hs and gates from
    :func:`fused_gru_fwd`. Returns dG (T, B, 3H) float32 and dh0 (B, H) float32."""
    T, B, H = dout.shape
    ng = gates.shape[-1] // H
    dG = dout.new_empty(T, B, 3 * H)
    dh = dh_n.clone()
    carry = dout.new_empty(B, H)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(dout)
    BB, BN, BK = _blocks(H)
    _gru_bwd_kernel[(triton.cdiv(B, BB),)](
        dout, hs, gates, weight_hh, mask_u8, dG, dh, carry, T, B, H,
        BLOCK_B=BB, BLOCK_N=BN, BLOCK_K=BK, RESET_AFTER=reset_after, HAS_MASK=mask is not None,
        NG=ng, DOT_PREC=_dot_precision(weight_hh.dtype), UPCAST=_upcast(weight_hh.dtype),
    )
    return dG, dh


def fused_gru_step(state, idx, gi, weight_hh, b_hn, mask, reset_after):
    """One launch: gather ``state[idx]``, step, scatter back. state (N, H) float32 (in place),
    idx (M,) int64 unique, gi (M, 3H) float32, mask (M,) bool or None. Returns (M, H) float32."""
    M = idx.shape[0]
    H = state.shape[1]
    out = state.new_empty(M, H)
    rh = state.new_empty(M, H) if not reset_after else state.new_empty(1)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(state)
    BB, BN, BK = _blocks(H)
    _gru_step_kernel[(triton.cdiv(M, BB),)](
        gi, state, idx, weight_hh, b_hn, mask_u8, out, rh, M, H,
        BLOCK_B=BB, BLOCK_N=BN, BLOCK_K=BK, RESET_AFTER=reset_after, HAS_MASK=mask is not None,
        DOT_PREC=_dot_precision(weight_hh.dtype), UPCAST=_upcast(weight_hh.dtype),
    )
    return out
