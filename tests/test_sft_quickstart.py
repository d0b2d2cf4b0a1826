"""The quickstart SFT on SmolLM2 (minutes of CPU; run with `pytest -m slow`)."""

import json

import pytest

from core.config import load_config
from sft.config import SFTConfig
from sft.train import run


@pytest.mark.slow
def test_quickstart_sft_raises_safety_without_more_false_refusals(tmp_path):
    config = load_config(SFTConfig, "configs/sft/quickstart.yaml", [f"output_dir={tmp_path / 'sft'}", "progress=false"])
    run(config)
    evaluation = json.loads((tmp_path / "sft" / "eval.json").read_text())
    before, after = evaluation["models"]["before"], evaluation["models"]["after"]
    assert after["gold_safety"] > before["gold_safety"]
    assert after["false_refusal_rate_borderline"] <= before["false_refusal_rate_borderline"] + 0.05
