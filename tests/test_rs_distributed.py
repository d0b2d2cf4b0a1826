"""Rejection sampling under `accelerate launch --cpu --num_processes 2` samples exactly what one process does.

Each shard's seed depends only on (seed, iteration, shard index), and the two
processes take alternate shards, so the shard files must be byte-identical to a
one-process run's (the invariant that makes multi-process sampling trustworthy).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "rs" / "smoke.yaml"


@pytest.mark.slow
def test_two_processes_sample_the_same_shards_as_one(tmp_path):
    from test_rs_sample import _make_rm

    from core.config import load_config
    from rejection_sampling.config import RSConfig
    from rejection_sampling.sample import run

    helpful, safety = _make_rm(tmp_path / "helpful", 1), _make_rm(tmp_path / "safety", 2)
    overrides = [f"reward_models.helpfulness={helpful}", f"reward_models.safety={safety}", "prompts.n=6", "k=2", "shard_size=2",
                 "max_new_tokens=6", "finetune_enabled=false", "eval.enabled=false"]
    one = tmp_path / "one"
    run(load_config(RSConfig, SMOKE, [f"output_dir={one}", *overrides]))

    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rejection_sampling", "--config", str(SMOKE),
               f"output_dir={two}", *overrides]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((two / "manifest.json").read_text())["status"] == "completed"

    def shards(out):
        return {p.name: p.read_text() for p in sorted((out / "samples").glob("shard-*.jsonl"))}

    assert len(shards(one)) == 3
    assert shards(two) == shards(one)
    assert (two / "best.jsonl").read_text() == (one / "best.jsonl").read_text().replace(str(one), str(two))
