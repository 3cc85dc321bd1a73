#!/usr/bin/env bash
# Run on a machine with PyPI before taking the working tree to a GPU machine without a package index:
# downloads the wheels benchmarks/gpu_check.sh installs there (Python 3.12, manylinux x86_64, --no-deps) into
# .gpu_wheels/ (ignored by git), group by group while the folder stays within GPU_WHEELS_BUDGET_MIB (64), and
# prints each group's size and the total. A group that does not fit is left out (.gpu_wheels/manifest.json
# says why) and the check's stages needing it print "skipped". See benchmarks/gpu_wheels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
exec "$PY" -m benchmarks.gpu_wheels download --out "${GPU_WHEELS_DIR:-.gpu_wheels}" \
    --budget-mib "${GPU_WHEELS_BUDGET_MIB:-64}"
