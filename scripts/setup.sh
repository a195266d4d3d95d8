#!/usr/bin/env bash
# Creates the virtual environment and installs keras-amix with the given extras.
#   bash scripts/setup.sh            # core only (TensorFlow backend)
#   bash scripts/setup.sh test,jax   # what the test suite needs
# The environment lives in $KERAS_AMIX_VENV (default: .venv in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KERAS_AMIX_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
EXTRAS="${1:-}"
if [ -n "$EXTRAS" ]; then
  "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
else
  "$VENV/bin/python" -m pip install --quiet -e .
fi
