#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU check"): one JSON line per figure, ≤ 8 minutes on one H200-class GPU.
#
#   benchmarks/gpu_wheels.sh                                  # first, on a machine with PyPI (fills .gpu_wheels/)
#   benchmarks/gpu_check.sh                                   # then, on the GPU machine, from the working tree
#   GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh              # the dry run on a CPU (tiny sizes, ~2 minutes)
#
# It installs the wheels of .gpu_wheels/ that python3 lacks into a temporary folder (pip install --no-index
# --no-deps --find-links; nothing is fetched), puts it on PYTHONPATH, and runs benchmarks/gpu_check.py's stages,
# each in its own process with a timeout. Environment: PYTHON (python3), GPU_CHECK_DEVICE (cuda | cpu),
# GPU_CHECK_PROFILE (2b on cuda, tiny on cpu), GPU_CHECK_STAGES (scoring,annotate,memory,train,eval),
# GPU_CHECK_WHEELS (.gpu_wheels), GPU_CHECK_WORK (a temporary folder, removed at the end unless given).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda}
export GPU_CHECK_WHEELS=${GPU_CHECK_WHEELS:-$PWD/.gpu_wheels}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export GPU_CHECK_WORK=${GPU_CHECK_WORK:-$TMP/work}
"$PY" -m benchmarks.gpu_wheels install --wheels "$GPU_CHECK_WHEELS" --target "$TMP/site" \
    || echo '{"stage": "install", "failed": "benchmarks.gpu_wheels install exited non-zero; stages run with what python3 has"}'
export PYTHONPATH="$TMP/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$TMP/site/bin:$PATH"
"$PY" -m benchmarks.gpu_check run
