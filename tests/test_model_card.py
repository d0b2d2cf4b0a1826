"""Every saved model folder carries a model card (core/model_card.py, written by core.run.StageRun)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from core.io import file_hash
from core.model_card import _front_matter, model_card_text, write_model_card
from core.run import StageRun


def test_the_tiny_sft_run_leaves_a_card_naming_base_model_stage_data_hash_and_eval(tmp_path):
    from core.config import load_config
    from sft.config import SFTConfig
    from sft.train import run

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                                      {"role": "assistant", "content": str(i + 1)}]}) + "\n"
                            for i in range(6)), encoding="utf-8")
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?"}) + "\n" for i in range(3)), encoding="utf-8")
    out = tmp_path / "sft"
    config = load_config(SFTConfig, "configs/sft/smoke.yaml", [
        f"data.train={data}", f"output_dir={out}", "training.max_steps=1", "training.save_steps=100",
        f"eval.prompts={prompts}", "eval.sampling.max_new_tokens=4"])
    model_dir = run(config)

    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert _front_matter(model_dir / "README.md")["tags"] == ["llama-rlhf", "sft", "rlhf"]
    assert "# Supervised fine-tuning (SFT)" in card
    assert "Started from `embedded:tiny-llama` (`model.name`)" in card  # the base model
    assert f"| train | `{data}` | {file_hash(data)} |" in card  # the data file and its content hash
    assert "| `training.max_steps` | 1 |" in card  # key settings
    evaluation = json.loads((out / "eval.json").read_text())
    after = evaluation["models"]["after"]
    assert "| response_length | " in card and f"{after['response_length']:.4g} ± {after['response_length_stderr']:.4g}" in card
    assert "- after - before response_length:" in card  # the paired difference
    assert f"rlhf sft --config {out / 'config.yaml'}" in card
    assert json.loads((out / "manifest.json").read_text())["status"] == "completed"


class Config(BaseModel):
    init_model: str
    output_dir: str
    kind: str = "helpfulness"
    margin: str = "small"


def test_a_reward_model_card_names_its_hub_base_and_pair_accuracy(tmp_path):
    manifest = {"stage": "reward", "package_version": "0.1", "git_commit": "abc",
                "inputs": {"init_model": {"path": "meta-llama/Llama-2-7b-hf", "sha256": None},
                           "data_0": {"path": "Anthropic/hh-rlhf", "sha256": None}}}
    config = {"kind": "safety", "init_model": "meta-llama/Llama-2-7b-hf", "margin": "small", "output_dir": "runs/x/rm_safety"}
    evaluation = {"heldout": {"overall": {"accuracy": 0.75, "n": 8}, "per_rating": {"better": {"accuracy": 0.5, "n": 4}},
                              "safety": {"threshold": 0.15, "precision": 0.9, "recall": 0.5, "n": 8}}}
    card = model_card_text(manifest, config, {"eval.json": evaluation}, tmp_path)
    assert "base_model: meta-llama/Llama-2-7b-hf" in card
    assert "| data_0 | `Anthropic/hh-rlhf` | not a local file" in card
    assert "| `margin` | small |" in card
    assert "accuracy 0.75 on 8 pairs" in card and "| better | 0.5 | 4 |" in card
    assert "precision 0.9, recall 0.5" in card


def test_a_local_start_passes_its_base_model_on(tmp_path):
    start = tmp_path / "v4" / "rs" / "model"
    start.mkdir(parents=True)
    (start / "README.md").write_text("---\nlibrary_name: transformers\nbase_model: meta-llama/Llama-2-70b-hf\n---\n# RS\n")
    card = model_card_text({"stage": "ppo", "inputs": {}}, {"model": {"policy": str(start)}, "output_dir": "o"}, {}, tmp_path)
    assert "base_model: meta-llama/Llama-2-70b-hf" in card
    assert f"Started from `{start}` (`model.policy`). The lineage starts at `meta-llama/Llama-2-70b-hf`." in card
    assert "This stage wrote no evaluation." in card


def test_stage_run_writes_a_card_only_for_a_completed_model_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "stage" / "model"

    def stage(folder: Path, fail: bool = False, with_model: bool = True) -> None:
        run = StageRun(folder, "rejection_sampling", Config(init_model="embedded:tiny-llama", output_dir=str(folder)))
        with run:
            if with_model:
                (folder / "model").mkdir(parents=True, exist_ok=True)
                run.add_output("model", folder / "model")
            if fail:
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        stage(tmp_path / "stage", fail=True)
    assert not (model / "README.md").exists()  # a failed stage: no card
    stage(tmp_path / "plain", with_model=False)
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "plain" / "README.md").exists()
    stage(tmp_path / "stage")
    card = (model / "README.md").read_text()
    assert "# Rejection-sampling fine-tuning" in card and "`init_model`" in card
    # the same card again from the files alone
    assert write_model_card(model, tmp_path / "stage").read_text() == card
