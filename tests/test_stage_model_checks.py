"""Every stage checks every model its config names before it writes anything (issue #21).

A reward-model folder given as a policy, a stage folder instead of its `model/`, an
unmerged LoRA adapter or a corrupt `model.safetensors` is exit status 2 and ONE error
line that names the config key, the path and, where there is one, the right path;
the output folder is not created (or, when an earlier run left it, not changed).
The stages run through the real CLI (`core.cli.main`) on the smoke presets and stop
at the check, so nothing here trains or loads a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from core.cli import main
from core.errors import HubUnreachableError, ModelLoadError
from core.model_paths import check_config_models

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SFT, RM, RS, PPO, GATT = (str(CONFIGS / stage / "smoke.yaml") for stage in ("sft", "reward", "rs", "ppo", "gatt"))

pytestmark = pytest.mark.usefixtures("library_log_handlers_on_real_stderr")


# --------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """A run folder as the pipeline lays it out (sft/model, rm_safety/model), a policy with
    a truncated weight file, an unmerged adapter and a two-output classifier; built once."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models import resolve_model_path

    root = tmp_path_factory.mktemp("stage_model_checks")
    tiny = Path(resolve_model_path("embedded:tiny-llama"))
    run = root / "runs" / "x"
    sft = run / "sft"
    shutil.copytree(tiny, sft / "model")
    (sft / "manifest.json").write_text(json.dumps({"stage": "sft", "status": "completed"}))
    (sft / "config.yaml").write_text("model: {name: embedded:tiny-llama}\n")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    for name, labels in (("rm_safety", 1), ("two_labels", 2)):
        model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=labels)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(run / name / "model", safe_serialization=True)
        tokenizer.save_pretrained(run / name / "model")
    corrupt = root / "corrupt"
    shutil.copytree(tiny, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut off midway
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny), "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    return {"sft_stage": str(sft), "sft": str(sft / "model"), "rm": str(run / "rm_safety" / "model"),
            "two_labels": str(run / "two_labels" / "model"), "corrupt": str(corrupt), "weights": str(weights),
            "adapter": str(adapter)}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>", p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def leave_earlier_run(out: Path) -> None:
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"stage": "earlier", "status": "failed", "config": {}}))
    (out / "config.yaml").write_text("earlier: true\n")
    (out / "keep.txt").write_text("an earlier run's file\n")


def refused(argv: list[str], out: Path, capsys, *words: str) -> str:
    """Run `rlhf ARGV`; exit 2, one error line holding every one of `words`, `out` as it was."""
    before = snapshot(out) if out.exists() else None
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), err
    assert "Traceback" not in err, err
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    if before is None:
        assert not out.exists(), f"{out} was created: {sorted(p.name for p in out.rglob('*'))}"
    else:
        assert snapshot(out) == before, "the command wrote or changed files in the earlier run's folder"
    return errors[0]


def rms(m: dict) -> list[str]:
    return [f"reward_models.helpfulness={m['rm']}", f"reward_models.safety={m['rm']}"]


