"""The SFT stage end to end on the tiny model: outputs, report, metrics, eval, skip on rerun."""

import json
import time

from core.config import load_config
from core.run import read_metrics
from sft.config import SFTConfig
from sft.train import run


def test_smoke_sft_end_to_end_and_rerun_skipped(tmp_path, caplog):
    data = tmp_path / "sft.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"What is {i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]}
        for i in range(6)
    ]
    rows.insert(2, {"messages": [{"role": "user", "content": "No answer here."}]})  # line 3
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "sft"
    config = load_config(
        SFTConfig,
        "configs/sft/smoke.yaml",
        [f"data.train={data}", f"output_dir={out}", "training.max_steps=2", "training.save_steps=100", "eval.n_prompts=4", "eval.sampling.max_new_tokens=4",
         "eval.prompts=toyworld"],  # named: a stage on your data never evaluates on toyworld by default
    )
    with caplog.at_level("INFO", logger="sft"):
        model_dir = run(config)

    assert model_dir == out / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    assert (model_dir / "tokenizer.json").is_file()
    assert (out / "config.yaml").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert set(manifest["outputs"]) == {"model", "eval", "data_report"}
    assert manifest["data_report"]["bad"]["no_assistant_turn"] == {
        "count": 1, "first": f"{data}:3", "detail": "the conversation has no assistant turn"
    }
    assert manifest["train"]["global_step"] == 2
    report = json.loads((out / "data_report.json").read_text())
    assert report["n_kept"] == 6 and report["n_skipped"] == 1
    assert f"{data}:3" in caplog.text

    metrics = read_metrics(out)
    assert all(row["stage"] == "sft" for row in metrics)
    assert any(row.get("data/bad_no_assistant_turn") == 1 for row in metrics)
    losses = [row for row in metrics if "train/loss" in row]
    assert [row["step"] for row in losses] == [1, 2]
    assert any("eval_after/gold_safety" in row for row in metrics)

    evaluation = json.loads((out / "eval.json").read_text())
    # eval.n_prompts from the family mix, plus every held-out borderline prompt
    from toyworld.world import build_eval_prompts

    assert evaluation["prompts"]["n"] == len(build_eval_prompts(4)) > 4
    models = evaluation["models"]
    for key in ("gold_helpfulness", "gold_safety", "refusal_rate_harmful", "false_refusal_rate_borderline",
                "refusal_rate", "response_length", "truncation_rate"):
        assert key in models["before"] and key in models["after"]
    # every shared metric compared on the same prompts, with its standard error
    assert {"refusal_rate", "gold_combined"} <= set(evaluation["paired"]["after"])
    assert "diff_stderr" in evaluation["paired"]["after"]["gold_combined"]
    assert not (out / "checkpoints").exists()

    # a rerun with the same config and inputs is skipped
    finished = manifest["finished_at"]
    start = time.time()
    with caplog.at_level("INFO", logger="sft"):
        assert run(config) == model_dir
    assert time.time() - start < 5
    assert json.loads((out / "manifest.json").read_text())["finished_at"] == finished
    assert "skipping" in caplog.text


def test_lora_packed_run_saves_a_merged_loadable_model(tmp_path):
    from core.models import load_causal_lm

    out = tmp_path / "sft"
    config = load_config(
        SFTConfig,
        "configs/sft/smoke.yaml",
        [f"output_dir={out}", "data.toyworld_n=8", "training.packing=true", "training.max_steps=1",
         "training.save_steps=100", "lora.enabled=true", "lora.r=4", "eval.enabled=false"],
    )
    model_dir = run(config)
    assert not list(model_dir.glob("adapter_*"))  # merged: a plain model folder
    model = load_causal_lm(str(model_dir))
    assert not hasattr(model, "peft_config")
    assert not (out / "eval.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "completed"
