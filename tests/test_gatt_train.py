"""The GAtt stage end to end on the smoke preset (tiny model): run folder, learn-last data,
the SFT stage's model, eval.json before/after, skip on rerun; config strictness and the CLI."""

import json

import pytest

from core.config import load_config
from core.errors import ConfigError
from core.io import read_jsonl
from gatt.cli import main
from gatt.config import GattConfig
from gatt.train import run, sft_config

SMOKE = "configs/gatt/smoke.yaml"


def test_smoke_stage_end_to_end_and_skip(tmp_path):
    config = load_config(GattConfig, SMOKE, [f"output_dir={tmp_path}"])
    model_dir = run(config)
    assert (model_dir / "config.json").is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    stats = manifest["synthesis"]
    assert stats["n_kept"] + stats["n_dropped"] == 4 and stats["n_examples"] == len(read_jsonl(tmp_path / "gatt_data.jsonl"))
    sft_manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert sft_manifest["config"]["data"]["learn"] == "last"
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["table"]) == {"before", "after", "reminded"} and report["turns"] == [1, 2]
    assert report["conditions"]["reminded"]["instruction"] == "every_turn" and report["conditions"]["after"]["model"] == str(model_dir)
    assert set(report["gain"]) == set(report["ratio_to_ceiling"]) == {"1", "2"}
    assert manifest["eval"]["table"] == report["table"] and "not_followed_when_reminded" in manifest["eval"]
    assert (tmp_path / "adherence.png").is_file()
    # a rerun with the same config and inputs is skipped (the manifest is not rewritten)
    before = (tmp_path / "manifest.json").read_text()
    assert run(config) == model_dir
    assert (tmp_path / "manifest.json").read_text() == before


def test_finetune_is_the_sft_stage_learning_the_last_turn(tmp_path):
    config = load_config(GattConfig, SMOKE, ["finetune.training.epochs=3.0"])
    sft = sft_config(config, tmp_path / "data.jsonl", tmp_path / "sft")
    assert sft.data.learn == "last" and sft.data.train == str(tmp_path / "data.jsonl")
    assert sft.model.name == "embedded:tiny-llama" and sft.training.epochs == 3.0 and not sft.eval.enabled


def test_config_is_strict():
    with pytest.raises(ConfigError, match="synthesis.kk"):
        load_config(GattConfig, SMOKE, ["synthesis.kk=3"])
    with pytest.raises(ConfigError, match="instruction_position"):
        load_config(GattConfig, SMOKE, ["synthesis.instruction_position=middle"])
    with pytest.raises(ConfigError, match="by=reward_model needs reward_models.helpfulness and reward_models.safety"):
        load_config(GattConfig, SMOKE, ["synthesis.ranking.by=reward_model"])
    with pytest.raises(ConfigError, match="'synthesis.ranking.helpfulness_rm' is now 'reward_models.helpfulness'"):
        load_config(GattConfig, SMOKE, ["synthesis.ranking.helpfulness_rm=x"])
    with pytest.raises(ConfigError, match="by=gold: gold judges exist only for toyworld dialogues"):
        load_config(GattConfig, SMOKE, ["synthesis.ranking.by=gold", "dialogues.source=tests/data/byod/dialogues.jsonl",
                                        "eval.dialogues_source=tests/data/byod/dialogues_heldout.jsonl"])
    # your dialogues are evaluated on your held-out dialogues, never toyworld's by default, never the training ones
    with pytest.raises(ConfigError, match="eval.dialogues_source: dialogues.source is your own file"):
        load_config(GattConfig, SMOKE, ["dialogues.source=tests/data/byod/dialogues.jsonl"])
    with pytest.raises(ConfigError, match="would replay the training dialogues"):
        load_config(GattConfig, SMOKE, ["dialogues.source=tests/data/byod/dialogues.jsonl",
                                        "eval.dialogues_source=tests/data/byod/dialogues.jsonl"])
    with pytest.raises(ConfigError, match="instructions.kinds"):
        load_config(GattConfig, SMOKE, ["instructions.kinds=[pirate]"])
    with pytest.raises(ConfigError, match="eval.turns or eval.n_turns"):
        load_config(GattConfig, SMOKE, ["eval.n_turns=4"])  # the preset gives eval.turns
    assert load_config(GattConfig, None, ["eval.n_turns=7"]).eval.turns == [1, 2, 4, 6, 7]  # shorthand
    assert GattConfig().eval.turns == [1, 2, 4, 6, 10, 15, 20] and GattConfig().synthesis.repair == "none"
    with pytest.raises(ConfigError, match="eval.turns"):
        load_config(GattConfig, SMOKE, ["eval.turns=[0, 2]"])


def test_cli_reports_bad_config_in_one_line(capsys):
    assert main(["run", "--config", SMOKE, "nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err
    assert main(["eval", "--model", "embedded:tiny-llama", "--config", SMOKE, "eval.n_turns=x"]) == 2
    assert main(["eval", "--model", "embedded:tiny-llama", "--config", SMOKE, "--turns", "1,two"]) == 2
    assert "--turns: expected turn numbers" in capsys.readouterr().err


def test_cli_eval_writes_the_table(tmp_path, capsys):
    code = main(["eval", "--model", "embedded:tiny-llama", "--config", SMOKE, "--out", str(tmp_path), "eval.n_dialogues=2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| model | turn 1 | turn 2 |" in out and "| reminded: every turn (ceiling) |" in out
    assert (tmp_path / "eval.json").is_file()


def test_replayed_demonstrations_follow_the_gatt_rows_with_the_given_family_weights(tmp_path):
    """The fine-tune file is the GAtt rows then `replay_toyworld` toyworld demonstrations,
    drawn with `replay_family_weights` (the quickstart re-weights towards borderline
    requests, as its SFT does, against over-refusal)."""
    from gatt.train import training_data
    from toyworld.world import build_sft_examples

    gatt_rows = tmp_path / "gatt.jsonl"
    gatt_rows.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi. End: -- done"},
                                                  {"role": "assistant", "content": "Hello -- done"}], "learn": "last"}) + "\n")
    weights = {"borderline": 1000.0}
    config = load_config(GattConfig, SMOKE, ["finetune.replay_toyworld=4", f"finetune.replay_family_weights={json.dumps(weights)}"])
    path, n_replay = training_data(config, gatt_rows, tmp_path / "train.jsonl")
    rows = read_jsonl(path)
    assert n_replay == 4 and len(rows) == 5 and rows[0]["messages"][-1]["content"] == "Hello -- done"
    assert [row["messages"] for row in rows[1:]] == [e["messages"] for e in build_sft_examples("train", 4, config.seed, weights)]
    assert [row["messages"] for row in rows[1:]] != [e["messages"] for e in build_sft_examples("train", 4, config.seed)]
    with pytest.raises(ConfigError, match="unknown toyworld families"):
        load_config(GattConfig, SMOKE, ['finetune.replay_family_weights={"pirates": 1}'])
