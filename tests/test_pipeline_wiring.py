"""How the pipeline wires a user's settings into every stage (each test failed on the
main branch before the "your model, your data" work):

- a dotted GAtt override (`synthesis.ranking.by: reward_model`) gets the RMs wired;
- a user's reward `data` survives when pairs of the policy's samples are added, and
  every version's new batch is kept (pairs are accumulated, never dropped);
- rejection sampling restarts from *this* run's SFT model when its preset restarts
  from an SFT model (`init_model`), whatever run folder the preset was written for;
- RS, PPO and GAtt share one reward-model section, and the old keys name the new one;
- `rlhf run --check` validates every preset offline and names a broken key.
"""

from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ConfigError
from pipelines.config import PipelineConfig
from pipelines.run import Pipeline, main

BYOD = Path("tests/data/byod")


def write_pipeline(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\nbase_model: embedded:tiny-llama\n" + body)
    return path


def pipeline(tmp_path: Path, body: str) -> Pipeline:
    return Pipeline(load_config(PipelineConfig, str(write_pipeline(tmp_path, body))))


def test_a_dotted_gatt_override_gets_the_reward_models(tmp_path):
    runner = pipeline(tmp_path, (
        "sft: {preset: configs/sft/smoke.yaml}\nreward: {preset: configs/reward/smoke.yaml}\n"
        "versions: [{name: v1, rejection_sampling: {preset: configs/rs/smoke.yaml}}]\n"
        "gatt: {after: v1, preset: configs/gatt/smoke.yaml, overrides: {synthesis.ranking.by: reward_model}}\n"))
    rms = {"helpfulness": Path("r/h"), "safety": Path("r/s")}
    gatt = runner.gatt_config(Path("p"), rms)
    assert gatt.synthesis.ranking.by == "reward_model"
    assert (gatt.reward_models.helpfulness, gatt.reward_models.safety) == ("r/h", "r/s")


def test_the_users_reward_data_is_kept_and_new_pairs_accumulate(tmp_path):
    runner = pipeline(tmp_path, (
        "sft: {preset: configs/sft/smoke.yaml}\n"
        f"reward:\n  preset: configs/reward/smoke.yaml\n  overrides:\n    data: [{{source: {BYOD}/prefs_hh.jsonl, category: safety}}]\n"
        "    eval_pairs: 0\n"
        "versions: [{name: v1, rejection_sampling: {preset: configs/rs/smoke.yaml}},\n"
        "           {name: v2, refresh_reward_models: true, rejection_sampling: {preset: configs/rs/smoke.yaml}},\n"
        "           {name: v3, refresh_reward_models: true, rejection_sampling: {preset: configs/rs/smoke.yaml}}]\n"
        f"refresh: {{prompts: {BYOD}/prompts_train.jsonl, pairs_files: {{v2: {BYOD}/pairs_v2.jsonl, v3: {BYOD}/prefs_heldout.jsonl}}}}\n"))
    first = runner.reward_config("safety", Path("sft/model"), tmp_path)
    assert [s.source for s in first.data] == [f"{BYOD}/prefs_hh.jsonl"] and first.data[0].category == "safety"
    v3 = runner.reward_config("safety", Path("sft/model"), tmp_path, [BYOD / "pairs_v2.jsonl", BYOD / "prefs_heldout.jsonl"])
    assert [s.source for s in v3.data] == [f"{BYOD}/prefs_hh.jsonl", f"{BYOD}/pairs_v2.jsonl", f"{BYOD}/prefs_heldout.jsonl"]
    assert v3.data[0].category == "safety"  # the user's per-source keys survive too


def test_user_prompts_need_labelled_pairs_or_a_judge_for_a_refresh(tmp_path):
    body = ("sft: {preset: configs/sft/smoke.yaml}\nreward: {preset: configs/reward/smoke.yaml}\n"
            "versions: [{name: v1, refresh_reward_models: true, rejection_sampling: {preset: configs/rs/smoke.yaml}}]\n"
            f"refresh: {{prompts: {BYOD}/prompts_train.jsonl}}\n")
    with pytest.raises(ConfigError, match="v1 need new pairs .* refresh.pairs_files .* refresh.judge"):
        load_config(PipelineConfig, str(write_pipeline(tmp_path, body)))


def rs_configs_of_two_versions(tmp_path, v1_stage: str, v2_stage: str) -> list:
    """The RS configs a pipeline builds for versions v1 and v2, given each one's
    `rejection_sampling` section (inline YAML)."""
    runner = pipeline(tmp_path, (
        "sft: {preset: configs/sft/smoke.yaml}\nreward: {preset: configs/reward/smoke.yaml}\n"
        f"versions: [{{name: v1, rejection_sampling: {v1_stage}}},\n"
        f"           {{name: v2, rejection_sampling: {v2_stage}}}]\n"))
    rms = {"helpfulness": Path("h"), "safety": Path("s")}
    return [runner.rs_config(version.rejection_sampling, version.name, i + 1, Path("p"), rms, [])
            for i, version in enumerate(runner.config.versions)]


def test_rejection_sampling_restarts_from_this_runs_sft_model(tmp_path):
    paper, smoke = rs_configs_of_two_versions(tmp_path, "{preset: configs/rs/paper-like.yaml}",
                                              "{preset: configs/rs/smoke.yaml}")
    assert read_preset_init("configs/rs/paper-like.yaml") == "runs/llama2-7b/sft/model"  # another run's folder
    assert paper.init_model == str(tmp_path / "run" / "sft" / "model")
    assert smoke.init_model is None  # a preset that fine-tunes the sampler itself keeps doing so


def test_rejection_sampling_evaluates_itself_only_to_compare_its_control_arms(tmp_path):
    with_arm, plain = rs_configs_of_two_versions(
        tmp_path, "{preset: configs/rs/smoke.yaml, overrides: {control_arms: [best_of_1]}}", "{preset: configs/rs/smoke.yaml}")
    assert with_arm.control_arms == ["best_of_1"] and with_arm.eval.enabled  # the arm is compared in the stage
    assert not plain.eval.enabled  # the pipeline's own evaluation covers the version


def read_preset_init(path: str) -> str:
    from core.config import read_yaml

    return read_yaml(path)["init_model"]


@pytest.mark.parametrize("stage, old, new", [
    ("rs", "helpful_rm=x", "reward_models.helpfulness"),
    ("rs", "rm_batch_size=8", "reward_models.batch_size"),
    ("rs", "safety_threshold=0.2", "reward_models.safety_threshold"),
    ("ppo", "reward.helpfulness_model=x", "reward_models.helpfulness"),
    ("ppo", "optim.lr=1e-6", "optim.learning_rate"),
    ("ppo", "data.heldout_prompts=x.jsonl", "eval.prompts"),
    ("gatt", "synthesis.ranking.safety_rm=x", "reward_models.safety"),
])
def test_old_keys_name_the_shared_key(stage, old, new):
    from gatt.config import GattConfig
    from ppo.config import PPOConfig
    from rejection_sampling.config import RSConfig

    cls = {"rs": RSConfig, "ppo": PPOConfig, "gatt": GattConfig}[stage]
    with pytest.raises(ConfigError, match=f"'{old.split('=')[0]}' is now '{new}'"):
        load_config(cls, f"configs/{stage}/smoke.yaml", [old])


def test_one_reward_model_section_and_device_auto_everywhere():
    from gatt.config import GattConfig
    from ppo.config import PPOConfig
    from rejection_sampling.config import RSConfig
    from reward.combine import LLAMA2_SAFETY_THRESHOLD
    from reward.gated import RewardModelsSection

    configs = [load_config(cls, f"configs/{stage}/smoke.yaml") for cls, stage in ((RSConfig, "rs"), (PPOConfig, "ppo"), (GattConfig, "gatt"))]
    assert all(type(c.reward_models) is RewardModelsSection for c in configs)
    assert RewardModelsSection().safety_threshold == LLAMA2_SAFETY_THRESHOLD
    assert RewardModelsSection().device == "auto"
    assert configs[0].device == configs[2].device == "auto"


@pytest.mark.parametrize("preset", sorted(str(p) for p in Path("configs/pipelines").glob("*.yaml")))
def test_check_passes_every_shipped_preset_offline(preset, capsys, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("rlhf run --check must not open a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert main(["--check", preset]) == 0
    out = capsys.readouterr().out
    assert "every stage config and local path is sound" in out and "hub ids (not fetched" in out


def test_check_names_the_broken_key(tmp_path, capsys):
    path = write_pipeline(tmp_path, (
        "sft: {preset: configs/sft/smoke.yaml}\n"
        "reward: {preset: configs/reward/smoke.yaml, overrides: {data: [{source: nowhere/pairs.jsonl}], eval_pairs: 0}}\n"
        "versions: [{name: v1, rejection_sampling: {preset: configs/rs/smoke.yaml}}]\n"))
    assert main(["--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "reward helpfulness: key 'data[0]': nowhere/pairs.jsonl is not a local file" in err
    assert not (tmp_path / "run").exists()  # nothing written

    path.write_text(path.read_text().replace("rejection_sampling: {preset: configs/rs/smoke.yaml}",
                                             "rejection_sampling: {preset: configs/rs/smoke.yaml, overrides: {k: 0}}"))
    assert main(["--check", str(path)]) == 2
    assert "k must be >= 1" in capsys.readouterr().err


def test_check_of_the_llama2_preset_with_local_files_for_every_hub_name(tmp_path, capsys):
    """The public-data preset's hub names are each replaceable by a local file with the
    same keys; --check then finds only the base model on the hub."""
    from core.config import read_yaml

    preset = read_yaml("configs/pipelines/llama2-7b.yaml")
    rs = {"prompts": {"source": f"{BYOD}/prompts_train.jsonl", "on_bad": "error", "n": 20},
          "eval.prompts": f"{BYOD}/prompts_heldout.jsonl"}
    for version in preset["versions"]:
        version["rejection_sampling"]["overrides"].update(rs)
        if "ppo" in version:
            version["ppo"]["overrides"] = {"data.prompts": f"{BYOD}/prompts_train.jsonl", "eval.prompts": f"{BYOD}/prompts_heldout.jsonl"}
    preset["sft"]["overrides"] = {"data.train": f"{BYOD}/sft_messages.jsonl", "data.split": "train", "data.adapter": None,
                                  "eval.prompts": f"{BYOD}/prompts_heldout.jsonl"}
    preset["reward"]["overrides"] = {"data": [{"source": f"{BYOD}/prefs_hh.jsonl", "category": "safety"}, {"source": f"{BYOD}/prefs_pku.jsonl"}],
                                     "eval_data": [{"source": f"{BYOD}/prefs_heldout.jsonl"}]}
    preset["gatt"]["overrides"] = {"dialogues.source": f"{BYOD}/dialogues.jsonl", "eval.dialogues_source": f"{BYOD}/dialogues_heldout.jsonl"}
    preset["evaluation"]["prompts"] = f"{BYOD}/prompts_heldout.jsonl"
    import yaml

    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(preset))
    assert main(["--check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hub ids (not fetched; each must be reachable or cached when the stage runs): meta-llama/Llama-2-7b-hf" in out
    assert "toyworld" not in out


def test_a_stage_on_your_data_does_not_evaluate_on_toyworld_by_default():
    """SFT and RS on the user's files must name their held-out prompts (or turn the
    evaluation off): toyworld's prompts are the default only for toyworld's data."""
    from rejection_sampling.config import RSConfig
    from sft.config import SFTConfig

    with pytest.raises(ConfigError, match="eval.prompts: data.train is your own data"):
        load_config(SFTConfig, "configs/sft/smoke.yaml", [f"data.train={BYOD}/sft_messages.jsonl"])
    sft = load_config(SFTConfig, "configs/sft/smoke.yaml", [f"data.train={BYOD}/sft_messages.jsonl", f"eval.prompts={BYOD}/prompts_heldout.jsonl"])
    assert sft.eval.prompts == f"{BYOD}/prompts_heldout.jsonl"
    with pytest.raises(ConfigError, match="eval.prompts: prompts.source is your own data"):
        load_config(RSConfig, "configs/rs/smoke.yaml", [f"prompts.source={BYOD}/prompts_train.jsonl"])
    assert not load_config(RSConfig, "configs/rs/smoke.yaml", [f"prompts.source={BYOD}/prompts_train.jsonl", "eval.enabled=false"]).eval.enabled


def test_ppo_on_your_prompts_keeps_the_best_iteration_by_your_held_out_prompts():
    from ppo.config import PPOConfig

    with pytest.raises(ConfigError, match="eval.prompts: data.prompts is your own data"):
        load_config(PPOConfig, "configs/ppo/smoke.yaml", [f"data.prompts={BYOD}/prompts_train.jsonl"])
    config = load_config(PPOConfig, "configs/ppo/smoke.yaml", [f"data.prompts={BYOD}/prompts_train.jsonl",
                                                               f"eval.prompts={BYOD}/prompts_heldout.jsonl"])
    assert config.eval.prompts == f"{BYOD}/prompts_heldout.jsonl"


def test_the_readme_recipe_points_at_folders_the_stages_write():
    """GAtt writes its model to OUT/sft/model (the SFT stage's folder inside GAtt's);
    the by-hand recipe once pointed at a `gatt/model` that never exists."""
    readme = Path("README.md").read_text(encoding="utf-8")
    assert "$R/gatt/model" not in readme and "$R/gatt/sft/model" in readme
    assert "helpful_rm=" not in readme and "reward.helpfulness_model=" not in readme  # old keys, now errors


def test_a_pipeline_on_your_data_names_its_held_out_prompts(tmp_path, capsys):
    path = write_pipeline(tmp_path, (
        f"sft: {{preset: configs/sft/smoke.yaml, overrides: {{data.train: {BYOD}/sft_messages.jsonl}}}}\n"
        f"reward: {{preset: configs/reward/smoke.yaml, overrides: {{data: [{{source: {BYOD}/prefs_pku.jsonl}}], eval_pairs: 0}}}}\n"
        f"versions: [{{name: v1, rejection_sampling: {{preset: configs/rs/smoke.yaml, overrides: {{prompts.source: {BYOD}/prompts_train.jsonl}}}}}}]\n"))
    assert main(["--check", str(path)]) == 2
    assert "key 'evaluation.prompts': sft.data.train is your own data" in capsys.readouterr().err
    path.write_text(path.read_text() + f"evaluation: {{prompts: {BYOD}/prompts_heldout.jsonl, xstest_data: null}}\n")
    assert main(["--check", str(path)]) == 0
