#!/usr/bin/env bash
# The one GPU check of the GRU kernels (issue 17), for a session lent a GPU, in ONE call of under
# 8 minutes: the gpu-marked kernel tests, FusedGRU vs cuDNN nn.GRU at the four bench shapes
# (forward and forward+backward, float32 with TF32 and bfloat16, both formulations), the step at
# 100,000 x 128 vs nn.GRUCell with gather/scatter, and registers/spills read from the loaded
# kernels. Each part runs in its own subprocess with a timeout. Full results go to $OUT (default
# ./gpu_out) as JSON and logs; a short table is printed last.
#
# Needs python3 with torch, triton, numpy and pytest only (no polars, no network).
#   OUT=/some/dir scripts/gpu_check.sh        # everything
#   scripts/gpu_check.sh summary              # print the table again from $OUT
#   scripts/gpu_check.sh bench                # one part: env, tests, warm, loaded, bench, step
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
# last resort only: the check keeps its own deadline (450 s) and per-part timeouts
exec timeout -k 10 470 "$PY" -m kernels.bench.gpu_check "$@"
