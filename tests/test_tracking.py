"""report_to: every stage's metrics reach TensorBoard and wandb (offline) under the same
names, the numeric keys of its metrics.jsonl named `<stage>/<key>`; the sinks on a fake
metric stream (names, non-numbers skipped, closed on failure), MLflow, the old
`tensorboard` key, a missing package, and push_to_hub with the hub client replaced."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from core.config import StrictModel, load_config, validate_config
from core.errors import ConfigError, RLHFError
from core.run import StageRun, read_metrics
from core.tracking import WANDB_STEP, ReportTo, tracked_name, tracked_scalars

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BOTH = "report_to=[tensorboard, wandb]"


# -- reading what each sink wrote --------------------------------------------------------
def tensorboard_names(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return set(events.Tags()["scalars"])


def wandb_records(path: Path):
    """The protobuf records of a `.wandb` file: a 7-byte header (`:W&B`, magic, version),
    then LevelDB's log format (32 KiB blocks; each record a 7-byte header: crc32,
    length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4). wandb ships no reader of its own."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding to the end of the block
            pos += left - 7 - length
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            yield record


def wandb_names(folder: Path) -> set[str]:
    """The metric names in the stage's one offline wandb run (wandb's own `_step`,
    `_runtime`, `_timestamp` and the hidden x axis left out)."""
    runs = sorted((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs  # a stage run inside this one logs under its own folder
    names = set()
    for record in wandb_records(runs[0]):
        if record.WhichOneof("record_type") == "history":
            names |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    return {name for name in names if not name.startswith("_") and name != WANDB_STEP}


def jsonl_names(folder: Path, stage: str) -> set[str]:
    return {tracked_name(stage, key) for row in read_metrics(folder) for key, value in row.items()
            if key not in ("step", "stage") and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


def assert_same_names(folder: Path, stage: str) -> set[str]:
    expected = jsonl_names(folder, stage)
    assert expected, f"{stage} logged no numbers"  # a stage that never logs would pass vacuously
    assert tensorboard_names(folder) == expected
    assert wandb_names(folder) == expected
    return expected


# -- each stage on its smoke preset, tiny model, report_to: [tensorboard, wandb] -----------
@pytest.fixture(scope="module", autouse=True)
def offline_wandb(tmp_path_factory):
    """wandb offline, with its settings and caches in a temporary folder; one torch thread
    (two spinning threads per process on the shared 2-core box run the tiny model slower)."""
    import torch

    home = tmp_path_factory.mktemp("wandb_home")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            patch.setenv(name, str(home / name.lower()))
        patch.delenv("WANDB_PROJECT", raising=False)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory) -> Path:
    """The reward stage on its smoke preset; its model serves as both RMs below."""
    from reward.config import RewardConfig
    from reward.train import run

    out = tmp_path_factory.mktemp("tracking") / "rm"
    config = load_config(RewardConfig, CONFIGS / "reward" / "smoke.yaml", [
        f"output_dir={out}", "toyworld_pairs=24", "eval_pairs=8", BOTH])
    run(config)
    return out


def test_sft_reports_the_same_names_to_tensorboard_and_wandb(tmp_path):
    from sft.config import SFTConfig
    from sft.train import run

    config = load_config(SFTConfig, CONFIGS / "sft" / "smoke.yaml", [
        f"output_dir={tmp_path}", "data.toyworld_n=8", "eval.enabled=false", BOTH])
    run(config)
    names = assert_same_names(tmp_path, "sft")
    assert "sft/train/loss" in names


def test_reward_reports_the_same_names_to_tensorboard_and_wandb(rm_folder):
    names = assert_same_names(rm_folder, "reward")
    assert any(name.startswith("reward/") and "loss" in name for name in names)


def test_rejection_sampling_reports_the_same_names_to_tensorboard_and_wandb(rm_folder, tmp_path):
    from rejection_sampling.config import RSConfig
    from rejection_sampling.sample import run

    rm = rm_folder / "model"
    config = load_config(RSConfig, CONFIGS / "rs" / "smoke.yaml", [
        f"output_dir={tmp_path}", f"reward_models.helpfulness={rm}", f"reward_models.safety={rm}",
        "prompts.n=4", "k=2", "shard_size=2", "max_new_tokens=6", "eval.enabled=false",
        "finetune_enabled=false", BOTH])  # the random model's answers are all cut off: no targets to fine-tune on
    run(config)
    assert_same_names(tmp_path, "rejection_sampling")


def test_gatt_reports_the_same_names_to_tensorboard_and_wandb(tmp_path):
    from gatt.config import GattConfig
    from gatt.train import run

    config = load_config(GattConfig, CONFIGS / "gatt" / "smoke.yaml", [
        f"output_dir={tmp_path}", "eval.policy.enabled=false", BOTH])
    run(config)
    names = assert_same_names(tmp_path, "gatt")
    assert "gatt/eval/gain" in names
    # the fine-tune is the SFT stage inside this one: its own folder, its own (concurrent) runs
    assert "sft/train/loss" in assert_same_names(tmp_path / "sft", "sft")


def test_ppo_reports_the_same_names_to_tensorboard_and_wandb(rm_folder, tmp_path):
    from ppo.config import PPOConfig
    from ppo.train import run

    rm = rm_folder / "model"
    config = load_config(PPOConfig, CONFIGS / "ppo" / "smoke.yaml", [
        f"output_dir={tmp_path}", f"reward_models.helpfulness={rm}", f"reward_models.safety={rm}",
        "data.n_prompts=8", "eval.n_prompts=2", "eval.every=0", "sampling.max_new_tokens=6",
        "ppo.batch_size=4", "ppo.minibatch_size=2", "ppo.chunk_size=2", "ppo.micro_batch_size=2",
        "ppo.ppo_epochs=1", "iterations=2", "checkpoint_every=1", "progress=false", BOTH])
    run(config)
    assert_same_names(tmp_path, "ppo")


# -- the sinks on a fake metric stream ---------------------------------------------------
class Cfg(StrictModel):
    lr: float = 0.1
    report_to: ReportTo = ()


STREAM = [
    (0, {"eval/win rate (%)": 0.5, "note": "text", "flag": True, "nothing": None, "ids": [1, 2]}),
    (3, {"loss": 1.5, "tokens": 12, "bad": float("nan")}),
    (1, {"loss": 1.25}),  # a step back (a report logged after training): kept in every sink
]


def test_names_and_skipped_values():
    assert tracked_name("sft", "train/loss") == "sft/train/loss"
    assert tracked_name("gatt", "eval/win rate (%)") == "gatt/eval/win rate ___"  # characters MLflow refuses
    assert tracked_scalars("sft", {"a": 1, "b": 2.5, "c": True, "d": "x", "e": None, "f": float("inf")}) == {
        "sft/a": 1, "sft/b": 2.5}


def test_report_to_spellings():
    for value, expected in [("none", ()), (None, ()), ([], ()), ("wandb", ("wandb",)),
                            (["tensorboard", "mlflow", "tensorboard"], ("tensorboard", "mlflow"))]:
        assert validate_config(Cfg, {"report_to": value}).report_to == expected
    with pytest.raises(ConfigError, match="report_to.0"):
        validate_config(Cfg, {"report_to": ["wandbb"]})
    with pytest.raises(ConfigError, match="'none' cannot be listed"):
        validate_config(Cfg, {"report_to": ["none", "wandb"]})
    assert Cfg(report_to=("wandb",)).model_dump(mode="json")["report_to"] == ["wandb"]


@pytest.mark.parametrize("module,preset", [("sft.config:SFTConfig", "sft"), ("reward.config:RewardConfig", "reward"),
                                           ("rejection_sampling.config:RSConfig", "rs"), ("gatt.config:GattConfig", "gatt")])
def test_old_tensorboard_key_names_report_to(module, preset):
    import importlib

    name, cls = module.split(":")
    config_cls = getattr(importlib.import_module(name), cls)
    with pytest.raises(ConfigError, match="key 'tensorboard' is now 'report_to'"):
        load_config(config_cls, CONFIGS / preset / "smoke.yaml", ["tensorboard=true"])
    assert load_config(config_cls, CONFIGS / preset / "smoke.yaml").report_to == ()  # none by default


def test_stream_reaches_tensorboard_and_wandb_under_the_same_names(tmp_path):
    with StageRun(tmp_path, "sft", Cfg(), report_to=["tensorboard", "wandb"]) as run:
        for step, metrics in STREAM:
            run.metrics.log(step, **metrics)
    expected = {"sft/eval/win rate ___", "sft/loss", "sft/tokens"}
    assert jsonl_names(tmp_path, "sft") == tensorboard_names(tmp_path) == wandb_names(tmp_path) == expected
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("sft/loss")] == [(3, 1.5), (1, 1.25)]


def test_sinks_close_when_the_stage_fails(tmp_path, monkeypatch):
    import core.tracking as tracking

    closed = []
    monkeypatch.setattr(tracking.TensorBoardSink, "close", lambda self, failed: closed.append(("tensorboard", failed)))
    monkeypatch.setattr(tracking.WandbSink, "close", lambda self, failed: (self.run.finish(exit_code=1), closed.append(("wandb", failed))))
    with pytest.raises(RuntimeError, match="boom"):
        with StageRun(tmp_path, "reward", Cfg(), report_to=["tensorboard", "wandb"]) as run:
            run.metrics.log(1, loss=0.5)
            raise RuntimeError("boom")
    assert closed == [("tensorboard", True), ("wandb", True)]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and not (tmp_path / ".lock").exists()


def test_a_sink_that_cannot_start_leaves_no_lock_and_no_manifest(tmp_path, monkeypatch):
    import core.tracking as tracking

    def refuse(self, folder, stage, config):
        raise RuntimeError("no API key")

    monkeypatch.setattr(tracking.WandbSink, "__init__", refuse)
    closed = []
    monkeypatch.setattr(tracking.TensorBoardSink, "close", lambda self, failed: closed.append(failed))
    with pytest.raises(RLHFError, match="report_to: wandb could not start.*no API key"):
        with StageRun(tmp_path, "sft", Cfg(), report_to=["tensorboard", "wandb"]):
            pass
    assert closed == [True]  # the sink opened before it is closed again
    assert not (tmp_path / ".lock").exists() and not (tmp_path / "manifest.json").exists()


def test_missing_package_names_report_to_and_the_pip_package(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))
    with pytest.raises(ConfigError, match=r"report_to.*wandb, mlflow is not installed; `pip install wandb mlflow-skinny`"):
        StageRun(tmp_path / "stage", "sft", Cfg(), report_to=["tensorboard", "wandb", "mlflow"])
    assert not (tmp_path / "stage").exists()  # raised before anything is written


