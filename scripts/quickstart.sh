#!/usr/bin/env bash
# Installs what is missing, then runs the main job: the quickstart on the embedded SmolLM2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/install.sh | tail -n 1)
BIN=$(dirname "$PY")
if [ -f configs/pipelines/quickstart.yaml ] && "$PY" -c "import pipelines.cli" >/dev/null 2>&1; then
  exec "$BIN/rlhf" run configs/pipelines/quickstart.yaml "$@"
fi
# Until the pipeline exists: the stages that exist, in order.
exec "$PY" -m pipelines.interim "$@"
