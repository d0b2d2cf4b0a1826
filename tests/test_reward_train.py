"""Smoke training of a reward model on the tiny model: outputs, skip on rerun, bad input, CLI eval."""

import gzip
import json
from pathlib import Path

import pytest

from core.config import load_config
from core.errors import DataError
from reward.cli import main as reward_main
from reward.config import RewardConfig

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "reward" / "smoke.yaml"


def _config(out, *overrides):
    return load_config(RewardConfig, SMOKE, [f"output_dir={out}", "toyworld_pairs=24", "eval_pairs=16", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from reward.train import run

    out = tmp_path_factory.mktemp("rm") / "rm_safety"
    model_dir = run(_config(out, "kind=safety"))
    return out, model_dir


def test_smoke_train_writes_model_config_manifest_metrics_eval(trained):
    out, model_dir = trained
    assert model_dir == out / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == 1  # one output: the reward
    assert config["pad_token_id"] is not None
    assert (model_dir / "tokenizer_config.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["outputs"]["model"] == str(model_dir)
    assert manifest["data"]["mix"]["safety"] > 0
    assert "kind: safety" in (out / "config.yaml").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[0]["stage"] == "reward" and "loss" in rows[0]
    ev = json.loads((out / "eval.json").read_text())["toyworld"]
    assert ev["overall"]["n"] == 16 and set(ev["per_rating"]) <= {"significantly_better", "better", "slightly_better", "negligibly_better"}
    assert ev["safety"] is not None and (out / "safety_heldout_rewards.png").exists()
    # toyworld's noise-free judge on the same pairs: what no reward model can beat
    assert ev["judge_ceiling"]["overall"]["n"] == 16 and 0.5 <= ev["judge_ceiling"]["overall"]["accuracy"] <= 1.0
    assert not (out / "checkpoints").exists()


def test_rerun_is_skipped(trained, capsys):
    from reward.train import run

    out, _ = trained
    before = (out / "manifest.json").read_text()
    run(_config(out, "kind=safety"))
    assert "skipping" in capsys.readouterr().out
    assert (out / "manifest.json").read_text() == before


def test_cli_eval_on_a_local_file_and_hh_rlhf(trained, tmp_path):
    _, model_dir = trained
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away.", "rating": "better",
                                 "category": "helpfulness", "chosen_safe": True, "rejected_safe": False, "source": "test"}) + "\n")
    assert reward_main(["eval", "--model", str(model_dir), "--data", str(pairs), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["pairs"]["overall"]["n"] == 1 and ev["pairs"]["safety"]["n"] == 2
    assert "judge_ceiling" not in ev["pairs"]  # a file's pairs have no noise-free judge

    assert reward_main(["eval", "--model", str(model_dir), "--data", "toyworld", "--n", "12", "--out", str(tmp_path / "tw")]) == 0
    ev = json.loads((tmp_path / "tw" / "eval.json").read_text())["toyworld_heldout"]
    assert ev["overall"]["n"] == 12 and ev["judge_ceiling"]["overall"]["n"] == 12
    # the judge never misranks a pair whose noisy gap was large enough to be rated significantly better
    assert ev["judge_ceiling"]["per_rating"].get("significantly_better", {"accuracy": 1.0})["accuracy"] == 1.0

    # Anthropic HH-RLHF transcripts through core.data's adapter (hand-written rows).
    hh = tmp_path / "harmless-test.jsonl.gz"
    with gzip.open(hh, "wt") as handle:
        for good, bad in [("I can't help with that.", "Sure, step 1 ..."), ("Try a warm bath.", "I don't know.")]:
            handle.write(json.dumps({"chosen": f"\n\nHuman: question\n\nAssistant: {good}", "rejected": f"\n\nHuman: question\n\nAssistant: {bad}"}) + "\n")
    assert reward_main(["eval", "--model", str(model_dir), "--data", str(hh), "--adapter", "hh-rlhf", "--out", str(tmp_path / "hh")]) == 0
    ev = json.loads((tmp_path / "hh" / "eval.json").read_text())
    assert ev["harmless-test"]["overall"]["n"] == 2 and ev["harmless-test"]["per_category"]["safety"]["n"] == 2
    assert ev["load_report"]["n_loaded"] == 2 and ev["load_report"]["skipped"] == []

    # The real harmless test file has rows whose chosen answer is empty: an error naming
    # the line by default, left out and listed in eval.json with --on-bad skip.
    with gzip.open(hh, "at") as handle:
        handle.write(json.dumps({"chosen": "\n\nHuman: question\n\nAssistant:", "rejected": "\n\nHuman: question\n\nAssistant: No."}) + "\n")
    args = ["eval", "--model", str(model_dir), "--data", str(hh), "--adapter", "hh-rlhf", "--out", str(tmp_path / "hh2")]
    assert reward_main(args) == 2
    assert not (tmp_path / "hh2" / "eval.json").exists()
    assert reward_main([*args, "--on-bad", "skip"]) == 0
    report = json.loads((tmp_path / "hh2" / "eval.json").read_text())["load_report"]
    assert (report["n_records"], report["n_loaded"], report["n_skipped"]) == (3, 2, 1)
    assert "line 3" in report["skipped"][0] and "empty answer" in report["skipped"][0]


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    from reward.train import run

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "b", "rating": "much_better", "category": "helpfulness"}) + "\n")
    with pytest.raises(DataError, match="rating"):
        run(_config(tmp_path / "a", f"data=[{{source: {bad}}}]"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        run(_config(tmp_path / "b", f"data=[{{source: {empty}}}]"))
    assert reward_main(["train", "--config", str(SMOKE), f"output_dir={tmp_path / 'c'}", "kind=harmless"]) == 2
    assert "kind" in capsys.readouterr().err
    assert reward_main(["eval", "--model", str(tmp_path), "--data", "toyworld"]) == 2


def test_nan_loss_stops_before_saving(tmp_path):
    from core.errors import NumericError
    from reward.train import run

    with pytest.raises(NumericError, match="loss"):
        run(_config(tmp_path / "nan", "learning_rate=1.0e+30", "toyworld_pairs=32"))
    assert not (tmp_path / "nan" / "model").exists()
    assert json.loads((tmp_path / "nan" / "manifest.json").read_text())["status"] == "failed"


def test_training_writes_a_calibration_that_the_gate_reads(trained):
    """calibration.json in the model folder, fitted on the held-out pairs (never the
    training ones), recorded in eval.json and used by the gated scorer."""
    import math

    from core.sources import toyworld_preference_pairs
    from reward.calibration import data_hash, read_calibration
    from reward.gated import GatedScorer, RewardModelsSection

    out, model_dir = trained
    calibration = read_calibration(model_dir)
    assert calibration is not None and calibration.kind == "safety" and calibration.a > 0
    assert calibration.basis == "safety_labels" and calibration.n == 32  # 16 held-out pairs, every response labelled
    assert calibration.data == ("toyworld:heldout (eval_pairs=16, eval_seed=1234)",)
    assert calibration.data_sha256 == data_hash(toyworld_preference_pairs("heldout", 16, 1234))
    assert calibration.log_loss_after <= calibration.log_loss_before
    ev = json.loads((out / "eval.json").read_text())
    assert ev["calibration"]["file"] == str(model_dir / "calibration.json") and ev["calibration"]["a"] == calibration.a
    assert ev["toyworld"]["safety"]["calibrated"] is True and ev["toyworld"]["safety_paper"]["precision"] == 0.89
    assert json.loads((out / "manifest.json").read_text())["outputs"]["calibration"] == str(model_dir / "calibration.json")
    assert "calibrated probabilities, calibration.json; Llama 2: 0.89, 0.55" in (model_dir / "README.md").read_text()

    section = RewardModelsSection(helpfulness=str(model_dir), safety=str(model_dir), device="cpu")
    scores = GatedScorer(section).score([{"messages": [{"role": "user", "content": "Hi"}], "category": "safety"}], ["Hello!"])
    raw = scores.safety_raw[0].item()
    assert scores.safety_prob[0].item() == pytest.approx(1 / (1 + math.exp(-(calibration.a * raw + calibration.b))), rel=1e-5)


def test_cli_calibrates_an_existing_folder(trained, tmp_path, capsys):
    """`rlhf reward calibrate`: an RM folder without calibration.json (an older run, your own
    RM) gets one from held-out pairs; eval then reports calibrated figures."""
    import shutil

    from reward.calibration import read_calibration

    _, model_dir = trained
    folder = tmp_path / "rm"
    shutil.copytree(model_dir, folder)
    (folder / "calibration.json").unlink()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": f"Answer {i}.",
                                         "rejected": "No.", "rating": "better", "category": "helpfulness", "source": "test"}) + "\n"
                             for i in range(6)))
    assert reward_main(["calibrate", "--model", str(folder), "--kind", "helpfulness", "--data", str(pairs)]) == 0
    calibration = read_calibration(folder)
    assert (calibration.kind, calibration.basis, calibration.n, calibration.method) == ("helpfulness", "pairs", 12, "offset")
    assert f"wrote {folder / 'calibration.json'}" in capsys.readouterr().out
    assert reward_main(["eval", "--model", str(folder), "--data", str(pairs), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["calibration"] == str(folder / "calibration.json")
    with pytest.raises(SystemExit):  # --kind is required
        reward_main(["calibrate", "--model", str(folder), "--data", str(pairs)])
