"""Rejection sampling on 2 CPU processes gives exactly what one process gives.

Each shard's seed depends only on (seed, iteration, shard index), and the two
processes take alternate shards, so the shard files must be byte-identical to a
one-process run's. The launch is the one that really starts 2 processes on a CPU
box (plain `accelerate launch --cpu --num_processes 2` starts ONE with accelerate
1.16: its simple launcher needs mpirun): accelerate's multi-GPU launcher with
ACCELERATE_USE_CPU (gloo). The manifest records how many processes ran.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "rs" / "smoke.yaml"


def _launch(out, overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rejection_sampling", "--config", str(SMOKE),
               f"output_dir={out}", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _shards(out):
    return {p.name: p.read_text() for p in sorted((out / "samples").glob("shard-*.jsonl"))}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from test_rs_sample import _make_policy, _make_rm

    root = tmp_path_factory.mktemp("models")
    return [f"reward_models.helpfulness={_make_rm(root / 'helpful', 1)}", f"reward_models.safety={_make_rm(root / 'safety', 2)}",
            f"policy={_make_policy(root / 'policy')}"]


def test_two_processes_sample_the_same_shards_as_one(models, tmp_path):
    import torch

    from core.config import load_config
    from rejection_sampling.config import RSConfig
    from rejection_sampling.sample import run

    overrides = [*models, "prompts.n=6", "k=2", "shard_size=2", "max_new_tokens=6", "finetune_enabled=false", "eval.enabled=false",
                 "temperature_grid=[0.7, 1.3]", "temperature_probe_prompts=2"]
    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(load_config(RSConfig, SMOKE, [f"output_dir={one}", *overrides]))
    finally:
        torch.set_num_threads(threads)

    two = tmp_path / "two"
    proc = _launch(two, overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["num_processes"] == 2 and json.loads((one / "manifest.json").read_text())["num_processes"] == 1
    assert manifest["shards_sampled_now"] == 2  # the main process's shards 0 and 2; the other sampled shard 1
    assert len(_shards(one)) == 3
    assert _shards(two) == _shards(one)
    assert (two / "best.jsonl").read_text() == (one / "best.jsonl").read_text().replace(str(one), str(two))
    assert (two / "temperature_probe.json").read_text() == (one / "temperature_probe.json").read_text()


@pytest.mark.slow
def test_two_process_fine_tune_equals_one_process(models, tmp_path):
    """The fine-tune under DDP on 2 processes (TRL under accelerate, batch 2 per process)
    equals one process with batch 4: same data, same global batch, same weights."""
    from safetensors.torch import load_file

    overrides = [*models, "prompts.n=4", "k=2", "shard_size=2", "max_new_tokens=6", "eval.enabled=false", "finetune.batch_size=2",
                 "finetune.epochs=1", "replay.n=4", "replay.exclude=[]"]
    one = tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "rejection_sampling", "--config", str(SMOKE), f"output_dir={one}", *overrides,
                           "finetune.gradient_accumulation_steps=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    proc = _launch(two, overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((two / "manifest.json").read_text())["num_processes"] == 2
    a, b = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-4, name


def test_fsdp2_fine_tune_is_refused_on_cpu_and_none_refuses_two_processes(models, tmp_path):
    from core.config import load_config
    from core.errors import ConfigError
    from rejection_sampling.config import RSConfig
    from rejection_sampling.sample import check_distributed

    if __import__("torch").cuda.is_available():
        pytest.skip("the CPU refusal")
    with pytest.raises(ConfigError, match="fsdp2.*does not run on CPU"):
        check_distributed(load_config(RSConfig, SMOKE, ["distributed=fsdp2"]), 1)
    check_distributed(load_config(RSConfig, SMOKE, ["distributed=fsdp2", "finetune_enabled=false"]), 2)  # sampling only: fine
    with pytest.raises(ConfigError, match="distributed: none runs one process"):
        check_distributed(load_config(RSConfig, SMOKE, ["distributed=none"]), 2)
