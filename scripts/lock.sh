#!/usr/bin/env bash
# Refreshes requirements/constraints.txt: resolves the newest versions that
# pyproject.toml allows (core + test + jax extras, and torch 2.13.0 when its
# CPU wheel is available locally) in a throw-away virtual environment and
# writes the exact versions. Run the suite (bash scripts/test.sh) before
# committing a refreshed file: scripts/setup.sh installs exactly these.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m venv "$TMP/venv"
PIP="$TMP/venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet ".[test,jax]"
if $PIP download --quiet --no-deps --no-index -d "$TMP/wheels" "torch==2.13.0" >/dev/null 2>&1; then
  $PIP install --quiet "torch==2.13.0"
fi
{
  echo "# Exact versions the test suite passed with (Python 3.11, CPU). scripts/setup.sh installs"
  echo "# through this file; refresh it with: bash scripts/lock.sh  (then run bash scripts/test.sh)."
  $PIP freeze --exclude-editable | grep -v '^keras-amix' | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/'
  echo "pip==$($PIP --version | awk '{print $2}')"
} > requirements/constraints.txt.tmp
mv requirements/constraints.txt.tmp requirements/constraints.txt
echo "wrote requirements/constraints.txt ($(grep -vc '^#' requirements/constraints.txt) pins)"
