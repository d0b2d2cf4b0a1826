"""How the pipeline composes a stage config: preset, then YAML overrides, then wiring."""

from pathlib import Path

import pytest

from core.config import StrictModel, load_config
from core.errors import ConfigError
from pipelines.config import PipelineConfig
from pipelines.run import Pipeline, nest, stage_config


class Inner(StrictModel):
    epochs: int = 1
    lr: float = 0.1


class Stage(StrictModel):
    model: str
    output_dir: str = "x"
    training: Inner = Inner()


def test_nest_dotted_and_nested_keys():
    assert nest({"a.b": 1, "a": {"c": 2}, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    assert nest({"training": {"epochs": 2}, "training.lr": 0.5}) == {"training": {"epochs": 2, "lr": 0.5}}


def test_stage_config_layers_preset_overrides_and_wiring(tmp_path):
    from pipelines.config import StageRef

    preset = tmp_path / "p.yaml"
    preset.write_text("model: a\ntraining:\n  epochs: 5\n  lr: 0.3\n")
    ref = StageRef(preset=str(preset), overrides={"training.epochs": 2, "model": "b"})
    config = stage_config(Stage, ref, {"model": "wired", "output_dir": "runs/x/sft"})
    assert config == Stage(model="wired", output_dir="runs/x/sft", training=Inner(epochs=2, lr=0.3))
    with pytest.raises(ConfigError, match=r"unknown key 'training.epoch'"):
        stage_config(Stage, StageRef(preset=str(preset), overrides={"training.epoch": 2}), {})


PRESETS = sorted(path.stem for path in Path("configs/pipelines").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_shipped_pipelines_and_their_stage_presets_validate(name):
    """Every shipped pipeline parses, and every stage config it would build (preset,
    overrides, wiring) passes its stage's strict config, with the same reward-model
    section wired into RS, PPO and GAtt."""
    from gatt.config import GattConfig
    from ppo.config import PPOConfig
    from rejection_sampling.config import RSConfig
    from reward.config import RewardConfig

    config = load_config(PipelineConfig, f"configs/pipelines/{name}.yaml")
    assert config.gatt is not None and config.gatt.after in [v.name for v in config.versions]
    pipeline = Pipeline(config)
    configs = dict(pipeline.stage_configs())
    stand_in = str(pipeline.root / "model")
    assert {configs[f"reward {kind}"].kind for kind in ("helpfulness", "safety")} == {"helpfulness", "safety"}
    assert all(isinstance(configs[f"reward {kind}"], RewardConfig) for kind in ("helpfulness", "safety"))
    staged = [c for c in configs.values() if isinstance(c, (RSConfig, PPOConfig, GattConfig))]
    assert staged and all(c.reward_models.helpfulness == c.reward_models.safety == stand_in for c in staged)


def test_gatt_after_unknown_version_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("run_dir: r\nsft: {preset: a}\nreward: {preset: b}\nversions: [{name: v1}]\ngatt: {after: v9, preset: c}\n")
    with pytest.raises(ConfigError, match="gatt.after"):
        load_config(PipelineConfig, path)


def test_reward_kind_overrides_apply_to_one_kind_only(tmp_path):
    """`reward.kind_overrides` train the two RMs of one preset differently (the
    quickstart gives the safety RM, whose mix is smaller, more passes)."""
    preset = tmp_path / "rm.yaml"
    preset.write_text("kind: helpfulness\noutput_dir: x\nepochs: 1.0\nlearning_rate: 1.0e-4\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"run_dir: {tmp_path / 'run'}\nsft: {{preset: configs/sft/smoke.yaml}}\n"
        f"reward:\n  preset: {preset}\n  overrides: {{learning_rate: 3.0e-4}}\n"
        "  kind_overrides: {safety: {epochs: 3.0}}\n"
        "versions: [{name: v1, rejection_sampling: {preset: configs/rs/smoke.yaml}}]\n"
    )
    runner = Pipeline(load_config(PipelineConfig, str(pipeline)))
    helpful = runner.reward_config("helpfulness", Path("sft/model"), tmp_path)
    safety = runner.reward_config("safety", Path("sft/model"), tmp_path)
    assert (helpful.epochs, helpful.learning_rate) == (1.0, 3.0e-4)
    assert (safety.epochs, safety.learning_rate) == (3.0, 3.0e-4)
    assert safety.output_dir == str(tmp_path / "rm_safety")

    pipeline.write_text(pipeline.read_text().replace("{safety:", "{harmless:"))
    with pytest.raises(ConfigError, match="harmless"):
        load_config(PipelineConfig, str(pipeline))
