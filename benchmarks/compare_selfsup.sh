#!/usr/bin/env bash
# CIFAR-10 self-supervised comparison at a CPU budget (issue 5): MoCo v2 and
# its instance-level mixup variants, same epochs for all, then linear
# evaluation of each frozen encoder on the labelled split, next to a randomly
# initialised encoder as the no-pretraining reference.
#
#   bash benchmarks/compare_selfsup.sh DATA_DIR [EPOCHS] [METHODS...]
#
# DATA_DIR: the CIFAR-10 JPEG copy (train/ and test/ class folders). Phase 1
# pretrains every method (labels unused) into runs/ssl_cifar10/METHOD; phase 2
# runs experiments/linear_eval.py on each encoder.keras and writes the table to
# benchmarks/results/ssl_cifar10_cpu.json. A method whose run fails is
# reported and skipped; re-running resumes interrupted runs (BackupAndRestore).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA="${1:?usage: compare_selfsup.sh DATA_DIR [EPOCHS] [METHODS...]}"
EPOCHS="${2:-20}"
shift 2 2>/dev/null || shift $#
METHODS=("$@")
[ ${#METHODS[@]} -eq 0 ] && METHODS=(mocov2 mixup imix unmix mochi)
PY="${PYTHON:-.venv/bin/python}"
OUT=runs/ssl_cifar10
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2

for m in "${METHODS[@]}"; do
  [ -f "$OUT/$m/encoder.keras" ] && continue
  echo "=== pretrain $m ($(date -u +%H:%M:%S)) ==="
  "$PY" -m experiments.train_selfsup --preset=cpu_cifar10 --dataset="$DATA" \
      --epochs="$EPOCHS" --method="$m" --export=false --workdir="$OUT/$m" \
      > "$OUT/$m.log" 2>&1 || echo "pretraining $m failed: see $OUT/$m.log"
done
# Reference row: the same encoder with random weights (BatchNorm statistics only).
[ -f "$OUT/random_init/encoder.keras" ] || "$PY" -m benchmarks.make_random_encoder \
    --dataset="$DATA" --out="$OUT/random_init/encoder.keras" > "$OUT/random_init.log" 2>&1
METHODS+=(random_init)
for m in "${METHODS[@]}"; do
  [ -f "$OUT/$m/encoder.keras" ] || continue
  [ -f "$OUT/$m/linear/metrics.json" ] && continue
  echo "=== linear eval $m ($(date -u +%H:%M:%S)) ==="
  "$PY" -m experiments.linear_eval --preset=cpu_cifar10 --dataset="$DATA" \
      --encoder="$OUT/$m/encoder.keras" --workdir="$OUT/$m/linear" \
      > "$OUT/$m.linear.log" 2>&1 || echo "linear eval $m failed: see $OUT/$m.linear.log"
done
"$PY" -m benchmarks.summarize_selfsup --runs="$OUT" --methods="$(IFS=,; echo "${METHODS[*]}")" \
    --out=benchmarks/results/ssl_cifar10_cpu.json
