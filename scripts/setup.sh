#!/usr/bin/env bash
# One-time setup: a virtual environment in .venv with every pinned dependency.
# torch 2.13.0 (CPU) and torchvision 0.28.0 are pinned in the same install (constraints.txt):
# without the pins pip would pull the newest CUDA build with several GB of packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "WARNING: Location" || true
.venv/bin/python -c "import posebh, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "posebh installed in .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
