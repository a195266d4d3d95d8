#!/usr/bin/env bash
# Creates the virtual environment and installs keras-amix with the given extras,
# at exactly the versions of requirements/constraints.txt (the ones the suite
# passed with; scripts/lock.sh refreshes them).
#   bash scripts/setup.sh            # core only (TensorFlow backend)
#   bash scripts/setup.sh test,jax   # what the test suite needs
# The environment lives in $KERAS_AMIX_VENV (default: .venv in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KERAS_AMIX_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
CONSTRAINTS="requirements/constraints.txt"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet -c "$CONSTRAINTS" pip
EXTRAS="${1:-}"
if [ -n "$EXTRAS" ]; then
  "${PIP[@]}" install --quiet -c "$CONSTRAINTS" -e ".[$EXTRAS]"
else
  "${PIP[@]}" install --quiet -c "$CONSTRAINTS" -e .
fi
