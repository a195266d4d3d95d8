#!/usr/bin/env bash
# README command (a): install, then train AMix (Mix Block+ and a ResNet-18) on
# the embedded digits data set and write config, metrics, TensorBoard logs,
# model.keras, a SavedModel and the mask picture (paper Fig. 4, masks.png) into
# runs/supervised. It turns on the official code's two heads and full momentum
# forward (off by default for now): with one head the Mix Block leaves its flat
# start only after this budget (BUILD_NOTES 2026-12-02). Extra arguments go to
# the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${KERAS_AMIX_VENV:-.venv}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$VENV/bin/python" -m experiments.train_supervised --method=amix \
  --separate_mix_head --momentum_full_forward "$@"
