"""Fused Triton kernels for the GRU recurrence over a sequence: forward and reverse-time backward,
and the cell math, the dot and the W_hh tiles that the single-step kernel (``fused_step.py``)
shares. Host launchers at the bottom; which path runs with which block sizes and grid is decided
in ``plan.py``; ``kernels/README.md`` has the overview.

Layout and why:
- The input projection of every step is one GEMM outside (``common.input_projection``); the kernels
  run the recurrent part ``h W_hh^T`` per step with ``tl.dot``. State and gates are float32;
  half-precision dot operands accumulate in float32.
- Program (c, g) of a sequence launch owns hidden units [c*BN, (c+1)*BN) of all three gates for
  the batch tiles g, g + G, g + 2G, ... (G = programs along axis 1). Its slice of W_hh (3 x H x BN)
  is loaded ONCE, before the time loop, as NCHUNK tiles of BLOCK_K reduction rows: the compiler
  keeps them in shared memory for the whole launch (the compile report shows it), and chunking K
  keeps the dot operands that are live at once small. The forward interleaves the gates in one
  tile per chunk (one dot gives r, z, n); the backward keeps a tile per gate.
- Three paths share the kernel body (``tl.constexpr`` switches, no copies):
  * ONE_BLOCK ("batch"): one program holds every column (H <= BN), so h stays in registers across
    steps and no program waits for another. One launch loops over all T steps.
  * PERSISTENT: several column programs per batch tile; after each step they meet at a barrier
    private to their batch tile (``_group_barrier``: an int64 counter in global memory, release on
    arrival, acquire while polling). Only launched where every program is co-resident; the poll
    gives up after ``spin_limit`` reads, poisons the counter (so every later barrier passes and the
    launch ends) and the host raises instead of hanging. TILE_LOOP: a group loops over several
    batch tiles (False: one tile per program, the loop compiled away).
  * STAGE != 0 ("stepwise"): the same body, one launch per step (per stage of a step where a step
    needs two exchanges), the launch boundary being the barrier (ONE_STEP folds the step loop).
    Triton's interpreter runs programs one after another, so this is the split-H path it can
    check; it is also the fallback wherever co-residency is not guaranteed.
- Data one program writes and another reads within a launch (h, r*h, gate gradients) is loaded with
  ``.cg`` (L2, not the SM's L1, which is not coherent across SMs); every such address is written
  before the barrier that precedes its reads. The sequence kernels run with num_stages=1: software
  pipelining would hoist step t+1's loads above step t's barrier.
- Addresses: one int64 scalar base per (tensor, step) (``_at``: (t*B + b) * 4H passes 2^31 at
  B=4096, T=720, H=512) and int32 offsets inside a tile, so the per-element offsets kept across the
  time loop cost one register each.
- The backward kernel implements the derivation in ``common.py``. Masked steps contribute exact
  zeros through ``tl.where`` (0 * NaN is NaN: a NaN input at a masked step must not leak into any
  gradient). Weight gradients are GEMMs over all steps afterwards.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from kernels.gru import plan as _plan
from kernels.gru.backend import interpreter_enabled, log

_POISON = tl.constexpr(_plan.POISON)


@triton.jit
def _tanh(x):
    # tl has no portable tanh (libdevice differs per backend and the interpreter); 2*sigmoid(2x)-1
    # is exact in float32 to ~1e-7 absolute, which is below every tolerance we test.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _gate(gi, a):
    """A sigmoid gate, r or z, the same in both formulations: its input part ``gi`` plus its
    recurrent part ``a`` (h W_hr^T or h W_hz^T)."""
    return tl.sigmoid(gi + a)


@triton.jit
def _candidate(r, gi_n, a_n, RESET_AFTER: tl.constexpr):
    """The candidate n of a GRU cell, both formulations (the math of ``naive.py``), from the input
    part ``gi_n`` and the recurrent part ``a_n`` of the n gate, which the caller computes:

    - reset after the recurrent matmul (cuDNN's, ``torch.nn.GRU``'s): a_n = hn = h W_hn^T + b_hn
      (b_hn (N,) stays inside the reset; the forward saves hn for the backward) and
      n = tanh(gi_n + r * hn);
    - reset before it: a_n = (r * h) W_hn^T (it needs r of every column, which the split paths
      exchange), b_hn folded into gi_n; n = tanh(gi_n + a_n). ``r`` is unused (None where the
      caller has none).

    The caller forms a_n before it loads gi_n, and :func:`_update` is apart, so that each kernel
    keeps its loads where they were: the same Triton IR as the arithmetic written out (see
    experiments/kernels/COMPILE_LOG.md)."""
    if RESET_AFTER:
        n = _tanh(gi_n + r * a_n)
    else:
        n = _tanh(gi_n + a_n)
    return n


@triton.jit
def _update(n, z, h, keep, HAS_MASK: tl.constexpr):
    """The new state h' = n + z (h - n), and h where ``keep`` (BB,) is False (HAS_MASK)."""
    h_new = n + z * (h - n)
    if HAS_MASK:
        h_new = tl.where(keep[:, None], h_new, h)
    return h_new


