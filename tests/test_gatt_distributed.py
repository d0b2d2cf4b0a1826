"""GAtt under a multi-process launch gives what one process gives (issue 24).

The dialogues are cut into shards whose seeds depend on the shard's index only; under
N processes process p synthesises shards p, p + N, ...; the rows and stats are gathered
and written once by the main process, which alone holds the run folder's lock. So the
synthesised data must be byte-identical to one process's, the stats identical, and the
fine-tune (the SFT stage's TRL trainer under accelerate's DDP, 2 processes x batch 2
against 1 process x batch 4) must end at the same weights within float tolerance.

`accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.x (its
simple launcher needs mpirun for more); the elastic launcher with ACCELERATE_USE_CPU
starts two gloo processes, and the tests check from the manifest that two ran.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gatt.synthesize as synthesize_module
from core.config import load_config
from core.distributed import check_trainer_engine
from core.errors import ConfigError
from gatt.config import GattConfig, RankingSection, SynthesisSection
from gatt.synthesize import Ranker, merge_stats, shard_seed, shards, synthesize

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "gatt" / "smoke.yaml"
# 8 dialogues in 4 shards of 2 (the smoke preset's shard_size); repairs keep every dialogue,
# so the fine-tune has 8 rows: 2 steps of 4 rows in both runs.
SETTINGS = ["dialogues.n=8", "synthesis.repair=apply"]
LAUNCH_2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]
TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(ROOT)}


# ---------------------------------------------------------------- pure parts
def test_shards_and_their_seeds_depend_on_the_index_only():
    assert shards(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert shards(4, 8) == [slice(0, 4)]
    assert shard_seed(7, 0) == 7  # one shard samples what the stage sampled before shards existed
    assert len({shard_seed(7, index) for index in range(100)}) == 100
    assert SynthesisSection(k=2, sampling={"batch_size": 8}).dialogues_per_shard() == 4  # one full batch a turn
    assert SynthesisSection(k=4, sampling={"batch_size": 2}).dialogues_per_shard() == 1
    assert SynthesisSection(k=2, shard_size=3).dialogues_per_shard() == 3


@pytest.mark.parametrize("repair", ["none", "apply"])
def test_merged_shard_stats_are_the_stats_of_one_synthesis(monkeypatch, repair):
    """With a sampler whose answers do not depend on the batch, synthesising the dialogues
    as two shards and merging gives exactly the rows and stats of one synthesis (shares
    recomputed from summed counts, not averaged)."""
    from test_gatt_synthesis import DIALOGUES, MARKER, PREFIX, stub_generate

    monkeypatch.setattr(synthesize_module, "generate", stub_generate(turn_to_fail=2))
    config = SynthesisSection(k=2, ranking=RankingSection(by="first"), repair=repair)
    dealt = [PREFIX, MARKER, PREFIX]

    def synth(part):
        return synthesize(None, None, DIALOGUES[part], dealt[part], config, Ranker(config.ranking), seed=0)

    whole_records, whole = synth(slice(0, 3))
    (first_records, first), (second_records, second) = synth(slice(0, 2)), synth(slice(2, 3))
    assert first_records + second_records == whole_records
    merged = merge_stats([first, second])
    assert merged.to_dict() == whole.to_dict()
    assert merge_stats([whole]).to_dict() == whole.to_dict()
    # a share is recomputed from the summed counts, not averaged: at turn 2, 2 of 4 samples
    # adhere in the first shard and 0 of 2 in the second (d2 fails there): 2 of 6, not 1/4
    assert first.sample_checks_by_turn[2] == [2, 4] and second.sample_checks_by_turn[2] == [0, 2]
    assert merged.sample_checks_by_turn[2] == [2, 6] and merged.sample_adherence_by_turn[2] == pytest.approx(1 / 3)


def test_distributed_key_and_what_each_engine_needs():
    assert load_config(GattConfig, SMOKE, []).distributed == "ddp"
    with pytest.raises(ConfigError, match="distributed"):
        load_config(GattConfig, SMOKE, ["distributed=mpi"])
    check_trainer_engine("ddp", 2, has_gpu=False, fsdp_launch=False, what="GAtt's fine-tune", command="-m gatt run")
    check_trainer_engine("none", 1, has_gpu=False, fsdp_launch=False, what="GAtt's fine-tune", command="-m gatt run")
    check_trainer_engine("fsdp2", 8, has_gpu=True, fsdp_launch=True, what="GAtt's fine-tune", command="-m gatt run")
    with pytest.raises(ConfigError, match="distributed: none runs one process, but this launch started 2"):
        check_trainer_engine("none", 2, has_gpu=False, fsdp_launch=False, what="GAtt's fine-tune", command="-m gatt run")
    with pytest.raises(ConfigError, match="does not run on CPU"):
        check_trainer_engine("fsdp2", 2, has_gpu=False, fsdp_launch=False, what="GAtt's fine-tune", command="-m gatt run")
    with pytest.raises(ConfigError, match="did not enable it"):
        check_trainer_engine("fsdp2", 2, has_gpu=True, fsdp_launch=False, what="GAtt's fine-tune", command="-m gatt run")
    with pytest.raises(ConfigError, match="set distributed: fsdp2"):
        check_trainer_engine("ddp", 2, has_gpu=True, fsdp_launch=True, what="GAtt's fine-tune", command="-m gatt run")


def test_none_refuses_a_multi_process_launch_before_touching_the_folder(tmp_path, monkeypatch):
    from gatt import train

    class TwoProcesses:  # what PartialState says under a 2-process launch
        num_processes, process_index, is_main_process = 2, 0, True

    monkeypatch.setattr("accelerate.PartialState", lambda **kwargs: TwoProcesses())
    with pytest.raises(ConfigError, match="distributed: none runs one process"):
        train.run(load_config(GattConfig, SMOKE, [f"output_dir={tmp_path / 'gatt'}", "distributed=none"]))
    assert not (tmp_path / "gatt").exists()


# ---------------------------------------------------------------- two processes
def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "sft" / "model" / "model.safetensors")


def stats_without_split(out: Path) -> dict:
    stats = json.loads((out / "manifest.json").read_text())["synthesis"]
    return {key: value for key, value in stats.items() if key != "shards_by_process"}


def launch_two(launcher: list[str], out: Path, env: dict = ENV) -> dict:
    """`gatt run` under a 2-process CPU launch; its manifest, checked to say 2 processes ran."""
    proc = subprocess.run([*launcher, "-m", "gatt", "run", "--config", str(SMOKE), f"output_dir={out}", *SETTINGS,
                           "finetune.training.batch_size=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RunLockedError" not in proc.stderr and "is in use by process" not in proc.stderr  # the other process never meets the lock
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["processes"] == {"num_processes": 2, "distributed": "ddp"}
    assert manifest["synthesis"]["shards_by_process"] == [[0, 2], [1, 3]]  # both processes synthesised
    assert not (out / ".lock").exists() and not list(out.glob("*.lock"))
    return manifest


def assert_same_run(two: Path, one: Path) -> None:
    assert (two / "gatt_data.jsonl").read_bytes() == (one / "gatt_data.jsonl").read_bytes()
    assert stats_without_split(two) == stats_without_split(one)
    ours, theirs = weights(two), weights(one)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4, msg=name)
    # the fine-tune stepped: the weights moved from the start (same init in both runs)
    from core.models import load_causal_lm

    start = load_causal_lm("embedded:tiny-llama", dtype="float32").state_dict()
    assert any(not torch.equal(ours[name], start[name]) for name in ours if name in start)


def assert_same_evaluation(two: Path, one: Path) -> None:
    for label in ("before", "after", "reminded"):
        name = f"eval_dialogues_{label}.jsonl"
        assert (two / name).read_bytes() == (one / name).read_bytes(), name

    def report(out: Path) -> dict:  # the after model's folder is each run's own
        return json.loads((out / "eval.json").read_text().replace(str(out), "OUT"))

    assert report(two) == report(one)


def test_two_processes_run_the_stage_as_one(tmp_path):
    """`accelerate launch` (2 CPU processes) against one process in this process: data,
    stats, fine-tuned weights and the evaluation (split by row over the processes)."""
    from gatt.train import run

    two = tmp_path / "two"
    launch_two(LAUNCH_2, two)
    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes (OMP_NUM_THREADS=1)
    try:
        run(load_config(GattConfig, SMOKE, [f"output_dir={one}", *SETTINGS, "finetune.training.batch_size=4"]))
    finally:
        torch.set_num_threads(threads)
    assert json.loads((one / "manifest.json").read_text())["synthesis"]["shards_by_process"] == [[0, 1, 2, 3]]
    assert_same_run(two, one)
    assert_same_evaluation(two, one)


@pytest.mark.slow
def test_torchrun_two_processes_run_the_stage_as_one(tmp_path):
    """The same under `torchrun --nproc_per_node 2`, the one-process run launched too."""
    two, one = tmp_path / "two", tmp_path / "one"
    launch_two(TORCHRUN_2, two, env={k: v for k, v in ENV.items() if k != "ACCELERATE_USE_CPU"})  # the stage sees a CPU launch itself
    proc = subprocess.run([sys.executable, "-m", "gatt", "run", "--config", str(SMOKE), f"output_dir={one}", *SETTINGS,
                           "finetune.training.batch_size=4"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_run(two, one)
    assert_same_evaluation(two, one)
