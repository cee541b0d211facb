"""Which path a GRU launch takes, with which block sizes and grid: one source of truth for the
launchers, the compile-only report (``python -m kernels.bench --compile-only``) and the tests.
Plain Python and torch; no Triton.

Paths of the sequence kernels (forward and backward alike):

- ``"batch"``: one program owns every hidden column of BLOCK_B batch rows and loops over all T
  steps in one launch; its W_hh (3 x H x H) stays on chip and h in registers. Only for small H
  (see :data:`BATCH_MAX_H`); ``cdiv(B, 16)`` programs.
- ``"persistent"``: the hidden columns are split across programs (16 per program, all three gates),
  each keeping its W_hh slice on chip for the whole sequence; the programs of one batch tile meet at
  a grid barrier every step. One launch; launched only where every program is co-resident
  (programs <= SMs x CTAs per SM, from the device properties and the compiled kernel's registers
  and shared memory). Where batch tiles outnumber what fits, each group of programs loops over
  several tiles.
- ``"stepwise"``: the persistent kernel's body, one launch per step (per half-step where a step
  needs two exchanges). Needs no co-residency: the fallback, and the split path Triton's
  interpreter can run.

``"auto"`` takes ``batch`` where it alone fills the GPU (at least one program per SM), else
``persistent`` where co-residency holds, else ``batch`` where H allows, else ``stepwise``. Under
the interpreter (no GPU) it takes ``batch`` where H allows, else ``stepwise``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import torch

PATHS = ("auto", "batch", "persistent", "stepwise")

#: a timed-out grid barrier adds this to its counter: every later barrier passes, the host checks it
POISON = 1 << 40


def spin_limit() -> int:
    """Polls of the grid-barrier counter before a persistent launch gives up (each poll is an L2
    atomic, ~1 us: the default, 2^21, is about two seconds). ``KERNELS_GRU_SPIN_LIMIT`` overrides."""
    value = os.environ.get("KERNELS_GRU_SPIN_LIMIT", "")
    if not value:
        return 1 << 21
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(f"KERNELS_GRU_SPIN_LIMIT must be a non-negative integer, got {value!r}")
    return limit


@dataclass(frozen=True)
class DeviceModel:
    """What co-residency and launchability depend on: SMs, the per-SM and the per-block limits."""

    name: str
    n_sm: int
    regs_per_sm: int = 65536
    smem_per_sm: int = 233472  # bytes a CTA's shared memory can come from (H100: 228 KB)
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    #: the most shared memory one CTA may ask for (opt-in; H100 227 KB, A100 163 KB): a launch that
    #: asks for more fails with OutOfResources
    smem_per_block: int = 232448
    regs_per_block: int = 65536
    l2_bytes: int = 50 * 2**20


H100 = DeviceModel("H100 SXM (model: 132 SMs, 228 KB shared/SM, 227 KB/block)", 132)
A100 = DeviceModel("A100 (model: 108 SMs, 164 KB shared/SM, 163 KB/block)", 108, smem_per_sm=167936,
                   smem_per_block=166912, l2_bytes=40 * 2**20)
#: where compile-only answers are given for each arch
ARCH_MODELS = {80: A100, 90: H100}

_device_models: dict[int, DeviceModel] = {}


def device_model(device: torch.device) -> DeviceModel:
    """The model of a CUDA device, read from ``torch.cuda.get_device_properties``; the H100 model
    for anything else (the interpreter's sizing follows the GPU's so that it checks the same grids)."""
    if device.type != "cuda":
        return H100
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _device_models:
        p = torch.cuda.get_device_properties(index)
        fallback = H100 if p.major >= 9 else A100
        _device_models[index] = DeviceModel(
            name=p.name, n_sm=p.multi_processor_count,
            regs_per_sm=getattr(p, "regs_per_multiprocessor", 0) or 65536,
            smem_per_sm=getattr(p, "shared_memory_per_multiprocessor", 0) or fallback.smem_per_sm,
            max_threads_per_sm=getattr(p, "max_threads_per_multi_processor", 0) or 2048,
            smem_per_block=getattr(p, "shared_memory_per_block_optin", 0) or fallback.smem_per_block,
            l2_bytes=getattr(p, "L2_cache_size", 0) or fallback.l2_bytes,
        )
    return _device_models[index]


def resource_problem(n_regs: int, shared: int, num_warps: int, dm: DeviceModel) -> str | None:
    """Why a compiled variant cannot be launched on ``dm`` (None: it can): shared memory over the
    per-block limit, or registers over the per-block or per-thread limit."""
    if shared > dm.smem_per_block:
        return f"needs {shared:,} B of shared memory; a block may have {dm.smem_per_block:,} B on {dm.name}"
    if n_regs > 255:
        return f"needs {n_regs} registers per thread; a thread may have 255"
    if n_regs * 32 * num_warps > dm.regs_per_block:
        return (f"needs {n_regs} registers x {32 * num_warps} threads = {n_regs * 32 * num_warps:,}; "
                f"a block may have {dm.regs_per_block:,} on {dm.name}")
    return None


def occupancy(n_regs: int, shared: int, num_warps: int, dm: DeviceModel) -> int:
    """CTAs of one kernel that fit on an SM at once: the least of the thread, register (allocated
    per warp in units of 256) and shared-memory (plus 1 KB reserved per CTA) limits."""
    threads = 32 * num_warps
    by_threads = dm.max_threads_per_sm // threads
    regs_per_warp = math.ceil(max(n_regs, 1) * 32 / 256) * 256
    by_regs = dm.regs_per_sm // (regs_per_warp * num_warps)
    by_smem = dm.smem_per_sm // (shared + 1024) if shared else dm.max_blocks_per_sm
    return max(0, min(by_threads, by_regs, by_smem, dm.max_blocks_per_sm))


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


#: largest H the batch path takes, every dtype: the whole W_hh (3 x H x H) lives on chip in one
#: program (fp32 64: 64 KB with the gate-interleaved padding) and h (BLOCK_B x H) in registers; at
#: H=128 in half precision the compile report showed up to 564 B of spills without divisibility hints
BATCH_MAX_H = 64
#: spill bytes allowed in a variant that ``auto`` launches at the bench shapes (mask off), per arch
#: and dtype label of the compile report (``float32``: TF32 dots, ``float32-ieee``: IEEE dots,
#: torch's default). The compile-only report (exit 1) and the GPU test of the loaded kernels hold
#: every such variant to it. None on sm_90 (the H100/H200); on sm_80 the IEEE backward
#: reset-before at H=256 spilled 16 B with 4 warps under Triton 3.6 (0 under 3.9) and 4-8 B with 8.
SPILL_BUDGET = {
    90: {"float32": 0, "float32-ieee": 0, "bfloat16": 0, "float16": 0},
    80: {"float32": 0, "float32-ieee": 16, "bfloat16": 0, "float16": 0},
}
#: split programs own this many hidden columns (the tl.dot minimum): the most programs per tile
SPLIT_BLOCK_N = 16
#: the resident W_hh slice is NCHUNK tiles of BLOCK_K rows of the reduction, at most this many
MAX_CHUNKS = 8


@dataclass(frozen=True)
class Blocks:
    """Compile-time configuration of one sequence kernel launch."""

    block_b: int
    block_n: int
    block_k: int
    nchunk: int
    resident: bool
    one_block: bool
    num_warps: int
    num_stages: int = 1  # see fused_recurrent's module doc: no pipelining across the barrier


@dataclass(frozen=True)
class SeqPlan:
    """A sequence launch: ``kernel`` "fwd" or "bwd", its path, blocks and grid (n_col, n_groups)."""

    kernel: str
    path: str
    H: int
    B: int
    dtype: torch.dtype
    blocks: Blocks
    n_col: int
    n_tiles: int
    n_groups: int
    #: programs loop over several batch tiles (persistent, when the tiles outnumber what fits);
    #: False: one tile per program, the loop compiled away (it kept values live that ptxas spilled)
    tile_loop: bool = False

    @property
    def ctas(self) -> int:
        return self.n_col * self.n_groups

    @property
    def persistent(self) -> bool:
        return self.path == "persistent"

    @property
    def grid(self) -> tuple[int, int]:
        return (self.n_col, self.n_groups)


def batch_blocks(kernel: str, H: int, dtype: torch.dtype) -> Blocks:
    """One program per 16 rows, every column; KP = next power of two >= H (>= 16)."""
    kp = max(16, _next_pow2(H))
    # 8 warps: the gate-interleaved accumulator is (16, 4 KP); with 4 warps ptxas used all 255
    # registers and spilled 4-12 B without divisibility hints (compile report), with 8 none
    return Blocks(block_b=16, block_n=kp, block_k=kp, nchunk=1, resident=True, one_block=True,
                  num_warps=8)


def split_blocks(kernel: str, H: int, dtype: torch.dtype, block_b: int = 16, dot_prec: str = "tf32") -> Blocks:
    """16 columns per program; the reduction dimension in chunks of BLOCK_K (<= 64) so that the
    dot operands live at once stay small. Resident while H <= 8 BLOCK_K (512).

    Measured with the compile report (Triton 3.9, sm_80 and sm_90): BLOCK_K 128 made the A operand
    of a chunk 64 registers per thread in float32 and ptxas spilled; 8 warps made ptxas aim at 80
    or 128 registers per thread and spill to get there; 4 warps and BLOCK_K 64 did not. IEEE
    float32 (``dot_prec="ieee"``: FMA dots, the B operand of a chunk in registers too) with more
    than four chunks (H > 256) takes 8 warps: with 4, the forward at H=512 spilled 292 B
    (persistent) and 148 B (stepwise), the backward 4-20 B (Triton 3.6, sm_90); with 8, none. At
    H <= 256, 8 warps made ptxas take 198-226 registers in some sm_80 variants (one CTA per SM:
    the persistent grid at H=64 no longer co-resident) and spill 8 B in one, 4 warps did not
    (Triton 3.9)."""
    kp = max(16, _next_pow2(H))
    bk = min(kp, 64)
    nchunk = math.ceil(H / bk)
    resident = nchunk <= MAX_CHUNKS
    wide_ieee = dtype == torch.float32 and dot_prec == "ieee" and nchunk > 4
    return Blocks(block_b=block_b, block_n=SPLIT_BLOCK_N, block_k=bk, nchunk=nchunk,
                  resident=resident, one_block=False, num_warps=8 if wide_ieee else 4)


def split_block_b(B: int, n_col: int, dm: DeviceModel) -> int:
    """Batch rows per program of the split paths: 16 (most programs) unless the tiles of 16 would
    need several rounds of the whole GPU; then 32 or 64 (fewer W_hh slices re-used per row)."""
    for bb in (16, 32):
        if math.ceil(B / bb) * n_col <= 2 * dm.n_sm:
            return bb
    return 64


def launch_stages(plan: SeqPlan, reset_after: bool) -> tuple[int, ...]:
    """The kernel's STAGE of each launch per step (the launchers and the compile report): (0,) where
    one launch runs whole steps (batch, persistent); stepwise, where the launch boundary is the
    exchange between programs: forward (0,) / reset-before (1, 2) (r * h in between), backward
    (1, 3) / reset-before (1, 2, 3)."""
    if plan.path != "stepwise":
        return (0,)
    if plan.kernel == "fwd":
        return (0,) if reset_after else (1, 2)
    return (1, 3) if reset_after else (1, 2, 3)


def check_path(path: str) -> None:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")


def plan_sequence(
    kernel: str,
    B: int,
    H: int,
    dtype: torch.dtype,
    path: str = "auto",
    *,
    dm: DeviceModel = H100,
    can_persist: bool = True,
    occupancy_of=None,
    dot_prec: str = "tf32",
) -> SeqPlan:
    """Choose the path, blocks and grid of a sequence launch.

    Args:
        kernel: "fwd" or "bwd".
        B, H: batch rows and hidden size. dtype: the weights' dtype.
        path: "auto", "batch", "persistent" or "stepwise".
        dm: the device model (SM count and per-SM limits).
        can_persist: False where a grid barrier cannot run (Triton's interpreter runs programs one
            after another).
        occupancy_of: ``f(blocks, tile_loop) -> CTAs per SM`` of the compiled persistent kernel
            (with or without the loop over batch tiles; 0 where it cannot launch at all: its
            shared memory or registers are over the device's per-block limits); None takes 1
            (every program on its own SM), which is always safe.
        dot_prec: "tf32" or "ieee" (float32 only: the blocks differ, see :func:`split_blocks`).

    Raises:
        ValueError: an explicit path that cannot run here, saying why and what to use instead.
    """
    check_path(path)
    if kernel not in ("fwd", "bwd"):
        raise ValueError(f"kernel must be 'fwd' or 'bwd', got {kernel!r}")
    batch_ok = H <= BATCH_MAX_H
    n_col = math.ceil(H / SPLIT_BLOCK_N)

    def batch_plan() -> SeqPlan:
        blocks = batch_blocks(kernel, H, dtype)
        n_tiles = math.ceil(B / blocks.block_b)
        return SeqPlan(kernel, "batch", H, B, dtype, blocks, 1, n_tiles, n_tiles)

    def split_plan(which: str) -> SeqPlan | None:
        blocks = split_blocks(kernel, H, dtype, split_block_b(B, n_col, dm), dot_prec)
        n_tiles = math.ceil(B / blocks.block_b)
        if which == "stepwise":
            return SeqPlan(kernel, "stepwise", H, B, dtype, blocks, n_col, n_tiles, n_tiles)
        def max_groups(tile_loop: bool) -> int:
            occ = 1 if occupancy_of is None else occupancy_of(blocks, tile_loop)
            return (dm.n_sm * occ) // n_col

        # co-residency is checked with the occupancy of the variant that will run
        if n_tiles <= max_groups(False):
            return SeqPlan(kernel, "persistent", H, B, dtype, blocks, n_col, n_tiles, n_tiles, False)
        fit = max_groups(True)
        if fit < 1:
            return None
        n_groups = math.ceil(n_tiles / math.ceil(n_tiles / min(n_tiles, fit)))  # even rounds
        return SeqPlan(kernel, "persistent", H, B, dtype, blocks, n_col, n_tiles, n_groups, True)

    if path == "batch":
        if not batch_ok:
            raise ValueError(
                f"path='batch' keeps all of W_hh in one program, which fits up to H={BATCH_MAX_H}; "
                f"H={H} needs path='persistent', 'stepwise' or 'auto'"
            )
        return batch_plan()
    if path == "stepwise":
        return split_plan("stepwise")
    if path == "persistent":
        if not can_persist:
            raise ValueError(
                "path='persistent' needs a CUDA device: its programs wait for each other at a grid "
                "barrier, and Triton's interpreter runs programs one after another; use "
                "path='stepwise' (the same kernel body, one launch per step) or 'auto'"
            )
        plan = split_plan("persistent")
        if plan is None:
            raise ValueError(
                f"path='persistent' needs {n_col} co-resident programs per batch tile at H={H}, more "
                f"than {dm.name} holds at once; use path='stepwise' or 'auto'"
            )
        return plan
    # auto
    if batch_ok and math.ceil(B / 16) >= dm.n_sm:
        return batch_plan()
    if can_persist and n_col > 1:
        plan = split_plan("persistent")
        if plan is not None:
            return plan
    if batch_ok:
        return batch_plan()
    return split_plan("stepwise")


# ---- the step kernel ---------------------------------------------------------------------------

#: the step kernel fuses the input projection (x W_ih^T inside the kernel) up to this input width
STEP_FUSE_MAX_I = 64
STEP_PATHS = ("auto", "resident", "streaming")
#: resident step: W_hh (3 x KP x KP) plus the fused W_ih tiles (3 x BLOCK_I x KP) kept on chip may
#: take at most this share of a block's shared memory (the rest: the dot operands' staging and
#: layout conversions; the compiled variant is checked against the device's limit before launch)
STEP_RESIDENT_SHARE = 0.75
#: streaming step: the three W_hh tiles of one column block (3 x KP x BLOCK_N) at most this many
#: bytes. At H=512 in float32, BLOCK_N 32 took 196,608 B for the tiles and 238,592 B in all (Triton
#: 3.6 and 3.9, sm_90), over the 232,448 B a block may have
STEP_STREAM_TILE_BYTES = 96 * 1024


@dataclass(frozen=True)
class StepPlan:
    """The single-step kernel: programs own BLOCK_B gathered rows at a time, every column.

    ``resident``: one column block (BLOCK_N = BLOCK_K >= H) whose W_hh stays on chip while each of
    ``n_programs`` programs loops over row tiles pid, pid + n_programs, ...; otherwise one tile per
    program, column blocks of BLOCK_N re-reading their W_hh tiles."""

    M: int
    H: int
    I: int
    dtype: torch.dtype
    block_b: int
    block_n: int
    block_k: int
    block_i: int
    fuse_input: bool
    num_warps: int
    num_stages: int
    resident: bool = False
    n_programs: int = 0  # 0: one program per row tile

    @property
    def n_tiles(self) -> int:
        return math.ceil(self.M / self.block_b)

    @property
    def ctas(self) -> int:
        return min(self.n_programs, self.n_tiles) if self.n_programs else self.n_tiles

    @property
    def row_loop(self) -> bool:
        return self.ctas < self.n_tiles

    @property
    def path(self) -> str:
        return "step" + ("-resident" if self.resident else "") + ("-fused-input" if self.fuse_input else "")

    def weight_bytes_per_call(self) -> int:
        """Bytes of W_hh and the fused W_ih the programs read from L2 in one call (the padding
        rows past H are masked, not read): once per program when resident, once per tile else."""
        elt = torch.finfo(self.dtype).bits // 8
        per_read = 3 * self.H * self.H * elt + (3 * self.H * self.I * elt if self.fuse_input else 0)
        return self.ctas * per_read

    def state_bytes_per_call(self) -> int:
        """DRAM bytes every variant moves: the old state gathered, the new state scattered and
        returned (float32), the input (or the projected gi), the indices."""
        elt = torch.finfo(self.dtype).bits // 8
        inp = self.M * self.I * elt if self.fuse_input else self.M * 3 * self.H * 4
        return 3 * self.M * self.H * 4 + inp + 8 * self.M


def _elt(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def check_step_path(path: str) -> None:
    if path not in STEP_PATHS:
        raise ValueError(f"step path must be one of {STEP_PATHS}, got {path!r}")


def step_resident_ok(H: int, I: int, dtype: torch.dtype, dot_prec: str, dm: DeviceModel = H100) -> bool:
    """Whether W_hh can stay on chip across row tiles: a tensor-core dot (TF32 or half precision;
    an IEEE float32 dot runs on the FMA units with both operands in registers) and the tiles within
    :data:`STEP_RESIDENT_SHARE` of a block's shared memory."""
    if dtype == torch.float32 and dot_prec == "ieee":
        return False
    kp = max(16, _next_pow2(H))
    bi = max(16, _next_pow2(I))
    nbytes = 3 * kp * kp * _elt(dtype) + (3 * bi * kp * _elt(dtype) if I <= STEP_FUSE_MAX_I else 0)
    return nbytes <= STEP_RESIDENT_SHARE * dm.smem_per_block


def step_candidates(M: int, H: int, I: int, dtype: torch.dtype, dot_prec: str = "tf32", path: str = "auto",
                    dm: DeviceModel = H100) -> list[StepPlan]:
    """The step variants worth launching, best first; the launcher takes the first whose compiled
    kernel fits the device (:func:`resource_problem`).

    Chosen with the compile report (Triton 3.9, sm_80 and sm_90, 100,000 x 128, reset-after):

    - resident (where :func:`step_resident_ok`): 32-row tiles, 8 warps, 2 stages (the next tile's
      rows are fetched while this one computes: one CTA per SM, 119-135 KB of shared memory,
      187 registers in bfloat16, no spills); n_programs = SMs, raised by the launcher to SMs x
      the compiled variant's CTAs per SM. W_hh is then read ~132 times per call (13.8 MB in
      bfloat16) instead of once per 64-row tile (1,563 times, 163 MB).
    - streaming, many rows: tiles of 128 rows with BLOCK_N 16 and 8 warps (W_hh read once per 128
      rows; float32 96-172 registers, bfloat16 121-178, no spills; BLOCK_N 32 spilled on sm_80),
      64 rows with BLOCK_N 32 for fewer, 16 for few; then BLOCK_N 16 and 16-row tiles as
      fallbacks. BLOCK_N 32 only where the three tiles fit :data:`STEP_STREAM_TILE_BYTES`.
    - IEEE float32 (FMA dots, both operands in registers): 16-row tiles, BLOCK_N 16, 8 warps (at
      H=128 58-100 registers and no spills under Triton 3.6 and 3.9, sm_80 and sm_90; BLOCK_N 32
      with 4 warps spilled 500 B under 3.6 on sm_90, with 8 warps 164-336 B; the old 64-row tiles
      8-12 KB).

    - float32 at H > 256 (BLOCK_K 512): 16 warps. With 8, the TF32 step at H=512 spilled 372-440 B
      and the IEEE one 4.2 KB (reset-after); with 16 none, but 2 KB remain in the IEEE reset-before
      on sm_90 (Triton 3.6 and 3.9).

    The old state of a tile (BLOCK_B x H) stays in registers."""
    check_step_path(path)
    kp = max(16, _next_pow2(H))
    bi = max(16, _next_pow2(I))
    fuse = I <= STEP_FUSE_MAX_I
    elt = _elt(dtype)
    out = []
    if path in ("auto", "resident") and step_resident_ok(H, I, dtype, dot_prec, dm):
        out.append(StepPlan(M, H, I, dtype, 32, kp, kp, bi, fuse, 8, 2, resident=True, n_programs=dm.n_sm))
    if path == "resident" and not out:
        raise ValueError(
            f"step path 'resident' keeps W_hh (3 x {kp} x {kp}, {dtype}) on chip, which needs tensor-core dots "
            f"(TF32 or half precision) and at most {STEP_RESIDENT_SHARE:.0%} of {dm.smem_per_block:,} B of "
            f"shared memory; use step path 'streaming' or 'auto'")
    if path in ("auto", "streaming"):
        ieee = dtype == torch.float32 and dot_prec == "ieee"

        def bn_fits(bn: int) -> bool:
            return bn <= kp and (bn == 16 or 3 * kp * bn * elt <= STEP_STREAM_TILE_BYTES)

        first = []  # (block_b, block_n, warps)
        if ieee:
            first = [(16, 16, 8)]
        elif kp <= 128 and M >= 128 * dm.n_sm:
            first = [(128, 16, 8)]
        elif kp <= 128 and M >= 64 * dm.n_sm:
            first = [(64, 32, 8)]
        elif kp <= 256 and M >= 32 * dm.n_sm:
            first = [(32, 32, 8)]
        else:
            first = [(16, 32, 4 if kp <= 256 else 8)]
        bb0 = first[0][0]
        fallbacks = [(bb0, 16, first[0][2])] + ([] if ieee else [(16, 16, 4 if kp <= 256 else 8)])
        for bb, bn, nw in first + fallbacks:
            if dtype == torch.float32 and kp >= 512:
                nw = 16  # the (16, 512) old state and the (512, 16) tiles in fewer registers each
            cand = StepPlan(M, H, I, dtype, bb, bn, kp, bi, fuse, nw, 2)
            if bn_fits(bn) and cand not in out:
                out.append(cand)
    return out


def plan_step(M: int, H: int, I: int, dtype: torch.dtype, dot_prec: str = "tf32", path: str = "auto",
              dm: DeviceModel = H100) -> StepPlan:
    """The first of :func:`step_candidates` (what runs where it fits the device)."""
    return step_candidates(M, H, I, dtype, dot_prec, path, dm)[0]


def replace(plan, **changes):
    """dataclasses.replace, re-exported for callers that tweak a plan (tests, the report)."""
    return dataclasses.replace(plan, **changes)