@triton.jit
def _dot(a, w, acc, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a (float32) @ w (weight dtype), accumulating in float32. Triton's interpreter mishandles
    bfloat16 operands of tl.dot (numpy has no bfloat16; measured: garbage results), so there
    UPCAST rounds a to the weight dtype and multiplies in float32, which is what the bfloat16 MMA
    computes (exact products, float32 sums). On a GPU the native half-precision dot runs."""
    if UPCAST:
        return acc + tl.dot(a.to(w.dtype).to(tl.float32), w.to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(w.dtype), w, acc, input_precision=DOT_PREC)


@triton.jit
def _w_tile(W, H, gate, k0, cols, cm, BLOCK_K: tl.constexpr, TRANS: tl.constexpr):
    """A (BLOCK_K, BN) tile of gate ``gate`` of W_hh (3H, H), rows k0.. of the reduction.
    Forward (TRANS False): [k, c] = W[gate*H + c, k]   (h W^T: reduce over W's columns).
    Backward (TRANS True): [j, c] = W[gate*H + j, c]   (dG W: reduce over W's rows)."""
    ks = k0 + tl.arange(0, BLOCK_K)
    m = (ks < H)[:, None] & cm[None, :]
    if TRANS:
        p = W + (gate * H + ks[:, None]) * H + cols[None, :]
    else:
        p = W + (gate * H + cols[None, :]) * H + ks[:, None]
    return tl.load(p, mask=m, other=0.0)


@triton.jit
def _w_gates(W, H, k0, col0, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, GW: tl.constexpr):
    """Forward tile (BLOCK_K, GW*BLOCK_N) with the gates interleaved: column GW*j + g holds gate g
    of hidden unit col0 + j, [k, GW*j + g] = W[g*H + col0 + j, k0 + k]. GW 4: [r, z, n, 0]
    (reset-after); GW 2: [r, z] (reset-before, whose n gate takes r * h).
    One dot then gives every gate of the program's units (N = 64, not three dots of N = 16), and
    a program holds H/BLOCK_K tiles instead of 3H/BLOCK_K, each with its own shared-memory
    addresses live across the time loop (the values ptxas spilled when there were 12 tiles)."""
    q = tl.arange(0, GW * BLOCK_N)
    unit = col0 + q // GW
    g = q % GW
    ks = k0 + tl.arange(0, BLOCK_K)
    m = (ks < H)[:, None] & ((g < 3) & (unit < H))[None, :]
    return tl.load(W + (g * H + unit)[None, :] * H + ks[:, None], mask=m, other=0.0)


@triton.jit
def _split_gates(acc, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, GW: tl.constexpr):
    """Undo the interleaving of :func:`_w_gates`: (BB, GW*BN) -> r, z, n (n = r when GW == 2)."""
    if GW == 4:
        even, odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_N, 2, 2)))
        r, n = tl.split(even)
        z, _pad = tl.split(odd)
    else:
        r, z = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_N, 2)))
        n = r
    return r, z, n


@triton.jit
def _w_slice(W, H, gate, col0, cols, cm, NCHUNK: tl.constexpr, NGATE: tl.constexpr, BLOCK_K: tl.constexpr,
             BLOCK_N: tl.constexpr, GW: tl.constexpr, LAYOUT: tl.constexpr):
    """A program's resident slice of W_hh: for each of NGATE gates (``gate``, ``gate`` + 1, ...) a
    tuple of NCHUNK tiles, chunk k holding reduction rows k*BLOCK_K.., loaded chunk by chunk.
    LAYOUT 0: the forward's interleaved gates (:func:`_w_gates`, GW of them per unit; NGATE 1,
    ``gate`` unused); 1: the forward's tiles of one gate (h W^T); 2: the backward's (dG W), see
    :func:`_w_tile`. Returns three tuples; past NGATE they repeat the first (no loads)."""
    w0 = (_w_chunk(W, H, gate, 0, col0, cols, cm, BLOCK_K, BLOCK_N, GW, LAYOUT),)
    w1 = w0
    w2 = w0
    if NGATE > 1:
        w1 = (_w_chunk(W, H, gate + 1, 0, col0, cols, cm, BLOCK_K, BLOCK_N, GW, LAYOUT),)
        w2 = (_w_chunk(W, H, gate + 2, 0, col0, cols, cm, BLOCK_K, BLOCK_N, GW, LAYOUT),)
    for k in tl.static_range(1, NCHUNK):
        w0 = w0 + (_w_chunk(W, H, gate, k * BLOCK_K, col0, cols, cm, BLOCK_K, BLOCK_N, GW, LAYOUT),)
        if NGATE > 1:
            w1 = w1 + (_w_chunk(W, H, gate + 1, k * BLOCK_K, col0, cols, cm, BLOCK_K, BLOCK_N, GW, LAYOUT),)
            w2 = w2 + (_w_chunk(W, H, gate + 2, k * BLOCK_K, col0, cols, cm, BLOCK_K, BLOCK_N, GW, LAYOUT),)
    return w0, w1, w2


@triton.jit
def _w_chunk(W, H, gate, k0, col0, cols, cm, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, GW: tl.constexpr,
             LAYOUT: tl.constexpr):
    """One tile of :func:`_w_slice`."""
    if LAYOUT == 0:
        w = _w_gates(W, H, k0, col0, BLOCK_K, BLOCK_N, GW)
    else:
        w = _w_tile(W, H, gate, k0, cols, cm, BLOCK_K, LAYOUT == 2)
    return w


@triton.jit
def _at(P, t, B, row0, stride):
    """Scalar pointer to row t*B + row0 of P seen as (T*B, stride): the one 64-bit product per
    step. Offsets inside a tile stay int32 (rows < BLOCK_B), so the per-element offsets hoisted
    out of the time loop cost one register each, not two."""
    return P + (t * B + row0).to(tl.int64) * stride


@triton.jit
def _row_tile(base, stride, rl, rmask, k0, H, BLOCK_K: tl.constexpr):
    """(BB, BLOCK_K) float32: rows ``rl`` of the block at ``base`` (row stride ``stride``), columns
    k0.., zeros past H. Read through L2 only (.cg): other programs wrote it (see module doc)."""
    ks = k0 + tl.arange(0, BLOCK_K)
    return tl.load(base + rl[:, None] * stride + ks[None, :], mask=rmask[:, None] & (ks < H)[None, :],
                   other=0.0, cache_modifier=".cg")


