"""Generation on FSDP2 shards (PPO's `model.generation_weights: sharded`): each forward
all-gathers one layer at a time, so every process must run the same number of forwards
even when its own rows stop earlier. `core.generation.generate_batch` passes
`synced_gpus=True` for a sharded model (`core.distributed.generates_on_shards`); here
rank 0 stops after 2 new tokens and rank 1 after 6 — without the sync rank 1 would wait
for ever in its third forward's all-gather."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys
import torch
import torch.distributed as dist
from core.distributed import gathered, generates_on_shards, make_accelerator, shard_fsdp2
from core.generation import SamplingConfig, generate_batch
from core.models import load_causal_lm, load_tokenizer

accelerator = make_accelerator()
rank = accelerator.process_index
tokenizer = load_tokenizer("embedded:tiny-llama")
whole = load_causal_lm("embedded:tiny-llama")
sharded = shard_fsdp2(load_causal_lm("embedded:tiny-llama"), "cpu")
conversations = [[{"role": "user", "content": f"Question {rank}: what is {rank} + 1?"}]]
sampling = SamplingConfig(temperature=0.0, max_new_tokens=2 + 4 * rank)
on_shards = generates_on_shards(sharded)
with gathered(sharded):
    inside_gathered = generates_on_shards(sharded)
ours = generate_batch(sharded, tokenizer, conversations, sampling, seed=0)
reference = generate_batch(whole, tokenizer, conversations, sampling, seed=0)
result = {"rank": rank, "on_shards": on_shards, "inside_gathered": inside_gathered,
          "n_new": int(ours.response_ids.shape[1]), "same": ours.response_ids.tolist() == reference.response_ids.tolist()}
with open(sys.argv[1] + f".{rank}.json", "w") as handle:
    json.dump(result, handle)
'''


def test_processes_with_different_lengths_stay_in_step_on_shards(tmp_path):
    script = tmp_path / "generate_on_shards.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path / "result")]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    by_rank = [json.loads((tmp_path / f"result.{rank}.json").read_text()) for rank in (0, 1)]
    for row in by_rank:
        assert row["on_shards"] and not row["inside_gathered"]  # synced only when forwards gather
        assert row["same"], row  # the shards generate what the whole model generates
    assert [row["n_new"] for row in by_rank] == [2, 6]  # each rank kept its own length
