#!/usr/bin/env bash
# Installs what is missing, then runs the default test suite (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/install.sh | tail -n 1)
exec "$PY" -m pytest "$@"