@triton.jit
def _mm(acc, base, stride, rl, rmask, H, ws, NCHUNK: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr,
        UPCAST: tl.constexpr):
    """acc + rows (BB, H) @ [ws[0]; ws[1]; ...] over the NCHUNK resident (BLOCK_K, N) tiles of a
    :func:`_w_slice`, one row chunk loaded per tile (so the dot operands live at once stay
    (BB, BLOCK_K))."""
    for k in tl.static_range(NCHUNK):
        acc = _dot(_row_tile(base, stride, rl, rmask, k * BLOCK_K, H, BLOCK_K), ws[k], acc, DOT_PREC, UPCAST)
    return acc


@triton.jit
def _group_barrier(SYNC, target, spin_limit, STATUS):
    """Grid barrier among the programs sharing SYNC: each adds 1 (release: its stores of this step,
    ordered before the add by the CTA barrier, become visible), then polls (acquire) until the
    counter reaches ``target``. Past ``spin_limit`` polls it adds POISON: every member passes this
    and every later barrier at once and the launch ends; and it adds 1 to STATUS, the device's
    count of timed-out waits, which the host reads without a per-launch sync (``BarrierWatch``)."""
    tl.debug_barrier()
    cur = tl.atomic_add(SYNC, 1, sem="acq_rel", scope="gpu") + 1
    spins = 0
    while (cur < target) & (spins < spin_limit):
        cur = tl.atomic_add(SYNC, 0, sem="acquire", scope="gpu")
        spins += 1
    if cur < target:
        tl.atomic_add(SYNC, _POISON, sem="release", scope="gpu")
        tl.atomic_add(STATUS, 1, sem="relaxed", scope="gpu")
    tl.debug_barrier()


