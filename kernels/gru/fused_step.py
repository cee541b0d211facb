"""The single-step Triton kernel for streaming: gather rows of a state table, one GRU step, scatter,
in one launch; and its launcher, which takes the first variant of ``plan.step_candidates`` that
fits the device. The public function is ``kernels.gru.step.gru_step_`` (which imports this module
only when Triton runs: ``import kernels`` needs torch only). The cell math (:func:`_gate`,
:func:`_candidate`, :func:`_update`), the dot and the W_hh tiles are the sequence kernels'
(``fused_recurrent.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.gru import plan as _plan
from kernels.gru.backend import log
from kernels.gru.fused_recurrent import (
    _candidate,
    _check_interpreter,
    _dot,
    _dot_precision,
    _dummy,
    _gate,
    _on_gpu,
    _record,
    _update,
    _upcast,
    _variant,
    _w_tile,
)

#: configuration -> the step candidate chosen there (see :func:`_choose_step`)
_step_choice: dict[tuple, _plan.StepPlan] = {}


@triton.jit
def _mv3(acc_r, acc_z, acc_n, a, wr, wz, wn, THREE: tl.constexpr, DOT_PREC: tl.constexpr,
         UPCAST: tl.constexpr):
    """acc_{r,z}(,n) += a @ w_{r,z}(,n): one A operand, two or three weight tiles (the step)."""
    acc_r = _dot(a, wr, acc_r, DOT_PREC, UPCAST)
    acc_z = _dot(a, wz, acc_z, DOT_PREC, UPCAST)
    if THREE:
        acc_n = _dot(a, wn, acc_n, DOT_PREC, UPCAST)
    return acc_r, acc_z, acc_n


@triton.jit
def _gru_step_kernel(
    X, WIH, BIAS, GI, S, IDX, W, BHN, MASK, OUT, RH, M, H, I,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_I: tl.constexpr,
    FUSE_INPUT: tl.constexpr, RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr,
    RESIDENT: tl.constexpr, ROW_LOOP: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One step of gathered rows, every column, in place on the table S (N, H), BLOCK_B rows at a
    time. A program never reads a row another program writes (it owns whole rows), and it reads a
    row's old state before it writes the row.

    RESIDENT (BLOCK_N == BLOCK_K >= H: one column block): W_hh, W_ih and the biases are loaded once,
    before the loop over row tiles, and stay on chip for every tile of the program; with ROW_LOOP
    the grid is a few programs per SM, each looping over tiles pid, pid + G, ..., so W_hh is read
    about once per program instead of once per tile (100,000 rows at H=128 in tiles of 64: 1,563
    reads of the 192 KB of float32 W_hh). Reset-before computes r * h in registers.

    Streaming (not RESIDENT: W_hh too large to keep): one tile per program; the tile's old state
    h = S[idx] (BLOCK_B, BLOCK_K >= H) is held in registers while the columns are done in blocks
    of BLOCK_N, re-reading their W_hh tiles, so each column block can write its new state straight
    into S. Reset-before needs r of every column before W_hn (r * h): a first pass writes r * h to
    RH (M, H) and z to OUT, a second finishes.

    FUSE_INPUT computes gi = x W_ih^T + BIAS from X (M, I) instead of reading a precomputed GI
    (M, 3H): for small I that saves the (M, 3H) float32 round trip, 3x the bytes of the state."""
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    rl = tl.arange(0, BLOCK_B)
    ks = tl.arange(0, BLOCK_K)
    km = ks < H
    ii = tl.arange(0, BLOCK_I)
    if RESIDENT:
        wr = _w_tile(W, H, 0, 0, ks, km, BLOCK_K, False)
        wz = _w_tile(W, H, 1, 0, ks, km, BLOCK_K, False)
        wn = _w_tile(W, H, 2, 0, ks, km, BLOCK_K, False)
        b_hn = tl.load(BHN + ks, mask=km, other=0.0)
        if FUSE_INPUT:
            ur = _wih_tile(WIH, H, I, 0, ks, km, BLOCK_I)
            uz = _wih_tile(WIH, H, I, 1, ks, km, BLOCK_I)
            un = _wih_tile(WIH, H, I, 2, ks, km, BLOCK_I)
            br = tl.load(BIAS + ks, mask=km, other=0.0)
            bz = tl.load(BIAS + H + ks, mask=km, other=0.0)
            bn = tl.load(BIAS + 2 * H + ks, mask=km, other=0.0)
    if ROW_LOOP:
        n_rounds = tl.cdiv(tl.cdiv(M, BLOCK_B) - pid, n_prog)
    else:
        n_rounds = 1  # one tile per program: the one-trip loop is compiled away
    for i in range(0, n_rounds):
        row0 = (pid + i * n_prog) * BLOCK_B
        rmask = row0 + rl < M
        keep = rmask
        if HAS_MASK:
            keep = tl.load(MASK + row0 + rl, mask=rmask, other=0) != 0
        srow = tl.load(IDX + row0 + rl, mask=rmask, other=0) * H  # int64: the table can be large
        ob = OUT + row0.to(tl.int64) * H
        if FUSE_INPUT:
            x = tl.load(X + row0.to(tl.int64) * I + rl[:, None] * I + ii[None, :],
                        mask=rmask[:, None] & (ii < I)[None, :], other=0.0)
        else:
            ib = GI + row0.to(tl.int64) * (3 * H)
        if RESIDENT:
            m2 = rmask[:, None] & km[None, :]
            sp = S + srow[:, None] + ks[None, :]
            h = tl.load(sp, mask=m2, other=0.0)
            zero = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
            if FUSE_INPUT:
                gi_r = _dot(x, ur, zero, DOT_PREC, UPCAST) + br[None, :]
                gi_z = _dot(x, uz, zero, DOT_PREC, UPCAST) + bz[None, :]
                gi_n = _dot(x, un, zero, DOT_PREC, UPCAST) + bn[None, :]
            else:
                o_i = rl[:, None] * (3 * H) + ks[None, :]
                gi_r = tl.load(ib + o_i, mask=m2, other=0.0)
                gi_z = tl.load(ib + o_i + H, mask=m2, other=0.0)
                gi_n = tl.load(ib + o_i + 2 * H, mask=m2, other=0.0)
            r = _gate(gi_r, _dot(h, wr, zero, DOT_PREC, UPCAST))
            z = _gate(gi_z, _dot(h, wz, zero, DOT_PREC, UPCAST))
            if RESET_AFTER:
                n = _candidate(r, gi_n, _dot(h, wn, zero, DOT_PREC, UPCAST) + b_hn[None, :], RESET_AFTER)
            else:
                n = _candidate(r, gi_n, _dot(r * h, wn, zero, DOT_PREC, UPCAST), RESET_AFTER)
            h_new = _update(n, z, h, keep, HAS_MASK)
            tl.store(ob + rl[:, None] * H + ks[None, :], h_new, mask=m2)
            tl.store(sp, h_new, mask=m2)
        else:
            h = tl.load(S + srow[:, None] + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
            cols_n = tl.arange(0, BLOCK_N)
            for j0 in range(0, H, BLOCK_N):
                cols = j0 + cols_n
                cm = cols < H
                m2 = rmask[:, None] & cm[None, :]
                o_h = rl[:, None] * H + cols[None, :]
                acc_r = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                acc_z = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                acc_r, acc_z, acc_n = _mv3(
                    acc_r, acc_z, acc_n, h,
                    _w_tile(W, H, 0, 0, cols, cm, BLOCK_K, False),
                    _w_tile(W, H, 1, 0, cols, cm, BLOCK_K, False),
                    _w_tile(W, H, 2, 0, cols, cm, BLOCK_K, False),
                    RESET_AFTER, DOT_PREC, UPCAST)
                if FUSE_INPUT:
                    gi_r = _input_gate(x, WIH, BIAS, 0, cols, cm, H, I, BLOCK_B, BLOCK_N, BLOCK_I, DOT_PREC, UPCAST)
                    gi_z = _input_gate(x, WIH, BIAS, 1, cols, cm, H, I, BLOCK_B, BLOCK_N, BLOCK_I, DOT_PREC, UPCAST)
                else:
                    o_i = rl[:, None] * (3 * H) + cols[None, :]
                    gi_r = tl.load(ib + o_i, mask=m2, other=0.0)
                    gi_z = tl.load(ib + o_i + H, mask=m2, other=0.0)
                r = _gate(gi_r, acc_r)
                z = _gate(gi_z, acc_z)
                sp = S + srow[:, None] + cols[None, :]
                hp = tl.load(sp, mask=m2, other=0.0)
                if RESET_AFTER:
                    if FUSE_INPUT:
                        gi_n = _input_gate(x, WIH, BIAS, 2, cols, cm, H, I, BLOCK_B, BLOCK_N, BLOCK_I, DOT_PREC,
                                           UPCAST)
                    else:
                        gi_n = tl.load(ib + o_i + 2 * H, mask=m2, other=0.0)
                    n = _candidate(r, gi_n, acc_n + tl.load(BHN + cols, mask=cm, other=0.0)[None, :], RESET_AFTER)
                    h_new = _update(n, z, hp, keep, HAS_MASK)
                    tl.store(ob + o_h, h_new, mask=m2)
                    tl.store(sp, h_new, mask=m2)
                else:
                    tl.store(RH + row0.to(tl.int64) * H + o_h, r * hp, mask=m2)
                    tl.store(ob + o_h, z, mask=m2)
            if not RESET_AFTER:
                # r * h of every column is in RH, written by other threads of this program
                tl.debug_barrier()
                rh = tl.load(RH + row0.to(tl.int64) * H + rl[:, None] * H + ks[None, :],
                             mask=rmask[:, None] & km[None, :], other=0.0)
                for j0 in range(0, H, BLOCK_N):
                    cols = j0 + cols_n
                    cm = cols < H
                    m2 = rmask[:, None] & cm[None, :]
                    o_h = rl[:, None] * H + cols[None, :]
                    acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                    acc_n = _dot(rh, _w_tile(W, H, 2, 0, cols, cm, BLOCK_K, False), acc_n, DOT_PREC, UPCAST)
                    if FUSE_INPUT:
                        gi_n = _input_gate(x, WIH, BIAS, 2, cols, cm, H, I, BLOCK_B, BLOCK_N, BLOCK_I, DOT_PREC,
                                           UPCAST)
                    else:
                        gi_n = tl.load(ib + rl[:, None] * (3 * H) + 2 * H + cols[None, :], mask=m2, other=0.0)
                    n = _candidate(None, gi_n, acc_n, RESET_AFTER)
                    z = tl.load(ob + o_h, mask=m2, other=0.0)
                    sp = S + srow[:, None] + cols[None, :]
                    hp = tl.load(sp, mask=m2, other=0.0)
                    h_new = _update(n, z, hp, keep, HAS_MASK)
                    tl.store(ob + o_h, h_new, mask=m2)
                    tl.store(sp, h_new, mask=m2)


@triton.jit
def _wih_tile(WIH, H, I, gate, cols, cm, BLOCK_I: tl.constexpr):
    """(BLOCK_I, BN) tile of gate ``gate`` of W_ih (3H, I): [i, c] = W_ih[gate*H + c, i]."""
    ii = tl.arange(0, BLOCK_I)
    return tl.load(WIH + (gate * H + cols[None, :]) * I + ii[:, None], mask=(ii < I)[:, None] & cm[None, :],
                   other=0.0)


@triton.jit
def _input_gate(x, WIH, BIAS, gate, cols, cm, H, I, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_I: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    """x (BB, BLOCK_I) @ W_ih[gate*H + cols, :]^T + BIAS[gate*H + cols]; BIAS (3H,) float32 holds
    every bias that adds to this gate's input part."""
    acc = _dot(x, _wih_tile(WIH, H, I, gate, cols, cm, BLOCK_I), tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32),
               DOT_PREC, UPCAST)
    return acc + tl.load(BIAS + gate * H + cols, mask=cm, other=0.0)[None, :]


# ------------------------------------------------------------------------------------------------
# host launcher

def step_constexprs(plan: _plan.StepPlan, reset_after: bool, has_mask: bool, dot_prec: str,
                    upcast: bool) -> dict:
    return dict(BLOCK_B=plan.block_b, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, BLOCK_I=plan.block_i,
                FUSE_INPUT=plan.fuse_input, RESET_AFTER=reset_after, HAS_MASK=has_mask,
                RESIDENT=plan.resident, ROW_LOOP=plan.resident, DOT_PREC=dot_prec, UPCAST=upcast)


def fused_gru_step(state, idx, x, weight_ih, bias, gi, weight_hh, b_hn, mask, reset_after, path="auto",
                   plan=None):
    """One launch: gather ``state[idx]``, step, scatter back.

    state (N, H) float32 (updated in place), idx (M,) int64 unique rows, x (M, I) in the weights'
    dtype, weight_ih (3H, I), bias (3H,) float32 (every bias added to the input part, see
    ``common.folded_bias``), gi (M, 3H) float32 or None (None: the kernel computes x W_ih^T + bias
    itself, for I <= ``plan.STEP_FUSE_MAX_I``), weight_hh (3H, H), b_hn (H,) float32, mask (M,) bool
    or None, path one of ``plan.STEP_PATHS``; ``plan`` (a ``StepPlan``) overrides the choice.
    Returns the new state of the rows, (M, H) float32, and the ``StepPlan`` run.

    On a GPU the first of ``plan.step_candidates`` whose compiled kernel fits the device runs (a
    resident plan with SMs x its CTAs per SM programs); the choice is cached per configuration."""
    _check_interpreter()
    M = idx.shape[0]
    H = state.shape[1]
    I = x.shape[1]
    if gi is None and I > _plan.STEP_FUSE_MAX_I:
        raise ValueError(f"the step kernel fuses the input projection only up to I={_plan.STEP_FUSE_MAX_I}; "
                         f"pass gi for I={I}")
    out = state.new_empty(M, H)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(state)
    dot_prec, upcast = _dot_precision(weight_hh.dtype), _upcast(weight_hh.dtype)
    gi_arg = gi if gi is not None else _dummy(state)

    def args(p):
        # RH: r * h between the two passes of a streaming reset-before step (resident: registers)
        rh = state.new_empty(M, H) if not (reset_after or p.resident) else state.new_empty(1)
        return (x, weight_ih, bias, gi_arg, state, idx, weight_hh, b_hn, mask_u8, out, rh, M, H, I)

    if plan is None:
        plan = _choose_step(M, H, I, weight_hh.dtype, dot_prec, upcast, path, reset_after, mask is not None,
                            gi is not None, state.device, args)
    elif gi is not None:
        plan = _plan.replace(plan, fuse_input=False)
    ce = step_constexprs(plan, reset_after, mask is not None, dot_prec, upcast)
    k = _gru_step_kernel[(plan.ctas,)](*args(plan), num_warps=plan.num_warps, num_stages=plan.num_stages, **ce)
    _record("_gru_step_kernel", k, ce, plan.num_warps, plan.num_stages)
    return out, plan


def _choose_step(M, H, I, dtype, dot_prec, upcast, path, reset_after, has_mask, has_gi, device, args):
    """The first step candidate that fits the device, with the resident plan's grid at SMs x CTAs
    per SM of its compiled kernel. Cached per configuration; the row count only picks the tile
    size (many rows: bigger tiles), so the cache stays small."""
    dm = _plan.device_model(device)
    on_gpu = _on_gpu(device)
    key = (device.type, device.index, H, I, dtype, dot_prec, path, reset_after, has_mask, has_gi,
           M >= 64 * dm.n_sm, M >= 32 * dm.n_sm)
    chosen = _step_choice.get(key)
    if chosen is None:
        problems = []
        for cand in _plan.step_candidates(M, H, I, dtype, dot_prec, path, dm):
            if has_gi:
                cand = _plan.replace(cand, fuse_input=False)
            if on_gpu:
                ce = step_constexprs(cand, reset_after, has_mask, dot_prec, upcast)
                facts = _variant(_gru_step_kernel, args(cand), ce, cand.num_warps, cand.num_stages, dm, device)
                if facts["problem"]:
                    problems.append(f"{cand.path} (BLOCK_B {cand.block_b}, BLOCK_N {cand.block_n}): {facts['problem']}")
                    log.info("GRU step: %s", problems[-1])
                    continue
                if cand.resident:
                    cand = _plan.replace(cand, n_programs=dm.n_sm * facts["occupancy"])
            chosen = cand
            break
        if chosen is None:
            raise RuntimeError(f"GRU step: no kernel variant fits {dm.name} at H={H}, {dtype}: " + "; ".join(problems))
        _step_choice[key] = chosen
    return chosen if chosen.M == M else _plan.replace(chosen, M=M)
