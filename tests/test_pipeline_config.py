"""How the pipeline composes a stage config: preset, then YAML overrides, then wiring."""

import pytest

from core.config import StrictModel, load_config
from core.errors import ConfigError
from pipelines.config import PipelineConfig
from pipelines.run import nest, stage_config


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


def test_shipped_pipelines_validate():
    for name in ("smoke", "quickstart"):
        config = load_config(PipelineConfig, f"configs/pipelines/{name}.yaml")
        assert config.gatt is not None and config.gatt.after in [v.name for v in config.versions]


def test_gatt_after_unknown_version_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("run_dir: r\nsft: {preset: a}\nreward: {preset: b}\nversions: [{name: v1}]\ngatt: {after: v9, preset: c}\n")
    with pytest.raises(ConfigError, match="gatt.after"):
        load_config(PipelineConfig, path)
