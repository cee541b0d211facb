#!/usr/bin/env bash
# The whole GPU check, rehearsed on the CPU with the GPU machine's Triton (3.6) beside this
# machine's torch, so that a version drift shows here and not in the few minutes of a GPU lease:
# every part of scripts/gpu_check.sh runs (the interpreter at small shapes; the warm part compiles
# the bench variants for sm_90 with that Triton's own ptxas and checks the H100's limits; the
# tests part runs the interpreter tests).
#
#   scripts/cpu_stack_check.sh            # venv in /tmp/venv-triton36 (made once), full rehearsal
#   QUICK=1 scripts/cpu_stack_check.sh    # the smallest set of each part (a few minutes)
#   VENV=/path TRITON=3.6.0 scripts/cpu_stack_check.sh
#
# Packages from PyPI through pip: torch (the CPU build that pip resolves here), triton, and NumPy
# < 2.4 where Triton < 3.9 (Triton 3.6's interpreter calls int() on one-element arrays, which NumPy
# 2.4 refuses: 100 kernel tests fail). Results under $OUT (default ./gpu_out_cpu_stack).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-/tmp/venv-triton36}"
TRITON="${TRITON:-3.6.0}"
TORCH="${TORCH:-2.13.0}"
OUT="${OUT:-$PWD/gpu_out_cpu_stack}"
numpy_pin="numpy"
case "$TRITON" in
    3.[0-8].*|3.[0-8]|2.*) numpy_pin="numpy<2.4" ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH" "triton==$TRITON" "$numpy_pin" pytest
"$VENV/bin/python" -c "import torch, triton, numpy; print('cpu stack: torch', torch.__version__, \
'triton', triton.__version__, 'numpy', numpy.__version__)"
args=(--rehearse)
if [ -n "${QUICK:-}" ]; then args+=(--quick); fi
OUT="$OUT" PYTHON="$VENV/bin/python" GPU_CHECK_BUDGET_S="${GPU_CHECK_BUDGET_S:-1500}" \
    scripts/gpu_check.sh "${args[@]}"
