"""The launch planner (pure Python): which path, blocks and grid each launch gets."""

import math

import pytest
import torch

from kernels.gru import plan as P

BENCH_SHAPES = [(256, 168, 8, 128), (64, 720, 7, 256), (1024, 96, 16, 64), (32, 336, 1, 512)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kernel", ["fwd", "bwd"])
@pytest.mark.parametrize("B,T,I,H", BENCH_SHAPES, ids=str)
def test_bench_shapes_fill_an_h100_or_run_persistent(B, T, I, H, kernel, dtype):
    # with the occupancy the compiled kernels reach (>= 2 CTAs/SM at H <= 128 in the compile report)
    plan = P.plan_sequence(kernel, B, H, dtype, "auto", dm=P.H100, occupancy_of=lambda blocks, tile_loop: 2)
    assert plan.persistent or plan.ctas >= P.H100.n_sm
    assert plan.ctas <= P.H100.n_sm * 2  # co-resident
    assert plan.n_col * plan.blocks.block_n >= H
    assert plan.n_groups * math.ceil(plan.n_tiles / plan.n_groups) >= plan.n_tiles
    # one tile per program at every bench shape: the tile loop is compiled away
    assert not plan.tile_loop and plan.n_groups == plan.n_tiles


def test_co_residency_uses_the_occupancy_of_the_variant_that_runs():
    # 1024 rows at H=64: 4 column programs x 64 tiles = 256 programs fit only at 2 CTAs per SM
    seen = []

    def occ(blocks, tile_loop):
        seen.append(tile_loop)
        return 1 if not tile_loop else 1

    plan = P.plan_sequence("fwd", 1024, 64, torch.float32, "persistent", dm=P.H100, occupancy_of=occ)
    assert seen == [False, True] and plan.tile_loop and plan.ctas <= P.H100.n_sm
    plan = P.plan_sequence("fwd", 1024, 64, torch.float32, "persistent", dm=P.H100, occupancy_of=lambda b, loop: 2)
    assert not plan.tile_loop and plan.ctas == 256


def test_persistent_groups_loop_over_tiles_when_they_do_not_all_fit():
    # 4096 rows at H=128: 8 column programs per tile; one CTA per SM holds 16 groups of 8
    plan = P.plan_sequence("fwd", 4096, 128, torch.float32, "persistent", dm=P.H100, occupancy_of=lambda b, loop: 1)
    assert plan.blocks.block_b == 64 and plan.n_tiles == 64
    assert plan.n_col == 8 and plan.n_groups == 16 and plan.ctas == 128 and plan.tile_loop
    # even rounds: every group does the same number of tiles
    assert plan.n_tiles % plan.n_groups == 0


def test_auto_takes_batch_where_it_alone_fills_the_gpu():
    plan = P.plan_sequence("fwd", 132 * 16, 64, torch.float32, "auto", dm=P.H100)
    assert plan.path == "batch" and plan.ctas == 132 and plan.blocks.one_block


def test_auto_without_a_grid_barrier():
    # the interpreter: batch where H allows, else one launch per step
    assert P.plan_sequence("fwd", 8, 64, torch.float32, "auto", can_persist=False).path == "batch"
    assert P.plan_sequence("fwd", 8, 100, torch.float32, "auto", can_persist=False).path == "stepwise"
    assert P.plan_sequence("fwd", 8, 64, torch.bfloat16, "auto", can_persist=False).path == "batch"
    assert P.plan_sequence("fwd", 8, 128, torch.bfloat16, "auto", can_persist=False).path == "stepwise"


def test_persistent_that_cannot_be_co_resident_is_an_error():
    tiny = P.DeviceModel("tiny", n_sm=4)
    with pytest.raises(ValueError, match="needs 32 co-resident programs per batch tile at H=512"):
        P.plan_sequence("fwd", 32, 512, torch.float32, "persistent", dm=tiny)
    # and auto falls back to stepwise there, saying so in the plan
    assert P.plan_sequence("fwd", 32, 512, torch.float32, "auto", dm=tiny).path == "stepwise"


def test_path_and_kernel_names_are_checked():
    with pytest.raises(ValueError, match="path must be one of"):
        P.plan_sequence("fwd", 8, 16, torch.float32, "fast")
    with pytest.raises(ValueError, match="kernel must be 'fwd' or 'bwd'"):
        P.plan_sequence("step", 8, 16, torch.float32)


@pytest.mark.parametrize("H", [8, 17, 100, 128, 300, 512, 600, 1024])
def test_split_blocks_cover_h_and_stay_resident_up_to_the_chunk_limit(H):
    b = P.split_blocks("fwd", H, torch.float32)
    assert b.block_n == 16 and b.block_k >= 16 and b.nchunk * b.block_k >= H
    assert b.resident == (b.nchunk <= P.MAX_CHUNKS)


def test_occupancy_limits():
    dm = P.H100
    assert P.occupancy(128, 0, 4, dm) == 4           # registers: 65536 / (128 * 128)
    assert P.occupancy(64, 0, 4, dm) == 8            # threads and registers
    assert P.occupancy(32, 0, 1, dm) == 32           # the 32-CTA limit
    assert P.occupancy(100, 110 * 1024, 4, dm) == 2  # shared memory: 228 KB / (110 KB + 1 KB)
    assert P.occupancy(255, 0, 8, dm) == 1
    assert P.occupancy(168, 0, 4, dm) == 3           # registers allocated per warp in units of 256


def test_step_plan_uses_big_row_tiles_for_many_rows():
    big = P.plan_step(100_000, 128, 8, torch.float32, "ieee")
    assert big.block_b == 16 and big.fuse_input and not big.resident  # IEEE: FMA dots, small tiles
    big = P.plan_step(100_000, 128, 8, torch.float32, "tf32", "streaming")
    assert (big.block_b, big.block_n) == (128, 16) and big.fuse_input and big.ctas == math.ceil(100_000 / 128)
    assert P.plan_step(64 * 132, 128, 8, torch.float32, "tf32", "streaming").block_b == 64
    small = P.plan_step(100, 128, 8, torch.float32, "tf32", "streaming")
    assert small.block_b == 16
    assert not P.plan_step(100, 128, P.STEP_FUSE_MAX_I + 1, torch.float32).fuse_input


@pytest.mark.parametrize("dm", [P.H100, P.A100], ids=["sm_90", "sm_80"])
@pytest.mark.parametrize("dtype,prec", [(torch.float32, "tf32"), (torch.float32, "ieee"), (torch.bfloat16, "ieee")],
                         ids=["float32", "float32-ieee", "bfloat16"])
@pytest.mark.parametrize("H", [17, 64, 128, 256, 512])
def test_step_candidates_keep_their_weight_tiles_within_the_block_limit(H, dtype, prec, dm):
    # at H=512 in float32, BLOCK_N 32 asked for 238,592 B of shared memory (232,448 B allowed on
    # sm_90): its three W_hh tiles alone are 196,608 B
    cands = P.step_candidates(100_000, H, 8, dtype, prec, dm=dm)
    assert cands and all(c.block_k >= H and c.block_n <= c.block_k for c in cands)
    elt = torch.finfo(dtype).bits // 8
    for c in cands:
        tiles = 3 * c.block_k * c.block_n * elt + (3 * c.block_i * c.block_k * elt if c.resident else 0)
        assert tiles <= (P.STEP_RESIDENT_SHARE * dm.smem_per_block if c.resident else P.STEP_STREAM_TILE_BYTES), c
    # the last resort is the smallest: 16 rows, 16 columns (IEEE: the only one; with 4 warps it
    # spilled 112-368 B)
    assert (cands[-1].block_b, cands[-1].block_n, cands[-1].resident) == (16, 16, False)
    if prec == "ieee" and dtype == torch.float32:
        assert len(cands) == 1 and cands[0].num_warps >= 8
    if H == 512 and dtype == torch.float32:
        assert cands[0].block_n == 16


def test_step_resident_needs_tensor_core_dots_and_room_on_chip():
    assert P.plan_step(100_000, 128, 8, torch.bfloat16, "ieee").resident
    assert P.plan_step(100_000, 64, 8, torch.float32, "tf32").resident
    assert not P.plan_step(100_000, 64, 8, torch.float32, "ieee").resident  # FMA: operands in registers
    assert not P.plan_step(100_000, 128, 8, torch.float32, "tf32").resident  # 192 KB of W_hh alone
    assert not P.plan_step(100_000, 256, 8, torch.bfloat16, "ieee").resident
    plan = P.plan_step(100_000, 128, 8, torch.bfloat16, "ieee")
    assert plan.ctas == P.H100.n_sm and plan.row_loop  # the launcher raises it to SMs x CTAs per SM
    with pytest.raises(ValueError, match="step path 'resident' keeps W_hh"):
        P.plan_step(100, 128, 8, torch.float32, "ieee", "resident")
    with pytest.raises(ValueError, match="step path must be one of"):
        P.plan_step(100, 128, 8, torch.float32, "ieee", "persistent")


def test_step_weight_traffic_resident_against_streaming():
    # 100,000 x 128 in bfloat16: streaming reads W_hh (96 KB) once per 128-row tile, resident once
    # per program (132 here; SMs x CTAs per SM at run time)
    streaming = P.plan_step(100_000, 128, 8, torch.bfloat16, "ieee", "streaming")
    resident = P.plan_step(100_000, 128, 8, torch.bfloat16, "ieee", "resident")
    per_read = 3 * 128 * 128 * 2 + 3 * 128 * 8 * 2
    assert streaming.weight_bytes_per_call() == 782 * per_read
    assert resident.weight_bytes_per_call() == 132 * per_read
    assert resident.state_bytes_per_call() == streaming.state_bytes_per_call() == 3 * 100_000 * 128 * 4 + 100_000 * 8 * 2 + 8 * 100_000


def test_resource_problem_names_the_limit():
    assert P.resource_problem(128, 100_000, 4, P.H100) is None
    assert "238,592 B of shared memory; a block may have 232,448 B" in P.resource_problem(64, 238_592, 8, P.H100)
    assert "a block may have 166,912 B" in P.resource_problem(64, 200_000, 8, P.A100)
    assert "65,536" in P.resource_problem(255, 0, 16, P.H100)


@pytest.mark.parametrize("kernel", ["fwd", "bwd"])
def test_ieee_float32_blocks_take_eight_warps_above_four_chunks(kernel):
    # with 4 warps the IEEE forward spilled 292 B at H=512 (Triton 3.6, sm_90); 8 warps none
    assert P.plan_sequence(kernel, 32, 512, torch.float32, dot_prec="ieee").blocks.num_warps == 8
    assert P.plan_sequence(kernel, 32, 512, torch.float32, dot_prec="tf32").blocks.num_warps == 4
    assert P.plan_sequence(kernel, 32, 512, torch.bfloat16, dot_prec="ieee").blocks.num_warps == 4
    assert P.plan_sequence(kernel, 64, 256, torch.float32, dot_prec="ieee").blocks.num_warps == 4


def test_persistent_that_cannot_launch_at_all_falls_back():
    # occupancy 0: the compiled variant is over a per-block limit
    plan = P.plan_sequence("fwd", 32, 512, torch.float32, "auto", dm=P.H100, occupancy_of=lambda b, loop: 0)
    assert plan.path == "stepwise"
