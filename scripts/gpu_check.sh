#!/usr/bin/env bash
# The one GPU check of the GRU kernels, for a session lent a GPU, in ONE call: the environment,
# warm-up compiles in parallel, FusedGRU vs cuDNN nn.GRU at the four bench shapes, the step at
# 100,000 x 128 vs nn.GRUCell, the loaded kernels' registers/spills, then the gpu-marked tests
# split over several processes (kernels/bench/gpu_check.py says what each part does). Total budget
# 300 s by default (GPU_CHECK_BUDGET_S); every part writes its JSON under $OUT as it goes; a short
# table is printed last. With no CUDA device it stops after the environment part and exits 2.
#
# Needs python3 with torch, triton, numpy and pytest only (no polars, no network).
#   scripts/gpu_check.sh stamp              # HERE, before the copy: write .gpu_check_commit
#   OUT=/some/dir scripts/gpu_check.sh      # THERE: everything
#   scripts/gpu_check.sh summary            # print the table again from $OUT
#   scripts/gpu_check.sh bench              # env and one part: warm, bench, step, loaded, tests
#   scripts/gpu_check.sh --rehearse --quick # the whole check on the CPU (interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ "${1:-}" = "stamp" ]; then
    # by path, not -m: the standard library only (``import kernels`` would need torch)
    exec "$PY" kernels/bench/provenance.py stamp
fi
export OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
BUDGET="${GPU_CHECK_BUDGET_S:-300}"
# last resort only: the check keeps its own budget and per-part timeouts
exec timeout -k 10 "$((${BUDGET%.*} + 45))" "$PY" -m kernels.bench.gpu_check --budget "$BUDGET" "$@"
