"""RM training under `accelerate launch --cpu --num_processes 2` matches one process.

The global batch is fixed (8 pairs per optimizer step): one process accumulates
2 x 4 pairs, two processes take 4 pairs each. Accelerate hands consecutive
micro-batches to the two processes, so both runs see the same pairs per step and
should reach the same held-out accuracy and the same final loss, within noise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "reward" / "smoke.yaml"
OVERRIDES = ["toyworld_pairs=32", "eval_pairs=32", "batch_size=8", "per_device_batch_size=4", "learning_rate=1.0e-3"]


def _final_loss(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r][-1]


def test_two_processes_match_one(tmp_path):
    from core.config import load_config
    from reward.config import RewardConfig
    from reward.train import run

    one = tmp_path / "one"
    run(load_config(RewardConfig, SMOKE, [f"output_dir={one}", *OVERRIDES]))

    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "reward", "train", "--config", str(SMOKE),
               f"output_dir={two}", *OVERRIDES]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    acc_one = json.loads((one / "eval.json").read_text())["toyworld"]["overall"]["accuracy"]
    acc_two = json.loads((two / "eval.json").read_text())["toyworld"]["overall"]["accuracy"]
    assert abs(acc_one - acc_two) <= 0.1, (acc_one, acc_two)
    assert _final_loss(one) == pytest.approx(_final_loss(two), abs=0.05)
