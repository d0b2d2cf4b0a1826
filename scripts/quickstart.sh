#!/usr/bin/env bash
# Installs what is missing, then runs the main job: the quickstart on the embedded SmolLM2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/install.sh | tail -n 1)
exec "$(dirname "$PY")/rlhf" run configs/pipelines/quickstart.yaml "$@"
