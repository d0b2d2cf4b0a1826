"""The config contract: strict YAML + overrides, errors that name the key, frozen result."""

from typing import Literal

import pytest
from pydantic import ValidationError

from core.config import StrictModel, dump_config, load_config, parse_overrides
from core.errors import ConfigError


class Optim(StrictModel):
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)


class StageConfig(StrictModel):
    model: str
    epochs: int = 1
    scheme: Literal["none", "small", "large"] = "small"
    optim: Optim = Optim()


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_dotted_overrides(tmp_path):
    path = write(tmp_path, "model: embedded:tiny-llama\noptim:\n  lr: 0.001\n")
    config = load_config(StageConfig, path, ["epochs=3", "optim.lr=2e-5", "scheme=large"])
    assert config.model == "embedded:tiny-llama"
    assert config.epochs == 3
    assert config.optim.lr == pytest.approx(2e-5)
    assert config.optim.betas == (0.9, 0.95)
    assert config.scheme == "large"


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "model: m\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.learning_rate'"):
        load_config(StageConfig, path)


def test_wrong_type_is_named(tmp_path):
    path = write(tmp_path, "model: m\nepochs: '3'\n")
    with pytest.raises(ConfigError, match=r"key 'epochs'"):
        load_config(StageConfig, path)
    with pytest.raises(ConfigError, match=r"key 'epochs'"):
        load_config(StageConfig, None, ["model=m", "epochs=1.5"])


def test_missing_key_and_bad_choice():
    with pytest.raises(ConfigError, match=r"missing key 'model'"):
        load_config(StageConfig, None, [])
    with pytest.raises(ConfigError, match=r"key 'scheme'"):
        load_config(StageConfig, None, ["model=m", "scheme=huge"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(StageConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(StageConfig, write(tmp_path, "model: [unclosed\n"))


def test_config_is_frozen_and_round_trips(tmp_path):
    config = load_config(StageConfig, None, ["model=m"])
    with pytest.raises(ValidationError):
        config.epochs = 5
    again = load_config(StageConfig, write(tmp_path, dump_config(config)))
    assert again == config