def test_mlflow_gets_the_same_names_with_steps(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with StageRun(tmp_path, "sft", Cfg(), report_to=["mlflow", "tensorboard"]) as run:
        for step, metrics in STREAM:
            run.metrics.log(step, **metrics)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("llama-rlhf")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "sft" and found.info.status == "FINISHED"
    assert set(found.data.metrics) == tensorboard_names(tmp_path) == jsonl_names(tmp_path, "sft")
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "sft/loss")] == [(3, 1.5), (1, 1.25)]
    assert found.data.params["lr"] == "0.1"


# -- push_to_hub ---------------------------------------------------------------------------
class FakeApi:
    calls: list = []

    def create_repo(self, repo_id, repo_type="model", exist_ok=False):
        self.calls.append(("create_repo", repo_id, exist_ok))

    def upload_folder(self, repo_id, folder_path, repo_type="model", commit_message=""):
        self.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_to_hub_uploads_the_model_folder_with_its_card(tmp_path, monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    with StageRun(tmp_path, "sft", Cfg(), push_to_hub="me/tiny-sft") as run:
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        run.add_output("model", model)
    assert FakeApi.calls == [("create_repo", "me/tiny-sft", True), ("upload_folder", "me/tiny-sft", ["README.md", "config.json"])]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["pushed_to_hub"] == {"repo_id": "me/tiny-sft", "commit": "https://huggingface.co/me/tiny-sft/commit/abc"}


def test_push_to_hub_failure_keeps_the_stage_complete(tmp_path, monkeypatch):
    import huggingface_hub

    class Offline(FakeApi):
        def upload_folder(self, **kwargs):
            raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    with pytest.raises(RLHFError, match=r"push_to_hub: uploading .* failed .*no network.*hf upload me/x"):
        with StageRun(tmp_path, "sft", Cfg(), push_to_hub="me/x") as run:
            (tmp_path / "model").mkdir()
            run.add_output("model", tmp_path / "model")
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "completed"
    assert not (tmp_path / ".lock").exists()


# -- a pipeline-level report_to ------------------------------------------------------------
def test_pipeline_report_to_reaches_every_stage_and_checks_packages(monkeypatch):
    from pipelines.config import PipelineConfig
    from pipelines.run import Pipeline

    config = load_config(PipelineConfig, CONFIGS / "pipelines" / "smoke.yaml", ["report_to=[wandb, tensorboard]"])
    stages = Pipeline(config).stage_configs()
    assert len(stages) >= 5 and all(stage.report_to == ("wandb", "tensorboard") for _, stage in stages)
    assert all(stage.report_to == () for _, stage in Pipeline(load_config(
        PipelineConfig, CONFIGS / "pipelines" / "smoke.yaml")).stage_configs())  # unset: each preset's own

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"key 'sft.report_to': wandb is not installed"):
        Pipeline(config).stage_configs()
