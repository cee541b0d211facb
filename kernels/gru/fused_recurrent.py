"""Fused Triton kernels for the GRU recurrence: forward over a sequence, reverse-time backward, and a
single step on a gathered/scattered state table. Host launchers at the bottom; which path runs with
which block sizes and grid is decided in ``plan.py``; ``kernels/README.md`` has the overview.

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

import torch
import triton
import triton.language as tl

from kernels.gru import plan as _plan
from kernels.gru.backend import interpreter_enabled, log

_POISON = tl.constexpr(_plan.POISON)


@triton.jit
def _tanh(x):
    # tl has no portable tanh (libdevice differs per backend and the interpreter); 2*sigmoid(2x)-1
    # is exact in float32 to ~1e-7 absolute, which is below every tolerance we test.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


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
def _mm(acc, base, stride, rl, rmask, H, w0, w1, w2, w3, w4, w5, w6, w7,
        NCHUNK: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + rows (BB, H) @ [w0; w1; ...] over the NCHUNK resident (BLOCK_K, N) tiles, one row chunk
    loaded per tile (so the dot operands live at once stay (BB, BLOCK_K)). Unused w's are dummies."""
    acc = _dot(_row_tile(base, stride, rl, rmask, 0, H, BLOCK_K), w0, acc, DOT_PREC, UPCAST)
    if NCHUNK > 1:
        acc = _dot(_row_tile(base, stride, rl, rmask, BLOCK_K, H, BLOCK_K), w1, acc, DOT_PREC, UPCAST)
    if NCHUNK > 2:
        acc = _dot(_row_tile(base, stride, rl, rmask, 2 * BLOCK_K, H, BLOCK_K), w2, acc, DOT_PREC, UPCAST)
    if NCHUNK > 3:
        acc = _dot(_row_tile(base, stride, rl, rmask, 3 * BLOCK_K, H, BLOCK_K), w3, acc, DOT_PREC, UPCAST)
    if NCHUNK > 4:
        acc = _dot(_row_tile(base, stride, rl, rmask, 4 * BLOCK_K, H, BLOCK_K), w4, acc, DOT_PREC, UPCAST)
    if NCHUNK > 5:
        acc = _dot(_row_tile(base, stride, rl, rmask, 5 * BLOCK_K, H, BLOCK_K), w5, acc, DOT_PREC, UPCAST)
    if NCHUNK > 6:
        acc = _dot(_row_tile(base, stride, rl, rmask, 6 * BLOCK_K, H, BLOCK_K), w6, acc, DOT_PREC, UPCAST)
    if NCHUNK > 7:
        acc = _dot(_row_tile(base, stride, rl, rmask, 7 * BLOCK_K, H, BLOCK_K), w7, acc, DOT_PREC, UPCAST)
    return acc


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
def _group_barrier(SYNC, target, spin_limit):
    """Grid barrier among the programs sharing SYNC: each adds 1 (release: its stores of this step,
    ordered before the add by the CTA barrier, become visible), then polls (acquire) until the
    counter reaches ``target``. Past ``spin_limit`` polls it adds POISON: every member passes this
    and every later barrier at once, the launch ends, and the host sees counter >= POISON."""
    tl.debug_barrier()
    cur = tl.atomic_add(SYNC, 1, sem="acq_rel", scope="gpu") + 1
    spins = 0
    while (cur < target) & (spins < spin_limit):
        cur = tl.atomic_add(SYNC, 0, sem="acquire", scope="gpu")
        spins += 1
    if cur < target:
        tl.atomic_add(SYNC, _POISON, sem="release", scope="gpu")
    tl.debug_barrier()