@triton.jit(do_not_specialize=["t_start", "n_steps", "spin_limit"])
def _gru_fwd_kernel(
    GI, HS, W, BHN, MASK, GATES, RH, SYNC, STATUS, t_start, n_steps, B, H, spin_limit,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NCHUNK: tl.constexpr,
    RESIDENT: tl.constexpr, ONE_BLOCK: tl.constexpr, STAGE: tl.constexpr, PERSISTENT: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, NG: tl.constexpr,
    TILE_LOOP: tl.constexpr, ONE_STEP: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """Steps t_start .. t_start + n_steps - 1. HS (T+1, B, H): HS[t] is the state entering step t.
    GATES (T, B, NG*H): [r, z, n(, hn)]. RH (B, H): r * h_{t-1} for the reset-before exchange.
    STAGE 0 runs whole steps; 1 and 2 the halves of a reset-before step (one launch each)."""
    # gates interleaved in one dot: 4 for reset-after ([r, z, n, 0]), 2 for reset-before ([r, z];
    # n takes r * h, a second dot)
    GW: tl.constexpr = 4 if RESET_AFTER else 2
    pc = tl.program_id(0)
    pg = tl.program_id(1)
    n_col = tl.num_programs(0)
    n_groups = tl.num_programs(1)
    n_tiles = tl.cdiv(B, BLOCK_B)
    col0 = pc * BLOCK_N
    cols = col0 + tl.arange(0, BLOCK_N)
    cm = cols < H
    rl = tl.arange(0, BLOCK_B)
    if RESIDENT:
        # the program's slice of W_hh, on chip for the whole launch
        wg, _, _ = _w_slice(W, H, 0, col0, cols, cm, NCHUNK, 1, BLOCK_K, BLOCK_N, GW, 0)
        if not RESET_AFTER:
            wn, _, _ = _w_slice(W, H, 2, col0, cols, cm, NCHUNK, 1, BLOCK_K, BLOCK_N, GW, 1)
    b_hn = tl.load(BHN + cols, mask=cm, other=0.0)
    target = 0
    if TILE_LOOP:
        n_rounds = tl.cdiv(n_tiles - pg, n_groups)
    else:
        n_rounds = 1  # one batch tile per program: a loop of one trip, which the compiler removes
    for i in range(0, n_rounds):
        row0 = (pg + i * n_groups) * BLOCK_B
        rmask = row0 + rl < B
        m2 = rmask[:, None] & cm[None, :]
        o_h = rl[:, None] * H + cols[None, :]  # (BB, BN) in an H-wide block of rows
        o_g = rl[:, None] * (NG * H) + cols[None, :]
        o_i = rl[:, None] * (3 * H) + cols[None, :]
        if ONE_BLOCK:
            # BLOCK_N == BLOCK_K covers H: the state stays in registers between steps
            h = tl.load(_at(HS, t_start, B, row0, H) + o_h, mask=m2, other=0.0)
        if ONE_STEP:
            n_loop = 1  # a stepwise launch: the one-trip loop is compiled away
        else:
            n_loop = n_steps
        for s in range(0, n_loop):
            t = t_start + s
            keep = rmask
            if HAS_MASK:
                keep = tl.load(MASK + t * B + row0 + rl, mask=rmask, other=0) != 0
            hb = _at(HS, t, B, row0, H)  # h_{t-1} of the tile's rows
            gb = _at(GATES, t, B, row0, NG * H)
            ib = _at(GI, t, B, row0, 3 * H)
            if STAGE != 2:
                acc = tl.zeros((BLOCK_B, GW * BLOCK_N), dtype=tl.float32)
                if ONE_BLOCK:
                    acc = _dot(h, wg[0], acc, DOT_PREC, UPCAST)
                elif RESIDENT:
                    acc = _mm(acc, hb, H, rl, rmask, H, wg, NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                else:
                    # H too large for the slice to stay on chip: W tiles re-read (L2) every step
                    for k0 in range(0, H, BLOCK_K):
                        acc = _dot(_row_tile(hb, H, rl, rmask, k0, H, BLOCK_K),
                                   _w_gates(W, H, k0, col0, BLOCK_K, BLOCK_N, GW), acc, DOT_PREC, UPCAST)
                acc_r, acc_z, acc_n = _split_gates(acc, BLOCK_B, BLOCK_N, GW)
                r = _gate(tl.load(ib + o_i, mask=m2, other=0.0), acc_r)
                z = _gate(tl.load(ib + o_i + H, mask=m2, other=0.0), acc_z)
                if ONE_BLOCK:
                    hp = h
                else:
                    hp = tl.load(hb + o_h, mask=m2, other=0.0, cache_modifier=".cg")
                tl.store(gb + o_g, r, mask=m2)
                tl.store(gb + o_g + H, z, mask=m2)
                if RESET_AFTER:
                    hn = acc_n + b_hn[None, :]
                    n = _candidate(r, tl.load(ib + o_i + 2 * H, mask=m2, other=0.0), hn, RESET_AFTER)
                    tl.store(gb + o_g + 3 * H, hn, mask=m2)
                elif ONE_BLOCK:
                    acc_n = _dot(r * hp, wn[0], tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), DOT_PREC, UPCAST)
                    n = _candidate(r, tl.load(ib + o_i + 2 * H, mask=m2, other=0.0), acc_n, RESET_AFTER)
                else:
                    tl.store(RH + row0 * H + o_h, r * hp, mask=m2)
                if RESET_AFTER or ONE_BLOCK:
                    h_new = _update(n, z, hp, keep, HAS_MASK)
                    tl.store(_at(HS, t + 1, B, row0, H) + o_h, h_new, mask=m2)
                    tl.store(gb + o_g + 2 * H, n, mask=m2)
            if (not RESET_AFTER) and (not ONE_BLOCK) and STAGE != 1:
                # reset-before: W_hn (r * h) needs r of every column of the tile
                if PERSISTENT:
                    target += n_col
                    _group_barrier(SYNC + pg, target, spin_limit, STATUS)
                rb = RH + row0 * H
                acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                if RESIDENT:
                    acc_n = _mm(acc_n, rb, H, rl, rmask, H, wn, NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                else:
                    for k0 in range(0, H, BLOCK_K):
                        acc_n = _dot(_row_tile(rb, H, rl, rmask, k0, H, BLOCK_K),
                                     _w_tile(W, H, 2, k0, cols, cm, BLOCK_K, False), acc_n, DOT_PREC, UPCAST)
                n = _candidate(None, tl.load(ib + o_i + 2 * H, mask=m2, other=0.0), acc_n, RESET_AFTER)
                if STAGE == 2:
                    z = tl.load(gb + o_g + H, mask=m2, other=0.0)
                    hp = tl.load(hb + o_h, mask=m2, other=0.0)
                h_new = _update(n, z, hp, keep, HAS_MASK)
                tl.store(_at(HS, t + 1, B, row0, H) + o_h, h_new, mask=m2)
                tl.store(gb + o_g + 2 * H, n, mask=m2)
            if PERSISTENT:
                # step t+1 reads the columns every program of the tile wrote
                target += n_col
                _group_barrier(SYNC + pg, target, spin_limit, STATUS)
            if ONE_BLOCK:
                h = h_new


@triton.jit(do_not_specialize=["t_start", "n_steps", "spin_limit"])
def _gru_bwd_kernel(
    DOUT, HS, GATES, W, MASK, DG, DGHN, DH, CARRY, SYNC, STATUS, t_start, n_steps, B, H, spin_limit,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NCHUNK: tl.constexpr,
    RESIDENT: tl.constexpr, ONE_BLOCK: tl.constexpr, STAGE: tl.constexpr, PERSISTENT: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, NG: tl.constexpr,
    TILE_LOOP: tl.constexpr, ONE_STEP: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """Reverse time: steps t_start, t_start - 1, ..., t_start - n_steps + 1 (derivation: common.py).
    DH (B, H): dL/dh_T on entry, dL/dh0 on exit (stepwise: dL/dh_t between launches).
    DG (T, B, 3H): [da_r, da_z, da_n] = dL/d(gi_t). DGHN (T, B, H), reset-after only: dgh_n =
    da_n * r, the n-gate's gradient behind the reset gate (phase B reads it; so do the weight
    gradients). CARRY (B, H): the column-local part of dL/dh_{t-1} between the stepwise stages.
    Stages: 1 column-local terms, 2 (reset-before) d(r*h) = da_n W_hn, 3 dL/dh_{t-1} = carry +
    dG W_hh; 0 runs all three in one launch."""
    pc = tl.program_id(0)
    pg = tl.program_id(1)
    n_col = tl.num_programs(0)
    n_groups = tl.num_programs(1)
    n_tiles = tl.cdiv(B, BLOCK_B)
    col0 = pc * BLOCK_N
    cols = col0 + tl.arange(0, BLOCK_N)
    cm = cols < H
    rl = tl.arange(0, BLOCK_B)
    if RESIDENT:
        wr, wz, wn = _w_slice(W, H, 0, col0, cols, cm, NCHUNK, 3, BLOCK_K, BLOCK_N, 1, 2)
    target = 0
    if TILE_LOOP:
        n_rounds = tl.cdiv(n_tiles - pg, n_groups)
    else:
        n_rounds = 1  # one batch tile per program: a loop of one trip, which the compiler removes
    for i in range(0, n_rounds):
        row0 = (pg + i * n_groups) * BLOCK_B
        rmask = row0 + rl < B
        m2 = rmask[:, None] & cm[None, :]
        o_h = rl[:, None] * H + cols[None, :]
        o_g = rl[:, None] * (NG * H) + cols[None, :]
        o_d = rl[:, None] * (3 * H) + cols[None, :]
        sb = row0 * H  # (B, H) buffers: DH, CARRY
        if STAGE == 0:
            dh = tl.load(DH + sb + o_h, mask=m2, other=0.0)
        if ONE_STEP:
            n_loop = 1
        else:
            n_loop = n_steps
        for s in range(0, n_loop):
            t = t_start - s
            keep = rmask
            if HAS_MASK:
                keep = tl.load(MASK + t * B + row0 + rl, mask=rmask, other=0) != 0
            kp = keep[:, None]
            hb = _at(HS, t, B, row0, H)
            gb = _at(GATES, t, B, row0, NG * H)
            db = _at(DG, t, B, row0, 3 * H)
            nb = _at(DGHN, t, B, row0, H)
            if STAGE == 0 or STAGE == 1:
                if STAGE == 1:
                    dh = tl.load(DH + sb + o_h, mask=m2, other=0.0)
                g = tl.load(_at(DOUT, t, B, row0, H) + o_h, mask=m2, other=0.0) + dh
                hp = tl.load(hb + o_h, mask=m2, other=0.0)
                r = tl.load(gb + o_g, mask=m2, other=0.0)
                z = tl.load(gb + o_g + H, mask=m2, other=0.0)
                n = tl.load(gb + o_g + 2 * H, mask=m2, other=0.0)
                # masked steps: every gate gradient exactly 0 and the carry exactly g (tl.where,
                # not a multiply: the gates of a masked step may hold NaN from a NaN input)
                carry = tl.where(kp, g * z, g)
                dan = tl.where(kp, g * (1.0 - z) * (1.0 - n * n), 0.0)
                daz = tl.where(kp, g * (hp - n) * z * (1.0 - z), 0.0)
                tl.store(db + o_d + H, daz, mask=m2)
                tl.store(db + o_d + 2 * H, dan, mask=m2)
                if RESET_AFTER:
                    hn = tl.load(gb + o_g + 3 * H, mask=m2, other=0.0)
                    dar = tl.where(kp, dan * hn * r * (1.0 - r), 0.0)
                    dghn = tl.where(kp, dan * r, 0.0)
                    tl.store(db + o_d, dar, mask=m2)
                    tl.store(nb + o_h, dghn, mask=m2)
                if STAGE == 1:
                    tl.store(CARRY + sb + o_h, carry, mask=m2)
            if (not RESET_AFTER) and (STAGE == 0 or STAGE == 2):
                # d(r*h)[:, cols] = da_n (all columns) @ W_hn[:, cols]
                if PERSISTENT:
                    target += n_col
                    _group_barrier(SYNC + pg, target, spin_limit, STATUS)
                if STAGE == 2:
                    carry = tl.load(CARRY + sb + o_h, mask=m2, other=0.0)
                    hp = tl.load(hb + o_h, mask=m2, other=0.0)
                    r = tl.load(gb + o_g, mask=m2, other=0.0)
                drh = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                if ONE_BLOCK:
                    drh = _dot(dan, wn[0], drh, DOT_PREC, UPCAST)
                elif RESIDENT:
                    drh = _mm(drh, db + 2 * H, 3 * H, rl, rmask, H, wn, NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                else:
                    for j0 in range(0, H, BLOCK_K):
                        drh = _dot(_row_tile(db + 2 * H, 3 * H, rl, rmask, j0, H, BLOCK_K),
                                   _w_tile(W, H, 2, j0, cols, cm, BLOCK_K, True), drh, DOT_PREC, UPCAST)
                dar = tl.where(kp, drh * hp * r * (1.0 - r), 0.0)
                carry = carry + tl.where(kp, drh * r, 0.0)
                tl.store(db + o_d, dar, mask=m2)
                if STAGE == 2:
                    tl.store(CARRY + sb + o_h, carry, mask=m2)
            if STAGE == 0 or STAGE == 3:
                # dL/dh_{t-1}[:, cols] = carry + [da_r, da_z(, dgh_n)] (all columns) @ W_hh[:, cols]
                if PERSISTENT:
                    target += n_col
                    _group_barrier(SYNC + pg, target, spin_limit, STATUS)
                if STAGE == 3:
                    carry = tl.load(CARRY + sb + o_h, mask=m2, other=0.0)
                acc = carry
                if ONE_BLOCK:
                    acc = _dot(dar, wr[0], acc, DOT_PREC, UPCAST)
                    acc = _dot(daz, wz[0], acc, DOT_PREC, UPCAST)
                    if RESET_AFTER:
                        acc = _dot(dghn, wn[0], acc, DOT_PREC, UPCAST)
                elif RESIDENT:
                    acc = _mm(acc, db, 3 * H, rl, rmask, H, wr, NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                    acc = _mm(acc, db + H, 3 * H, rl, rmask, H, wz, NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                    if RESET_AFTER:
                        acc = _mm(acc, nb, H, rl, rmask, H, wn, NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                else:
                    for j0 in range(0, H, BLOCK_K):
                        acc = _dot(_row_tile(db, 3 * H, rl, rmask, j0, H, BLOCK_K),
                                   _w_tile(W, H, 0, j0, cols, cm, BLOCK_K, True), acc, DOT_PREC, UPCAST)
                        acc = _dot(_row_tile(db + H, 3 * H, rl, rmask, j0, H, BLOCK_K),
                                   _w_tile(W, H, 1, j0, cols, cm, BLOCK_K, True), acc, DOT_PREC, UPCAST)
                        if RESET_AFTER:
                            acc = _dot(_row_tile(nb, H, rl, rmask, j0, H, BLOCK_K),
                                       _w_tile(W, H, 2, j0, cols, cm, BLOCK_K, True), acc, DOT_PREC, UPCAST)
                dh = acc
                # dL/dh_{t-1}, every step (stepwise: the next launch reads it; persistent: dh0 in
                # the end, and a store each step is cheaper than the pointer ptxas kept in local
                # memory across the loop for one store after it)
                tl.store(DH + sb + o_h, dh, mask=m2)


# ------------------------------------------------------------------------------------------------
# host launchers

#: facts about every kernel variant launched on a GPU in this process, keyed by (kernel, config):
#: registers and spills of the loaded binary, shared memory, warps. The GPU check reports them.
LOADED: dict[tuple, dict] = {}

#: (kernel, constexprs, warps, stages, device, argument specialisation) -> facts of the compiled
#: variant: {"problem": why it cannot launch here or None, "occupancy": CTAs per SM}
_variant_cache: dict[tuple, dict] = {}


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 follows torch's TF32 switch for matmuls (torch.backends.cuda.matmul.allow_tf32)
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32" if dtype == torch.float32 else "ieee"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and interpreter_enabled()


def _dummy(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(1, dtype=torch.uint8)


def _on_gpu(device: torch.device) -> bool:
    return device.type == "cuda" and not interpreter_enabled()


def seq_constexprs(plan: _plan.SeqPlan, reset_after: bool, has_mask: bool, stage: int,
                   dot_prec: str, upcast: bool) -> dict:
    """The tl.constexpr arguments of a sequence kernel launch (the compile report uses them too)."""
    b = plan.blocks
    return dict(
        BLOCK_B=b.block_b, BLOCK_N=b.block_n, BLOCK_K=b.block_k, NCHUNK=b.nchunk, RESIDENT=b.resident,
        ONE_BLOCK=b.one_block, STAGE=stage, PERSISTENT=plan.path == "persistent",
        RESET_AFTER=reset_after, HAS_MASK=has_mask, NG=4 if reset_after else 3,
        TILE_LOOP=plan.tile_loop, ONE_STEP=plan.path == "stepwise", DOT_PREC=dot_prec, UPCAST=upcast,
    )


def _record(kernel_name: str, compiled, constexprs: dict, num_warps: int, num_stages: int) -> None:
    """Keep the loaded binary's registers/spills (CUDA only; the interpreter has no binary)."""
    if compiled is None or interpreter_enabled():
        return
    key = (kernel_name, tuple(sorted(constexprs.items())), num_warps, num_stages)
    if key in LOADED:
        return
    try:
        compiled._init_handles()
        LOADED[key] = {
            "kernel": kernel_name, **{k.lower(): v for k, v in constexprs.items()},
            "num_warps": num_warps, "num_stages": num_stages,
            "n_regs": compiled.n_regs, "n_spills": compiled.n_spills, "shared": compiled.metadata.shared,
        }
    except Exception as e:  # a report, never a reason to fail a launch
        LOADED[key] = {"kernel": kernel_name, "error": repr(e)}


def _specialisation(args: tuple) -> tuple:
    """What Triton's JIT specialises a variant on besides the constexprs: 16-byte alignment of the
    pointers, integers divisible by 16 or equal to 1."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a.data_ptr() % 16 == 0)
        elif isinstance(a, int):
            out.append((a % 16 == 0, a == 1))
    return tuple(out)


def _variant(kernel, args: tuple, ce: dict, num_warps: int, num_stages: int, dm: _plan.DeviceModel,
             device: torch.device) -> dict:
    """Compile (without launching) the variant these arguments select and check it against the
    device: {"problem": str or None, "occupancy": CTAs per SM}. Cached: one compile per variant.
    ``problem`` says why it cannot launch (shared memory or registers over the per-block limits);
    the launchers then take another variant or raise, instead of failing at launch."""
    key = (kernel.fn.__name__ if hasattr(kernel, "fn") else str(kernel), tuple(sorted(ce.items())), num_warps,
           num_stages, device.index, _specialisation(args))
    facts = _variant_cache.get(key)
    if facts is None:
        compiled = kernel.warmup(*args, grid=(1,), num_warps=num_warps, num_stages=num_stages, **ce)
        shared = int(compiled.metadata.shared)
        problem = None
        n_regs = None
        if shared > dm.smem_per_block:
            problem = _plan.resource_problem(0, shared, num_warps, dm)
        else:
            try:
                compiled._init_handles()
                n_regs = compiled.n_regs
                problem = _plan.resource_problem(n_regs, shared, num_warps, dm)
            except OutOfResources as e:
                problem = str(e)
        occ = 0 if problem else max(1, _plan.occupancy(n_regs or 255, shared, num_warps, dm))
        facts = _variant_cache[key] = {"problem": problem, "occupancy": occ, "shared": shared, "n_regs": n_regs}
    return facts


def _occupancy_fn(kernel, args: tuple, reset_after: bool, has_mask: bool, dot_prec: str, dm, device):
    """``f(blocks, tile_loop) -> CTAs per SM`` of the compiled persistent kernel on this device
    (0 where it cannot launch at all)."""

    def occ(blocks: _plan.Blocks, tile_loop: bool) -> int:
        probe = _plan.SeqPlan("", "persistent", 0, 0, torch.float32, blocks, 1, 1, 1, tile_loop)
        ce = seq_constexprs(probe, reset_after, has_mask, 0, dot_prec, False)
        return _variant(kernel, args, ce, blocks.num_warps, blocks.num_stages, dm, device)["occupancy"]

    return occ


def _plan_for(kernel_name: str, kernel, B: int, H: int, dtype, path: str, device, args,
              reset_after: bool, has_mask: bool, dot_prec: str) -> _plan.SeqPlan:
    on_gpu = _on_gpu(device)
    dm = _plan.device_model(device)
    occ = _occupancy_fn(kernel, args, reset_after, has_mask, dot_prec, dm, device) if on_gpu else None
    return _plan.plan_sequence(kernel_name, B, H, dtype, path, dm=dm, can_persist=on_gpu, occupancy_of=occ,
                               dot_prec=dot_prec)


def _check_launchable(kernel, args, plan: _plan.SeqPlan, ces: list[dict], device) -> None:
    """Raise, before anything is launched, where a variant of the plan does not fit the device."""
    if not _on_gpu(device):
        return
    dm = _plan.device_model(device)
    for ce in ces:
        problem = _variant(kernel, args, ce, plan.blocks.num_warps, plan.blocks.num_stages, dm, device)["problem"]
        if problem:
            raise RuntimeError(
                f"GRU {plan.kernel}: the {plan.path} kernel at H={plan.H} ({plan.dtype}) {problem}; "
                f"kernels/gru/plan.py plans no other variant for it")


# ---- the persistent kernels' barrier time-outs, checked without a per-launch host sync ----------

BARRIER_CHECKS = ("lazy", "sync")


class BarrierWatch:
    """The device's count of timed-out grid-barrier waits (the kernels add to it; it never
    decreases) and what the host has already reported of it.

    ``KERNELS_GRU_BARRIER_CHECK``: ``sync`` reads the count after every persistent launch (one host
    sync each: the default under Triton's interpreter, where it is free); ``lazy`` (the default on
    a GPU) never waits: after a launch it queues a copy of the count into pinned host memory on a
    side stream, and the next launch raises if a finished copy shows a new time-out. Either way
    :func:`check_barriers` syncs and raises on request; call it after replaying a CUDA graph (no
    copy is queued while a graph is being captured)."""

    _watches: dict[tuple, "BarrierWatch"] = {}

    def __init__(self, device: torch.device):
        self.device = device
        self.count = torch.zeros(1, dtype=torch.int64, device=device)
        self.reported = 0
        cuda = device.type == "cuda"
        self.host = torch.zeros(1, dtype=torch.int64, pin_memory=cuda)
        self.side = torch.cuda.Stream(device) if cuda else None
        self.copied = None  # event: the last queued copy into ``host`` has finished

    @classmethod
    def of(cls, device: torch.device) -> "BarrierWatch":
        key = _watch_key(device)
        if key not in cls._watches:
            cls._watches[key] = cls(device)
        return cls._watches[key]

    @staticmethod
    def mode() -> str:
        value = os.environ.get("KERNELS_GRU_BARRIER_CHECK", "")
        if not value:
            return "sync" if interpreter_enabled() else "lazy"
        if value not in BARRIER_CHECKS:
            raise ValueError(f"KERNELS_GRU_BARRIER_CHECK must be one of {BARRIER_CHECKS}, got {value!r}")
        return value

    def _raise_if_new(self, value: int, what: str, limit: int | None, earlier: bool) -> None:
        if value <= self.reported:
            return
        new, self.reported = value - self.reported, value
        when = ("a persistent launch before this call" if earlier else "this call") if what else "a persistent launch"
        raise RuntimeError(
            f"GRU {what or 'kernels'}: {new} grid barrier wait(s) of {when} timed out"
            f"{f' after {limit} polls' if limit is not None else ''} (its programs were not all running at once, "
            f"or one stalled); the results of that launch, and of everything computed from them, are invalid. "
            f"Use path='stepwise' (FusedGRU(..., path='stepwise') or gru_sequence(..., path='stepwise')), the same "
            f"kernel launched once per step, which needs no co-residency; KERNELS_GRU_SPIN_LIMIT sets the poll limit")

    def before_launch(self, what: str) -> None:
        """Lazy mode: raise if a finished copy of the count shows a time-out not yet reported."""
        if self.side is not None and torch.cuda.is_current_stream_capturing():
            return  # no event queries while a graph is captured
        if self.side is None:
            self._raise_if_new(int(self.count[0]), what, None, earlier=True)
        elif self.copied is not None and self.copied.query():
            self.copied = None
            self._raise_if_new(int(self.host[0]), what, None, earlier=True)

    def after_launch(self, what: str, limit: int) -> None:
        if self.mode() == "sync":
            self._raise_if_new(int(self.count[0]), what, limit, earlier=False)
            return
        if self.side is None or self.copied is not None or torch.cuda.is_current_stream_capturing():
            return
        done = torch.cuda.Event()
        done.record()
        with torch.cuda.stream(self.side):
            self.side.wait_event(done)
            self.host.copy_(self.count, non_blocking=True)
            self.copied = torch.cuda.Event()
            self.copied.record(self.side)

    def check(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.copied = None  # superseded by the count read now
        self._raise_if_new(int(self.count[0]), "", None, earlier=True)


def check_barriers(device: torch.device | str | None = None) -> None:
    """Wait for the device (all devices used so far when None) and raise ``RuntimeError`` if a grid
    barrier of a persistent launch timed out since the last report; the launchers check lazily
    (see :class:`BarrierWatch`), so call this where a result must be known valid now, e.g. after a
    CUDA graph replay or at the end of a training step."""
    if device is not None:
        watch = BarrierWatch._watches.get(_watch_key(torch.device(device)))
        if watch is not None:
            watch.check()
        return
    for watch in list(BarrierWatch._watches.values()):
        watch.check()


def _watch_key(device: torch.device) -> tuple:
    if device.type == "cuda":
        return ("cuda", device.index if device.index is not None else torch.cuda.current_device())
    return (device.type, 0)


# ---- sequence launchers -------------------------------------------------------------------------

def fused_gru_fwd(gi, h0, weight_hh, b_hn, mask, reset_after, path="auto", spin_limit=None, plan=None):
    """Forward over time. gi (T, B, 3H) float32, h0 (B, H) float32, weight_hh (3H, H), b_hn (H,)
    float32, mask (T, B) bool or None, path one of ``plan.PATHS``; ``plan`` (a ``SeqPlan``)
    overrides the choice (tests, the GPU check), ``spin_limit`` the grid barrier's poll limit.
    Returns hs (T + 1, B, H) float32 (h0 then the state after every step), gates (T, B, NG*H)
    float32 ([r, z, n, hn] for reset-after, [r, z, n] for reset-before) and the ``SeqPlan`` run."""
    _check_interpreter()
    T, B, G = gi.shape
    H = G // 3
    ng = 4 if reset_after else 3
    hs = gi.new_empty(T + 1, B, H)
    hs[0] = h0
    gates = gi.new_empty(T, B, ng * H)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(gi)
    rh = gi.new_empty(B, H) if not reset_after else gi.new_empty(1)
    plan = _launch_sequence("fwd", (gi, hs, weight_hh, b_hn, mask_u8, gates, rh), T, B, H, weight_hh.dtype,
                            gi.device, reset_after, mask is not None, path, spin_limit, plan)
    return hs, gates, plan


def fused_gru_bwd(dout, dh_n, hs, gates, weight_hh, mask, reset_after, path="auto", spin_limit=None,
                  plan=None):
    """Reverse time. dout (T, B, H) float32, dh_n (B, H) float32, hs and gates from
    :func:`fused_gru_fwd`, path one of ``plan.PATHS``; ``plan`` and ``spin_limit`` as there.
    Returns dG (T, B, 3H) float32 (dL/d(gi), exact zeros at masked steps), dh0 (B, H) float32,
    the ``SeqPlan`` run, and dgh_n (T, B, H) float32 = da_n * r for reset-after (None otherwise)."""
    _check_interpreter()
    T, B, H = dout.shape
    assert gates.shape[-1] // H == (4 if reset_after else 3)
    dG = dout.new_empty(T, B, 3 * H)
    dghn = dout.new_empty(T, B, H) if reset_after else dout.new_empty(1)
    dh = dh_n.clone()
    carry = dout.new_empty(B, H)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(dout)
    plan = _launch_sequence("bwd", (dout, hs, gates, weight_hh, mask_u8, dG, dghn, dh, carry), T, B, H,
                            weight_hh.dtype, dout.device, reset_after, mask is not None, path, spin_limit, plan)
    return dG, dh, plan, (dghn if reset_after else None)


def _launch_sequence(kind, tensors, T, B, H, w_dtype, device, reset_after, has_mask, path, spin_limit, plan):
    """The launch algorithm of both directions: plan (unless ``plan`` is given), check that every
    variant fits the device, launch (stepwise: one launch per stage of every step, forward or back
    in time), watch the grid barrier, record the loaded binaries. ``kind`` "fwd" or "bwd";
    ``tensors`` the kernel's pointer arguments before SYNC. Returns the ``SeqPlan`` run."""
    kernel, name, what = _SEQ_KERNELS[kind]
    first, steps = (0, range(T)) if kind == "fwd" else (T - 1, range(T - 1, -1, -1))
    dot_prec, upcast = _dot_precision(w_dtype), _upcast(w_dtype)
    limit = _plan.spin_limit() if spin_limit is None else spin_limit
    watch = BarrierWatch.of(device)
    sync = torch.zeros(1, dtype=torch.int64, device=device)

    def args(t_start, n_steps):
        return (*tensors, sync, watch.count, t_start, n_steps, B, H, limit)

    if plan is None:
        plan = _plan_for(kind, kernel, B, H, w_dtype, path, device, args(first, T), reset_after, has_mask, dot_prec)
    if plan.persistent:
        watch.before_launch(what)
        sync = torch.zeros(plan.n_groups, dtype=torch.int64, device=device)  # a counter per group
    nw, ns = plan.blocks.num_warps, plan.blocks.num_stages
    ces = [seq_constexprs(plan, reset_after, has_mask, stage, dot_prec, upcast)
           for stage in _plan.launch_stages(plan, reset_after)]
    _check_launchable(kernel, args(first, T), plan, ces, device)
    if plan.path == "stepwise":
        for t in steps:
            ks = [kernel[plan.grid](*args(t, 1), num_warps=nw, num_stages=ns, **ce) for ce in ces]
    else:
        ks = [kernel[plan.grid](*args(first, T), num_warps=nw, num_stages=ns, **ces[0])]
        if plan.persistent:
            watch.after_launch(what, limit)
    for k, ce in zip(ks, ces):
        _record(name, k, ce, nw, ns)
    return plan


#: kind -> (kernel, its name in LOADED, what the barrier's messages call it)
_SEQ_KERNELS = {"fwd": (_gru_fwd_kernel, "_gru_fwd_kernel", "forward"),
                "bwd": (_gru_bwd_kernel, "_gru_bwd_kernel", "backward")}


# ---- Triton's interpreter and NumPy ---------------------------------------------------------------

_interpreter_ok: bool | None = None


def _check_interpreter() -> None:
    """Under Triton's interpreter, fail once with the fix where this Triton cannot run our kernels
    with the installed NumPy: Triton 3.6's interpreter turns a scalar argument into a one-element
    array and calls ``int()`` on it (``range(0, H, ...)``), which NumPy 2.4 refuses (``TypeError:
    only 0-dimensional arrays can be converted to Python scalars``); Triton 3.9's does not."""
    global _interpreter_ok
    if _interpreter_ok or not interpreter_enabled():
        return
    if _interpreter_ok is None:
        n = torch.zeros(1, dtype=torch.int32)
        try:
            _interpreter_probe[(1,)](n, 3)
            _interpreter_ok = int(n[0]) == 3
        except Exception:  # the interpreter wraps the TypeError in its own error type
            _interpreter_ok = False
    if not _interpreter_ok:
        import numpy

        raise RuntimeError(
            f"Triton {triton.__version__}'s interpreter (TRITON_INTERPRET=1) cannot run a loop over a scalar "
            f"argument with NumPy {numpy.__version__} (Triton before 3.9 calls int() on one-element arrays, which "
            f"NumPy 2.4 refuses); install NumPy < 2.4 beside this Triton (pip install 'numpy<2.4'), or Triton >= 3.9")


@triton.jit
def _interpreter_probe(N, n):
    acc = 0
    for _ in range(0, n):
        acc += 1
    tl.store(N, acc)
