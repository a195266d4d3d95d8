#!/usr/bin/env bash
# README command (b): install, then run the whole suite once per backend
# (one process each): TensorFlow, JAX, and torch when a torch wheel is
# available without a download (torch stays optional); after the TensorFlow
# pass, the smoke reproduction suite end to end.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,jax || exit 1
VENV="${KERAS_AMIX_VENV:-.venv}"
PY="$VENV/bin/python"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
# One XLA compilation cache for every pass and every JAX subprocess of this
# run (tests/conftest.py says why); it starts empty, so each run measures the
# same work, and is removed at the end.
if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
  JAX_COMPILATION_CACHE_DIR="$(mktemp -d)"
  trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
  export JAX_COMPILATION_CACHE_DIR
fi

# torch: install only if the pinned CPU wheel is available locally (no-index).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if "$PY" -m pip download --quiet --no-deps --no-index -d "$(mktemp -d)" "torch==2.13.0" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet -c requirements/constraints.txt "torch==2.13.0" || true
  fi
fi

status=0
for backend in tensorflow jax; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend "$PY" -m pytest tests -q -n 2 --dist worksteal "$@" || status=1
done
# The README's reproduce command end to end: every supervised method for one
# epoch, the tables and both figures (about 300 CPU-seconds, 2 runs at a time).
echo "=== reproduce --suite=smoke (KERAS_BACKEND=tensorflow) ==="
start=$SECONDS
KERAS_BACKEND=tensorflow "$PY" -m experiments.reproduce --suite=smoke --seeds=1 --jobs=2 \
  --suite_workdir="$(mktemp -d)/smoke" || status=1
echo "=== reproduce --suite=smoke: $((SECONDS - start)) s ==="
if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "=== KERAS_BACKEND=torch (layers, mixers, losses, the training step) ==="
  KERAS_BACKEND=torch "$PY" -m pytest tests/layers tests/mixers tests/losses tests/backbones tests/training/test_step.py -q -n 2 --dist worksteal "$@" || status=1
else
  echo "=== torch not installed: torch-backend tests skipped ==="
fi
exit $status