@triton.jit(do_not_specialize=["t_start", "n_steps", "spin_limit"])
def _gru_fwd_kernel(
    GI, HS, W, BHN, MASK, GATES, RH, SYNC, t_start, n_steps, B, H, spin_limit,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NCHUNK: tl.constexpr,
    RESIDENT: tl.constexpr, ONE_BLOCK: tl.constexpr, STAGE: tl.constexpr, PERSISTENT: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, NG: tl.constexpr, GW: tl.constexpr,
    TILE_LOOP: tl.constexpr, ONE_STEP: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """Steps t_start .. t_start + n_steps - 1. HS (T+1, B, H): HS[t] is the state entering step t.
    GATES (T, B, NG*H): [r, z, n(, hn)]. RH (B, H): r * h_{t-1} for the reset-before exchange.
    STAGE 0 runs whole steps; 1 and 2 the halves of a reset-before step (one launch each).
    GW: 4 for reset-after ([r, z, n, 0] interleaved in one dot), 2 for reset-before ([r, z]; n
    takes r * h, a second dot)."""
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
        # the program's slice of W_hh, on chip for the whole launch: NCHUNK tiles (the rest of
        # the eight are unused stand-ins)
        wg0 = _w_gates(W, H, 0, col0, BLOCK_K, BLOCK_N, GW)
        wg1 = wg0
        wg2 = wg0
        wg3 = wg0
        wg4 = wg0
        wg5 = wg0
        wg6 = wg0
        wg7 = wg0
        if NCHUNK > 1:
            wg1 = _w_gates(W, H, BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if NCHUNK > 2:
            wg2 = _w_gates(W, H, 2 * BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if NCHUNK > 3:
            wg3 = _w_gates(W, H, 3 * BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if NCHUNK > 4:
            wg4 = _w_gates(W, H, 4 * BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if NCHUNK > 5:
            wg5 = _w_gates(W, H, 5 * BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if NCHUNK > 6:
            wg6 = _w_gates(W, H, 6 * BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if NCHUNK > 7:
            wg7 = _w_gates(W, H, 7 * BLOCK_K, col0, BLOCK_K, BLOCK_N, GW)
        if not RESET_AFTER:
            wn0 = _w_tile(W, H, 2, 0, cols, cm, BLOCK_K, False)
            wn1 = wn0
            wn2 = wn0
            wn3 = wn0
            wn4 = wn0
            wn5 = wn0
            wn6 = wn0
            wn7 = wn0
            if NCHUNK > 1:
                wn1 = _w_tile(W, H, 2, BLOCK_K, cols, cm, BLOCK_K, False)
            if NCHUNK > 2:
                wn2 = _w_tile(W, H, 2, 2 * BLOCK_K, cols, cm, BLOCK_K, False)
            if NCHUNK > 3:
                wn3 = _w_tile(W, H, 2, 3 * BLOCK_K, cols, cm, BLOCK_K, False)
            if NCHUNK > 4:
                wn4 = _w_tile(W, H, 2, 4 * BLOCK_K, cols, cm, BLOCK_K, False)
            if NCHUNK > 5:
                wn5 = _w_tile(W, H, 2, 5 * BLOCK_K, cols, cm, BLOCK_K, False)
            if NCHUNK > 6:
                wn6 = _w_tile(W, H, 2, 6 * BLOCK_K, cols, cm, BLOCK_K, False)
            if NCHUNK > 7:
                wn7 = _w_tile(W, H, 2, 7 * BLOCK_K, cols, cm, BLOCK_K, False)
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
                    acc = _dot(h, wg0, acc, DOT_PREC, UPCAST)
                elif RESIDENT:
                    acc = _mm(acc, hb, H, rl, rmask, H, wg0, wg1, wg2, wg3, wg4, wg5, wg6, wg7,
                              NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                else:
                    # H too large for the slice to stay on chip: W tiles re-read (L2) every step
                    for k0 in range(0, H, BLOCK_K):
                        acc = _dot(_row_tile(hb, H, rl, rmask, k0, H, BLOCK_K),
                                   _w_gates(W, H, k0, col0, BLOCK_K, BLOCK_N, GW), acc, DOT_PREC, UPCAST)
                acc_r, acc_z, acc_n = _split_gates(acc, BLOCK_B, BLOCK_N, GW)
                r = tl.sigmoid(tl.load(ib + o_i, mask=m2, other=0.0) + acc_r)
                z = tl.sigmoid(tl.load(ib + o_i + H, mask=m2, other=0.0) + acc_z)
                if ONE_BLOCK:
                    hp = h
                else:
                    hp = tl.load(hb + o_h, mask=m2, other=0.0, cache_modifier=".cg")
                tl.store(gb + o_g, r, mask=m2)
                tl.store(gb + o_g + H, z, mask=m2)
                if RESET_AFTER:
                    hn = acc_n + b_hn[None, :]
                    n = _tanh(tl.load(ib + o_i + 2 * H, mask=m2, other=0.0) + r * hn)
                    tl.store(gb + o_g + 3 * H, hn, mask=m2)
                elif ONE_BLOCK:
                    acc_n = _dot(r * hp, wn0, tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), DOT_PREC, UPCAST)
                    n = _tanh(tl.load(ib + o_i + 2 * H, mask=m2, other=0.0) + acc_n)
                else:
                    tl.store(RH + row0 * H + o_h, r * hp, mask=m2)
                if RESET_AFTER or ONE_BLOCK:
                    h_new = n + z * (hp - n)
                    if HAS_MASK:
                        h_new = tl.where(keep[:, None], h_new, hp)
                    tl.store(_at(HS, t + 1, B, row0, H) + o_h, h_new, mask=m2)
                    tl.store(gb + o_g + 2 * H, n, mask=m2)
            if (not RESET_AFTER) and (not ONE_BLOCK) and STAGE != 1:
                # reset-before: W_hn (r * h) needs r of every column of the tile
                if PERSISTENT:
                    target += n_col
                    _group_barrier(SYNC + pg, target, spin_limit)
                rb = RH + row0 * H
                acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                if RESIDENT:
                    acc_n = _mm(acc_n, rb, H, rl, rmask, H, wn0, wn1, wn2, wn3, wn4, wn5, wn6, wn7,
                                NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                else:
                    for k0 in range(0, H, BLOCK_K):
                        acc_n = _dot(_row_tile(rb, H, rl, rmask, k0, H, BLOCK_K),
                                     _w_tile(W, H, 2, k0, cols, cm, BLOCK_K, False), acc_n, DOT_PREC, UPCAST)
                n = _tanh(tl.load(ib + o_i + 2 * H, mask=m2, other=0.0) + acc_n)
                if STAGE == 2:
                    z = tl.load(gb + o_g + H, mask=m2, other=0.0)
                    hp = tl.load(hb + o_h, mask=m2, other=0.0)
                h_new = n + z * (hp - n)
                if HAS_MASK:
                    h_new = tl.where(keep[:, None], h_new, hp)
                tl.store(_at(HS, t + 1, B, row0, H) + o_h, h_new, mask=m2)
                tl.store(gb + o_g + 2 * H, n, mask=m2)
            if PERSISTENT:
                # step t+1 reads the columns every program of the tile wrote
                target += n_col
                _group_barrier(SYNC + pg, target, spin_limit)
            if ONE_BLOCK:
                h = h_new


@triton.jit(do_not_specialize=["t_start", "n_steps", "spin_limit"])
def _gru_bwd_kernel(
    DOUT, HS, GATES, W, MASK, DG, DGHN, DH, CARRY, SYNC, t_start, n_steps, B, H, spin_limit,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NCHUNK: tl.constexpr,
    RESIDENT: tl.constexpr, ONE_BLOCK: tl.constexpr, STAGE: tl.constexpr, PERSISTENT: tl.constexpr,
    RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr, NG: tl.constexpr, GW: tl.constexpr,
    TILE_LOOP: tl.constexpr, ONE_STEP: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """Reverse time: steps t_start, t_start - 1, ..., t_start - n_steps + 1 (derivation: common.py).
    DH (B, H): dL/dh_T on entry, dL/dh0 on exit (stepwise: dL/dh_t between launches).
    DG (T, B, 3H): [da_r, da_z, da_n] = dL/d(gi_t). DGHN (T, B, H), reset-after only: dgh_n =
    da_n * r, the n-gate's gradient behind the reset gate (phase B reads it; so do the weight
    gradients). CARRY (B, H): the column-local part of dL/dh_{t-1} between the stepwise stages.
    Stages: 1 column-local terms, 2 (reset-before) d(r*h) = da_n W_hn, 3 dL/dh_{t-1} = carry +
    dG W_hh; 0 runs all three in one launch. GW is unused here (one signature for the report)."""
    pc = tl.program_id(0)
    pg = tl.program_id(1)
    n_col = tl.num_programs(0)
    n_groups = tl.num_programs(1)
    n_tiles = tl.cdiv(B, BLOCK_B)
    cols = pc * BLOCK_N + tl.arange(0, BLOCK_N)
    cm = cols < H
    rl = tl.arange(0, BLOCK_B)
    if RESIDENT:
        wr0 = _w_tile(W, H, 0, 0, cols, cm, BLOCK_K, True)
        wz0 = _w_tile(W, H, 1, 0, cols, cm, BLOCK_K, True)
        wn0 = _w_tile(W, H, 2, 0, cols, cm, BLOCK_K, True)
        wr1 = wr0
        wr2 = wr0
        wr3 = wr0
        wr4 = wr0
        wr5 = wr0
        wr6 = wr0
        wr7 = wr0
        wz1 = wz0
        wz2 = wz0
        wz3 = wz0
        wz4 = wz0
        wz5 = wz0
        wz6 = wz0
        wz7 = wz0
        wn1 = wn0
        wn2 = wn0
        wn3 = wn0
        wn4 = wn0
        wn5 = wn0
        wn6 = wn0
        wn7 = wn0
        if NCHUNK > 1:
            wr1 = _w_tile(W, H, 0, BLOCK_K, cols, cm, BLOCK_K, True)
            wz1 = _w_tile(W, H, 1, BLOCK_K, cols, cm, BLOCK_K, True)
            wn1 = _w_tile(W, H, 2, BLOCK_K, cols, cm, BLOCK_K, True)
        if NCHUNK > 2:
            wr2 = _w_tile(W, H, 0, 2 * BLOCK_K, cols, cm, BLOCK_K, True)
            wz2 = _w_tile(W, H, 1, 2 * BLOCK_K, cols, cm, BLOCK_K, True)
            wn2 = _w_tile(W, H, 2, 2 * BLOCK_K, cols, cm, BLOCK_K, True)
        if NCHUNK > 3:
            wr3 = _w_tile(W, H, 0, 3 * BLOCK_K, cols, cm, BLOCK_K, True)
            wz3 = _w_tile(W, H, 1, 3 * BLOCK_K, cols, cm, BLOCK_K, True)
            wn3 = _w_tile(W, H, 2, 3 * BLOCK_K, cols, cm, BLOCK_K, True)
        if NCHUNK > 4:
            wr4 = _w_tile(W, H, 0, 4 * BLOCK_K, cols, cm, BLOCK_K, True)
            wz4 = _w_tile(W, H, 1, 4 * BLOCK_K, cols, cm, BLOCK_K, True)
            wn4 = _w_tile(W, H, 2, 4 * BLOCK_K, cols, cm, BLOCK_K, True)
        if NCHUNK > 5:
            wr5 = _w_tile(W, H, 0, 5 * BLOCK_K, cols, cm, BLOCK_K, True)
            wz5 = _w_tile(W, H, 1, 5 * BLOCK_K, cols, cm, BLOCK_K, True)
            wn5 = _w_tile(W, H, 2, 5 * BLOCK_K, cols, cm, BLOCK_K, True)
        if NCHUNK > 6:
            wr6 = _w_tile(W, H, 0, 6 * BLOCK_K, cols, cm, BLOCK_K, True)
            wz6 = _w_tile(W, H, 1, 6 * BLOCK_K, cols, cm, BLOCK_K, True)
            wn6 = _w_tile(W, H, 2, 6 * BLOCK_K, cols, cm, BLOCK_K, True)
        if NCHUNK > 7:
            wr7 = _w_tile(W, H, 0, 7 * BLOCK_K, cols, cm, BLOCK_K, True)
            wz7 = _w_tile(W, H, 1, 7 * BLOCK_K, cols, cm, BLOCK_K, True)
            wn7 = _w_tile(W, H, 2, 7 * BLOCK_K, cols, cm, BLOCK_K, True)
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
                    _group_barrier(SYNC + pg, target, spin_limit)
                if STAGE == 2:
                    carry = tl.load(CARRY + sb + o_h, mask=m2, other=0.0)
                    hp = tl.load(hb + o_h, mask=m2, other=0.0)
                    r = tl.load(gb + o_g, mask=m2, other=0.0)
                drh = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                if ONE_BLOCK:
                    drh = _dot(dan, wn0, drh, DOT_PREC, UPCAST)
                elif RESIDENT:
                    drh = _mm(drh, db + 2 * H, 3 * H, rl, rmask, H, wn0, wn1, wn2, wn3, wn4, wn5, wn6, wn7,
                              NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
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
                    _group_barrier(SYNC + pg, target, spin_limit)
                if STAGE == 3:
                    carry = tl.load(CARRY + sb + o_h, mask=m2, other=0.0)
                acc = carry
                if ONE_BLOCK:
                    acc = _dot(dar, wr0, acc, DOT_PREC, UPCAST)
                    acc = _dot(daz, wz0, acc, DOT_PREC, UPCAST)
                    if RESET_AFTER:
                        acc = _dot(dghn, wn0, acc, DOT_PREC, UPCAST)
                elif RESIDENT:
                    acc = _mm(acc, db, 3 * H, rl, rmask, H, wr0, wr1, wr2, wr3, wr4, wr5, wr6, wr7,
                              NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                    acc = _mm(acc, db + H, 3 * H, rl, rmask, H, wz0, wz1, wz2, wz3, wz4, wz5, wz6, wz7,
                              NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
                    if RESET_AFTER:
                        acc = _mm(acc, nb, H, rl, rmask, H, wn0, wn1, wn2, wn3, wn4, wn5, wn6, wn7,
                                  NCHUNK, BLOCK_K, DOT_PREC, UPCAST)
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


@triton.jit
def _gru_step_kernel(
    X, WIH, BIAS, GI, S, IDX, W, BHN, MASK, OUT, RH, M, H, I,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_I: tl.constexpr,
    FUSE_INPUT: tl.constexpr, RESET_AFTER: tl.constexpr, HAS_MASK: tl.constexpr,
    DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """One step of BLOCK_B gathered rows, every column, in place on the table S (N, H).

    The old state of the tile, h = S[idx] (BLOCK_B, BLOCK_K >= H), is held in registers for the
    whole program, so each column block can write its new state straight into S: nothing reads a
    column after it is written. FUSE_INPUT computes gi = x W_ih^T + BIAS per column block from
    X (M, I) instead of reading a precomputed GI (M, 3H): for small I that saves the (M, 3H) float32
    round trip, 3x the bytes of the state itself. Reset-before needs r of every column before
    W_hn (r * h): a first pass writes r * h to RH (M, H) and z to OUT, a second finishes."""
    rl = tl.arange(0, BLOCK_B)
    row0 = tl.program_id(0) * BLOCK_B
    rmask = row0 + rl < M
    keep = rmask
    if HAS_MASK:
        keep = tl.load(MASK + row0 + rl, mask=rmask, other=0) != 0
    srow = tl.load(IDX + row0 + rl, mask=rmask, other=0) * H  # int64: the table can be large
    ks = tl.arange(0, BLOCK_K)
    h = tl.load(S + srow[:, None] + ks[None, :], mask=rmask[:, None] & (ks < H)[None, :], other=0.0)
    ob = OUT + row0.to(tl.int64) * H
    if FUSE_INPUT:
        ii = tl.arange(0, BLOCK_I)
        x = tl.load(X + row0.to(tl.int64) * I + rl[:, None] * I + ii[None, :],
                    mask=rmask[:, None] & (ii < I)[None, :], other=0.0)
    else:
        ib = GI + row0.to(tl.int64) * (3 * H)
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
            gi_r = _input_gate(tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), x, WIH, BIAS, 0, cols, cm,
                               H, I, BLOCK_I, DOT_PREC, UPCAST)
            gi_z = _input_gate(tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), x, WIH, BIAS, 1, cols, cm,
                               H, I, BLOCK_I, DOT_PREC, UPCAST)
        else:
            o_i = rl[:, None] * (3 * H) + cols[None, :]
            gi_r = tl.load(ib + o_i, mask=m2, other=0.0)
            gi_z = tl.load(ib + o_i + H, mask=m2, other=0.0)
        r = tl.sigmoid(gi_r + acc_r)
        z = tl.sigmoid(gi_z + acc_z)
        sp = S + srow[:, None] + cols[None, :]
        hp = tl.load(sp, mask=m2, other=0.0)
        if RESET_AFTER:
            if FUSE_INPUT:
                gi_n = _input_gate(tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), x, WIH, BIAS, 2, cols,
                                   cm, H, I, BLOCK_I, DOT_PREC, UPCAST)
            else:
                gi_n = tl.load(ib + o_i + 2 * H, mask=m2, other=0.0)
            n = _tanh(gi_n + r * (acc_n + tl.load(BHN + cols, mask=cm, other=0.0)[None, :]))
            h_new = n + z * (hp - n)
            if HAS_MASK:
                h_new = tl.where(keep[:, None], h_new, hp)
            tl.store(ob + o_h, h_new, mask=m2)
            tl.store(sp, h_new, mask=m2)
        else:
            tl.store(RH + row0.to(tl.int64) * H + o_h, r * hp, mask=m2)
            tl.store(ob + o_h, z, mask=m2)
    if not RESET_AFTER:
        # r * h of every column is in RH, written by other threads of this program
        tl.debug_barrier()
        rh = tl.load(RH + row0.to(tl.int64) * H + rl[:, None] * H + ks[None, :],
                     mask=rmask[:, None] & (ks < H)[None, :], other=0.0)
        for j0 in range(0, H, BLOCK_N):
            cols = j0 + cols_n
            cm = cols < H
            m2 = rmask[:, None] & cm[None, :]
            o_h = rl[:, None] * H + cols[None, :]
            acc_n = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
            acc_n = _dot(rh, _w_tile(W, H, 2, 0, cols, cm, BLOCK_K, False), acc_n, DOT_PREC, UPCAST)
            if FUSE_INPUT:
                gi_n = _input_gate(tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), x, WIH, BIAS, 2, cols,
                                   cm, H, I, BLOCK_I, DOT_PREC, UPCAST)
            else:
                gi_n = tl.load(ib + rl[:, None] * (3 * H) + 2 * H + cols[None, :], mask=m2, other=0.0)
            n = _tanh(gi_n + acc_n)
            z = tl.load(ob + o_h, mask=m2, other=0.0)
            sp = S + srow[:, None] + cols[None, :]
            hp = tl.load(sp, mask=m2, other=0.0)
            h_new = n + z * (hp - n)
            if HAS_MASK:
                h_new = tl.where(keep[:, None], h_new, hp)
            tl.store(ob + o_h, h_new, mask=m2)
            tl.store(sp, h_new, mask=m2)


@triton.jit
def _input_gate(acc, x, WIH, BIAS, gate, cols, cm, H, I, BLOCK_I: tl.constexpr, DOT_PREC: tl.constexpr,
                UPCAST: tl.constexpr):
    """acc (zeros) + x (BB, BLOCK_I) @ W_ih[gate*H + cols, :]^T + BIAS[gate*H + cols]; BIAS (3H,)
    float32 holds every bias that adds to this gate's input part."""
    ii = tl.arange(0, BLOCK_I)
    w = tl.load(WIH + (gate * H + cols[None, :]) * I + ii[:, None], mask=(ii < I)[:, None] & cm[None, :], other=0.0)
    acc = _dot(x, w, acc, DOT_PREC, UPCAST)
    return acc + tl.load(BIAS + gate * H + cols, mask=cm, other=0.0)[None, :]


# ------------------------------------------------------------------------------------------------
# host launchers

#: facts about every kernel variant launched on a GPU in this process, keyed by (kernel, config):
#: registers and spills of the loaded binary, shared memory, warps. The GPU check reports them.
LOADED: dict[tuple, dict] = {}

_occupancy_cache: dict[tuple, int] = {}


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 follows torch's TF32 switch for matmuls (torch.backends.cuda.matmul.allow_tf32)
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32" if dtype == torch.float32 else "ieee"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and interpreter_enabled()


def _dummy(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(1, dtype=torch.uint8)


def seq_constexprs(plan: _plan.SeqPlan, reset_after: bool, has_mask: bool, stage: int,
                   dot_prec: str, upcast: bool) -> dict:
    """The tl.constexpr arguments of a sequence kernel launch (the compile report uses them too)."""
    b = plan.blocks
    return dict(
        BLOCK_B=b.block_b, BLOCK_N=b.block_n, BLOCK_K=b.block_k, NCHUNK=b.nchunk, RESIDENT=b.resident,
        ONE_BLOCK=b.one_block, STAGE=stage, PERSISTENT=plan.path == "persistent",
        RESET_AFTER=reset_after, HAS_MASK=has_mask, NG=4 if reset_after else 3, GW=4 if reset_after else 2,
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


def _occupancy_fn(kernel, args: tuple, reset_after: bool, has_mask: bool, dot_prec: str, dm):
    """``f(blocks, tile_loop) -> CTAs per SM`` of the compiled persistent kernel on this device."""

    def occ(blocks: _plan.Blocks, tile_loop: bool) -> int:
        probe = _plan.SeqPlan("", "persistent", 0, 0, torch.float32, blocks, 1, 1, 1, tile_loop)
        ce = seq_constexprs(probe, reset_after, has_mask, 0, dot_prec, False)
        key = (kernel.__name__ if hasattr(kernel, "__name__") else str(kernel), tuple(sorted(ce.items())),
               blocks.num_warps, dm)
        if key not in _occupancy_cache:
            try:
                compiled = kernel.warmup(*args, grid=(1, 1), num_warps=blocks.num_warps,
                                         num_stages=blocks.num_stages, **ce)
                compiled._init_handles()
                occ = _plan.occupancy(compiled.n_regs, compiled.metadata.shared, blocks.num_warps, dm)
            except Exception as e:  # a Triton without these internals: one CTA per SM is always safe
                log.warning("GRU kernels: could not read the compiled kernel's resources (%r); "
                            "sizing the persistent grid for one program per SM", e)
                occ = 1
            _occupancy_cache[key] = max(occ, 1)
        return _occupancy_cache[key]

    return occ


def _plan_for(kernel_name: str, kernel, B: int, H: int, dtype, path: str, device, args,
              reset_after: bool, has_mask: bool, dot_prec: str) -> _plan.SeqPlan:
    on_gpu = device.type == "cuda" and not interpreter_enabled()
    dm = _plan.device_model(device)
    occ = _occupancy_fn(kernel, args, reset_after, has_mask, dot_prec, dm) if on_gpu else None
    return _plan.plan_sequence(kernel_name, B, H, dtype, path, dm=dm, can_persist=on_gpu, occupancy_of=occ)


def _check_barrier(sync: torch.Tensor, what: str, limit: int) -> None:
    if int(sync.max()) >= _plan.POISON:
        raise RuntimeError(
            f"GRU {what}: a grid barrier of the persistent kernel timed out after {limit} polls "
            f"(its programs were not all running at once, or one stalled); the results of this call are "
            f"invalid. Use path='stepwise' (FusedGRU(..., path='stepwise') or gru_sequence(..., "
            f"path='stepwise')), the same kernel launched once per step, which needs no co-residency; "
            f"KERNELS_GRU_SPIN_LIMIT sets the poll limit"
        )


def fused_gru_fwd(gi, h0, weight_hh, b_hn, mask, reset_after, path="auto", spin_limit=None, plan=None):
    """Forward over time. gi (T, B, 3H) float32, h0 (B, H) float32, weight_hh (3H, H), b_hn (H,)
    float32, mask (T, B) bool or None, path one of ``plan.PATHS``; ``plan`` (a ``SeqPlan``)
    overrides the choice (tests, the GPU check), ``spin_limit`` the grid barrier's poll limit.
    Returns hs (T + 1, B, H) float32 (h0 then the state after every step), gates (T, B, NG*H)
    float32 ([r, z, n, hn] for reset-after, [r, z, n] for reset-before) and the ``SeqPlan`` run."""
    T, B, G = gi.shape
    H = G // 3
    ng = 4 if reset_after else 3
    hs = gi.new_empty(T + 1, B, H)
    hs[0] = h0
    gates = gi.new_empty(T, B, ng * H)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(gi)
    dot_prec, upcast = _dot_precision(weight_hh.dtype), _upcast(weight_hh.dtype)
    limit = _plan.spin_limit() if spin_limit is None else spin_limit
    rh = gi.new_empty(B, H) if not reset_after else gi.new_empty(1)
    sync = torch.zeros(1, dtype=torch.int64, device=gi.device)

    def args(t_start, n_steps):
        return (gi, hs, weight_hh, b_hn, mask_u8, gates, rh, sync, t_start, n_steps, B, H, limit)

    if plan is None:
        plan = _plan_for("fwd", _gru_fwd_kernel, B, H, weight_hh.dtype, path, gi.device, args(0, T),
                         reset_after, mask is not None, dot_prec)
    if plan.persistent:
        sync = torch.zeros(plan.n_groups, dtype=torch.int64, device=gi.device)  # a counter per group
    nw, ns = plan.blocks.num_warps, plan.blocks.num_stages
    if plan.path == "stepwise":
        stages = (0,) if reset_after else (1, 2)
        for t in range(T):
            for stage in stages:
                ce = seq_constexprs(plan, reset_after, mask is not None, stage, dot_prec, upcast)
                k = _gru_fwd_kernel[plan.grid](*args(t, 1), num_warps=nw, num_stages=ns, **ce)
        _record("_gru_fwd_kernel", k, ce, nw, ns)
    else:
        ce = seq_constexprs(plan, reset_after, mask is not None, 0, dot_prec, upcast)
        k = _gru_fwd_kernel[plan.grid](*args(0, T), num_warps=nw, num_stages=ns, **ce)
        _record("_gru_fwd_kernel", k, ce, nw, ns)
        if plan.persistent:
            _check_barrier(sync, "forward", limit)
    return hs, gates, plan


def fused_gru_bwd(dout, dh_n, hs, gates, weight_hh, mask, reset_after, path="auto", spin_limit=None,
                  plan=None):
    """Reverse time. dout (T, B, H) float32, dh_n (B, H) float32, hs and gates from
    :func:`fused_gru_fwd`, path one of ``plan.PATHS``; ``plan`` and ``spin_limit`` as there.
    Returns dG (T, B, 3H) float32 (dL/d(gi), exact zeros at masked steps), dh0 (B, H) float32,
    the ``SeqPlan`` run, and dgh_n (T, B, H) float32 = da_n * r for reset-after (None otherwise)."""
    T, B, H = dout.shape
    ng = gates.shape[-1] // H
    dG = dout.new_empty(T, B, 3 * H)
    dghn = dout.new_empty(T, B, H) if reset_after else dout.new_empty(1)
    dh = dh_n.clone()
    carry = dout.new_empty(B, H)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(dout)
    dot_prec, upcast = _dot_precision(weight_hh.dtype), _upcast(weight_hh.dtype)
    limit = _plan.spin_limit() if spin_limit is None else spin_limit
    sync = torch.zeros(1, dtype=torch.int64, device=dout.device)

    def args(t_start, n_steps):
        return (dout, hs, gates, weight_hh, mask_u8, dG, dghn, dh, carry, sync, t_start, n_steps, B, H, limit)

    if plan is None:
        plan = _plan_for("bwd", _gru_bwd_kernel, B, H, weight_hh.dtype, path, dout.device, args(T - 1, T),
                         reset_after, mask is not None, dot_prec)
    if plan.persistent:
        sync = torch.zeros(plan.n_groups, dtype=torch.int64, device=dout.device)  # a counter per group
    assert ng == (4 if reset_after else 3)
    nw, ns = plan.blocks.num_warps, plan.blocks.num_stages
    if plan.path == "stepwise":
        stages = (1, 3) if reset_after else (1, 2, 3)
        for t in range(T - 1, -1, -1):
            for stage in stages:
                ce = seq_constexprs(plan, reset_after, mask is not None, stage, dot_prec, upcast)
                k = _gru_bwd_kernel[plan.grid](*args(t, 1), num_warps=nw, num_stages=ns, **ce)
        _record("_gru_bwd_kernel", k, ce, nw, ns)
    else:
        ce = seq_constexprs(plan, reset_after, mask is not None, 0, dot_prec, upcast)
        k = _gru_bwd_kernel[plan.grid](*args(T - 1, T), num_warps=nw, num_stages=ns, **ce)
        _record("_gru_bwd_kernel", k, ce, nw, ns)
        if plan.persistent:
            _check_barrier(sync, "backward", limit)
    return dG, dh, plan, (dghn if reset_after else None)


def step_constexprs(plan: _plan.StepPlan, reset_after: bool, has_mask: bool, dot_prec: str,
                    upcast: bool) -> dict:
    return dict(BLOCK_B=plan.block_b, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, BLOCK_I=plan.block_i,
                FUSE_INPUT=plan.fuse_input, RESET_AFTER=reset_after, HAS_MASK=has_mask,
                DOT_PREC=dot_prec, UPCAST=upcast)


def fused_gru_step(state, idx, x, weight_ih, bias, gi, weight_hh, b_hn, mask, reset_after):
    """One launch: gather ``state[idx]``, step, scatter back.

    state (N, H) float32 (updated in place), idx (M,) int64 unique rows, x (M, I) in the weights'
    dtype, weight_ih (3H, I), bias (3H,) float32 (every bias added to the input part, see
    ``common.folded_bias``), gi (M, 3H) float32 or None (None: the kernel computes x W_ih^T + bias
    itself, for I <= ``plan.STEP_FUSE_MAX_I``), weight_hh (3H, H), b_hn (H,) float32, mask (M,) bool
    or None. Returns the new state of the rows, (M, H) float32, and the ``StepPlan`` run."""
    M = idx.shape[0]
    H = state.shape[1]
    I = x.shape[1]
    plan = _plan.plan_step(M, H, I, weight_hh.dtype)
    if gi is None and not plan.fuse_input:
        raise ValueError(f"the step kernel fuses the input projection only up to I={_plan.STEP_FUSE_MAX_I}; "
                         f"pass gi for I={I}")
    if gi is not None:
        plan = _plan.replace(plan, fuse_input=False)
    out = state.new_empty(M, H)
    rh = state.new_empty(M, H) if not reset_after else state.new_empty(1)
    mask_u8 = mask.to(torch.uint8) if mask is not None else _dummy(state)
    dot_prec, upcast = _dot_precision(weight_hh.dtype), _upcast(weight_hh.dtype)
    ce = step_constexprs(plan, reset_after, mask is not None, dot_prec, upcast)
    gi_arg = gi if gi is not None else _dummy(state)
    k = _gru_step_kernel[(plan.ctas,)](
        x, weight_ih, bias, gi_arg, state, idx, weight_hh, b_hn, mask_u8, out, rh, M, H, I,
        num_warps=plan.num_warps, num_stages=plan.num_stages, **ce,
    )
    _record("_gru_step_kernel", k, ce, plan.num_warps, plan.num_stages)
    return out, plan