# ---------------------------------------------------------------------- stages
STAGES = {
    # stage: (argv builder(out, policy, models), the key its policy is named by)
    "sft": (lambda out, policy, m: ["sft", "--config", SFT, f"output_dir={out}", f"model.name={policy}"], "model.name"),
    "rs": (lambda out, policy, m: ["rs", "--config", RS, f"output_dir={out}", f"policy={policy}", *rms(m)], "policy"),
    "ppo": (lambda out, policy, m: ["ppo", "--config", PPO, f"output_dir={out}", f"model.policy={policy}", *rms(m)], "model.policy"),
    "gatt": (lambda out, policy, m: ["gatt", "run", "--config", GATT, f"output_dir={out}", f"model={policy}"], "model"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_reward_model_given_as_the_policy(stage, models, tmp_path, capsys):
    argv, key = STAGES[stage]
    out = tmp_path / "out"
    refused(argv(out, models["rm"], models), out, capsys,
            f"error: {key}: {models['rm']} is a reward model", "not a causal LM", models["sft"])


@pytest.mark.parametrize("stage", list(STAGES))
def test_corrupt_weight_file_in_the_policy(stage, models, tmp_path, capsys):
    argv, key = STAGES[stage]
    out = tmp_path / "out"
    refused(argv(out, models["corrupt"], models), out, capsys, f"error: {key}: {models['weights']}", "truncated")


@pytest.mark.parametrize("stage", ["sft", "rs"])
def test_an_earlier_runs_folder_is_left_as_it_was(stage, models, tmp_path, capsys):
    """SFT used to write its toyworld demonstrations into the folder before loading the model."""
    argv, key = STAGES[stage]
    out = tmp_path / "out"
    leave_earlier_run(out)
    refused(argv(out, models["rm"], models), out, capsys, f"error: {key}: ", "is a reward model")


def test_stage_folder_and_adapter_name_the_right_path(models, tmp_path, capsys):
    out = tmp_path / "out"
    refused(STAGES["ppo"][0](out, models["sft_stage"], models), out, capsys,
            f"error: model.policy: {models['sft_stage']} is a stage folder; its model is {models['sft']}")
    refused(STAGES["gatt"][0](out, models["adapter"], models), out, capsys,
            f"error: model: {models['adapter']} is an unmerged LoRA adapter", "merge it")


def test_rs_init_model_is_checked_as_a_policy(models, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["rs", "--config", RS, f"output_dir={out}", f"init_model={models['rm']}", *rms(models)]
    refused(argv, out, capsys, f"error: init_model: {models['rm']} is a reward model")


def test_reward_training_init_model(models, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["reward", "train", "--config", RM, f"output_dir={out}"]
    refused([*base, f"init_model={models['corrupt']}"], out, capsys, f"error: init_model: {models['weights']}", "truncated")
    refused([*base, f"init_model={models['sft_stage']}"], out, capsys,
            f"error: init_model: {models['sft_stage']} is a stage folder; its model is {models['sft']}")


def test_rms_are_checked_where_a_stage_scores_with_them(models, tmp_path, capsys):
    out = tmp_path / "out"
    sft = ["sft", "--config", SFT, f"output_dir={out}", f"reward_models.helpfulness={models['sft']}", f"reward_models.safety={models['rm']}"]
    refused(sft, out, capsys, f"error: reward_models.helpfulness: {models['sft']}", "not a reward model")
    ppo = ["ppo", "--config", PPO, f"output_dir={out}", f"reward_models.helpfulness={models['rm']}", f"reward_models.safety={models['corrupt']}"]
    refused(ppo, out, capsys, "error: reward_models.safety: ", "not a reward model")


def test_gatt_eval_and_synthesize(models, tmp_path, capsys):
    out = tmp_path / "out"
    refused(["gatt", "eval", "--config", GATT, "--model", models["rm"], "--out", str(out)], out, capsys,
            f"error: --model: {models['rm']} is a reward model")
    refused(["gatt", "eval", "--config", GATT, "--model", models["sft"], "--baseline", models["corrupt"], "--out", str(out)], out, capsys,
            f"error: --baseline: {models['weights']}")
    refused(["gatt", "synthesize", "--config", GATT, f"model={models['rm']}", f"output_dir={out}"], out, capsys,
            f"error: model: {models['rm']} is a reward model")


def test_pipeline_base_model_before_the_run_folder(models, tmp_path, capsys):
    data = yaml.safe_load((CONFIGS / "pipelines" / "smoke.yaml").read_text())
    for section in [data["sft"], data["reward"], data["gatt"], *(v.get(k) for v in data["versions"] for k in ("rejection_sampling", "ppo"))]:
        if section:
            section["preset"] = str(REPO / section["preset"])
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    refused(["run", str(pipeline), "--run-dir", str(out), f"base_model={models['rm']}"], out, capsys,
            f"error: base_model: {models['rm']} is a reward model")


# ------------------------------------------------------- pipeline steps, pieces
def test_pipeline_eval_and_pair_collection_check_before_their_folders(models, tmp_path):
    from core.evaluation import HeldoutEval
    from pipelines.config import RefreshSpec
    from pipelines.run import CollectConfig, EvalStageConfig, collect_preferences, evaluate_model

    out = tmp_path / "eval"
    config = EvalStageConfig(version="v1", model=models["rm"], start_model=models["sft"], heldout=HeldoutEval(n_prompts=2),
                             reward_models={"helpfulness": models["rm"], "safety": models["rm"]}, xstest_data=None, xstest_limit=None)
    with pytest.raises(ModelLoadError, match=r"^eval v1: model: .* is a reward model"):
        evaluate_model(config, out)
    config = config.model_copy(update={"model": models["sft"], "reward_models": {"helpfulness": models["rm"], "safety": models["corrupt"]}})
    with pytest.raises(ModelLoadError, match=r"^eval v1: reward_models.safety: .* not a reward model"):
        evaluate_model(config, out)
    assert not out.exists()

    out = tmp_path / "pairs"
    with pytest.raises(ModelLoadError, match=r"^pairs v2: model: .*truncated"):
        collect_preferences(CollectConfig(version="v2", model=models["corrupt"], refresh=RefreshSpec(), seed=0), out)
    assert not out.exists()


def test_ppo_critic_from_a_two_output_classifier_is_a_model_error(models):
    import torch

    from ppo.models import _critic_from_rm

    with pytest.raises(ModelLoadError, match="reward_models.helpfulness: .* has 2"):
        _critic_from_rm(models["two_labels"], torch.float32, "cpu")


def test_check_config_models_prefixes_the_key_and_keeps_the_error_type(models, monkeypatch):
    import core.model_paths as model_paths

    check_config_models([("init_model", None, "policy"), ("model", "embedded:tiny-llama", "policy"), ("rm", models["rm"], "reward_model")])
    with pytest.raises(ModelLoadError, match=r"^policy: no such folder: runs/nowhere/model$"):
        check_config_models([("policy", "runs/nowhere/model", "policy")])
    monkeypatch.setattr(model_paths, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(model_paths, "cached_hub_snapshot", lambda repo_id: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(HubUnreachableError, match=r"^model.name: hub id someone/some-model: the hub"):
        check_config_models([("model.name", "someone/some-model", "policy")])
