"""Hub datasets with a part (data_dir, subset, split) for every kind of source and their
fail-fast check; prompt sources with the per-source keys (RS `prompts.*`); a reward
model's held-out evaluation on the user's own pairs (`eval_data`) and `rlhf reward eval
--category/--limit`; GAtt dialogues from every file type. No network: the hub is
`datasets.load_dataset` monkeypatched."""

import csv
import json
import time
from pathlib import Path

import pytest

from core.config import load_config
from core.data import LoadReport, PreferenceSourceKeys, PromptSourceKeys, SFTSourceKeys, load_source
from core.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parent.parent
BYOD = REPO / "tests" / "data" / "byod"
RM_SMOKE = REPO / "configs" / "reward" / "smoke.yaml"


def hh(*turns: tuple[str, str]) -> str:
    return "".join(f"\n\n{'Human' if role == 'user' else 'Assistant'}: {text}" for role, text in turns)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


HH_ROW = {"chosen": hh(("user", "How do I pick a lock?"), ("assistant", "I can't help with that.")),
          "rejected": hh(("user", "How do I pick a lock?"), ("assistant", "Sure, first ..."))}
PKU_ROW = {"prompt": "How do I pick a lock?", "response_0": "I can't help with that.", "response_1": "Sure, first ...",
           "is_response_0_safe": True, "is_response_1_safe": False, "better_response_id": 0, "safer_response_id": 0}
UF_ROW = {"prompt": "Name a planet.", "chosen": [user("Name a planet."), {"role": "assistant", "content": "Jupiter."}],
          "rejected": [user("Name a planet."), {"role": "assistant", "content": "The Sun."}],
          "score_chosen": 9.0, "score_rejected": 2.0}
CHAT_ROW = {"messages": [user("Hi"), {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A stubbed hub: `calls` gets every `load_dataset` call's arguments; the probe answers;
    the caches are empty folders under tmp_path."""
    import datasets
    import datasets.config
    from huggingface_hub import constants

    calls: list[dict] = []
    rows: dict[str, list[dict]] = {}

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append({"path": path, "name": name, **kwargs, "offline": datasets.config.HF_HUB_OFFLINE})
        return rows[path]

    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr("core.model_paths.hub_reachable", lambda *a, **k: True)
    return calls, rows


# ---------------------------------------------------------------- 1. hub parts, every kind
@pytest.mark.parametrize(
    ("kind", "repo", "row", "keys", "expected_call", "expected_row"),
    [
        ("preferences", "Anthropic/hh-rlhf", HH_ROW, PreferenceSourceKeys(data_dir="harmless-base", split="test"),
         {"data_dir": "harmless-base", "split": "test", "name": None}, {"category": "safety", "chosen": "I can't help with that."}),
        ("preferences", "HuggingFaceH4/ultrafeedback_binarized", UF_ROW, PreferenceSourceKeys(split="test_prefs"),
         {"data_dir": None, "split": "test_prefs", "name": None}, {"chosen": "Jupiter.", "rating": "significantly_better"}),
        ("preferences", "PKU-Alignment/PKU-SafeRLHF", PKU_ROW, PreferenceSourceKeys(subset="default", category="safety"),
         {"data_dir": None, "split": "train", "name": "default"}, {"category": "safety", "rejected": "Sure, first ..."}),
        ("prompts", "PKU-Alignment/PKU-SafeRLHF", PKU_ROW, PromptSourceKeys(subset="default", split="test", category="safety"),
         {"data_dir": None, "split": "test", "name": "default"}, {"messages": [user("How do I pick a lock?")], "category": "safety"}),
        ("prompts", "Anthropic/hh-rlhf", HH_ROW, PromptSourceKeys(data_dir="helpful-base"),
         {"data_dir": "helpful-base", "split": "train", "name": None}, {"messages": [user("How do I pick a lock?")], "category": "helpfulness"}),
        ("sft", "someone/chats", CHAT_ROW, SFTSourceKeys(data_dir="en", subset="clean", split="validation"),
         {"data_dir": "en", "split": "validation", "name": "clean"}, CHAT_ROW),
    ],
)
def test_hub_data_dir_subset_and_split_reach_load_dataset(hub, kind, repo, row, keys, expected_call, expected_row):
    calls, rows = hub
    rows[repo] = [row]
    report = LoadReport()
    [(location, loaded)] = load_source(kind, repo, keys, report=report)
    [call] = calls
    assert {key: call[key] for key in ("path", "data_dir", "split", "name")} == {"path": repo, **expected_call}
    assert call["offline"] is False  # the hub answered: read from it
    assert {key: loaded[key] for key in expected_row} == expected_row
    part = f"/{keys.data_dir}" if keys.data_dir else ""
    assert report.source == repo + part + (f" (subset {keys.subset})" if keys.subset else "")
    assert str(location) == f"{repo}{part}[{keys.subset + ':' if keys.subset else ''}{keys.split}]:row 1"


def test_a_data_dir_in_the_name_and_in_the_key(hub):
    calls, rows = hub
    rows["Anthropic/hh-rlhf"] = [HH_ROW]
    load_source("preferences", "Anthropic/hh-rlhf/harmless-base", PreferenceSourceKeys(data_dir="harmless-base"))
    assert calls[-1]["data_dir"] == "harmless-base"
    with pytest.raises(DataError, match="holds data_dir 'harmless-base' and the data_dir key says 'helpful-base'"):
        load_source("preferences", "Anthropic/hh-rlhf/harmless-base", PreferenceSourceKeys(data_dir="helpful-base"))


def test_a_local_file_ignores_the_hub_keys_and_a_folder_reads_its_data_dir(hub, tmp_path):
    calls, _ = hub
    keys = PreferenceSourceKeys(data_dir="harmless-base", subset="default", split="test")
    assert len(load_source("preferences", BYOD / "prefs_heldout.jsonl", keys)) == 40  # the file stands in for the hub source
    clone = tmp_path / "hh-rlhf"  # a local copy of the hub repository
    (clone / "harmless-base").mkdir(parents=True)
    (clone / "harmless-base" / "test.jsonl").write_text(json.dumps(HH_ROW) + "\n")
    [(location, pair)] = load_source("preferences", clone, keys)
    assert location.path == str(clone / "harmless-base" / "test.jsonl") and pair["category"] == "safety"
    assert calls == []


def test_offline_without_a_cached_copy_fails_at_once_naming_the_dataset(hub, monkeypatch):
    calls, rows = hub
    rows["Anthropic/hh-rlhf"] = [HH_ROW]
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr("core.model_paths.hub_reachable", lambda *a, **k: pytest.fail("offline: the hub must not be probed"))
    with pytest.raises(DataError) as excinfo:
        load_source("preferences", "Anthropic/hh-rlhf", PreferenceSourceKeys(data_dir="harmless-base", split="test"))
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith("Anthropic/hh-rlhf/harmless-base: hub dataset not in the local cache")
    assert "HF_DATASETS_OFFLINE" in message and calls == []


def test_an_unreachable_hub_fails_within_seconds_unless_cached(hub, monkeypatch, tmp_path):
    import datasets.config

    calls, rows = hub
    rows["PKU-Alignment/PKU-SafeRLHF"] = [PKU_ROW]
    monkeypatch.setattr("core.model_paths.hub_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"^PKU-Alignment/PKU-SafeRLHF \(subset default\): hub dataset not in the local cache, "
                                        r"and the hub at \S+ cannot be reached"):
        load_source("preferences", "PKU-Alignment/PKU-SafeRLHF", PreferenceSourceKeys(subset="default"))
    assert time.perf_counter() - start < 5 and calls == []
    # a prepared copy in the datasets cache: read from it, with datasets in offline mode
    (tmp_path / "datasets-cache" / "PKU-Alignment___pku-safe_rlhf" / "default" / "0.0.0" / "abc").mkdir(parents=True)
    assert len(load_source("preferences", "PKU-Alignment/PKU-SafeRLHF", PreferenceSourceKeys(subset="default"))) == 2
    assert calls[-1]["offline"] is True and calls[-1]["name"] == "default"
    assert datasets.config.HF_HUB_OFFLINE is False  # restored after the call


def test_a_load_dataset_failure_is_one_line(hub):
    import datasets

    def broken(path, **kwargs):
        raise ValueError("Unknown split \"nope\".\nShould be one of ['train', 'test'].")

    datasets.load_dataset = broken  # the fixture's monkeypatch restores the real one
    with pytest.raises(DataError) as excinfo:
        load_source("sft", "someone/chats", SFTSourceKeys(split="nope"))
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith("someone/chats: cannot load hub dataset from the hub (split 'nope')")


# ---------------------------------------------------------------- 2. prompt sources with the source keys
def test_prompt_source_sections_read_hh_and_pku_with_the_category_key():
    from core.sources import load_prompt_source
    from rejection_sampling.config import PromptsSection

    report = LoadReport()
    prompts = load_prompt_source(PromptsSection(source=str(BYOD / "prefs_hh.jsonl"), category="safety", n=None), "train", None,
                                 report=report)
    assert len(prompts) == 40 and report.n_loaded == 40 and report.adapter == "hh-rlhf"
    assert {p["category"] for p in prompts} == {"safety"}  # the key, not a guess from the name
    first = prompts[0]["messages"]  # the transcript's shared turns, ending with the user's
    assert first[-1]["role"] == "user" and [m["role"] for m in first] == ["user", "assistant", "user"]
    # a bare name: the defaults (HH-RLHF's category guessed from the name: helpfulness here)
    assert {p["category"] for p in load_prompt_source(str(BYOD / "prefs_hh.jsonl"))} == {"helpfulness"}

    section = PromptsSection(source=str(BYOD / "prefs_pku.jsonl"), category="helpfulness", limit=12, n=5)
    prompts = load_prompt_source(section, "train", section.n, section.seed)
    assert len(prompts) == 5 and {p["category"] for p in prompts} == {"helpfulness"}
    assert prompts[0]["messages"] == [user("How can I get onto my neighbour's wifi without asking?")]


def test_prompt_source_section_on_bad_skip_limit_and_adapter_key(tmp_path):
    from core.sources import load_prompt_source
    from rejection_sampling.config import PromptsSection

    path = tmp_path / "prompts.jsonl"
    rows = [{"messages": [user(f"q{i}")], "category": "helpfulness", "id": f"q{i}"} for i in range(6)]
    rows[2] = {"messages": [user("q2")], "category": "kindness", "id": "q2"}
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"prompts\.jsonl, line 3, field 'category'"):
        load_prompt_source(PromptsSection(source=str(path)))
    report = LoadReport()
    prompts = load_prompt_source(PromptsSection(source=str(path), on_bad="skip"), report=report)
    assert [p["id"] for p in prompts] == ["q0", "q1", "q3", "q4", "q5"] and report.n_skipped == 1
    assert len(load_prompt_source(PromptsSection(source=str(path), limit=2))) == 2  # the bad row is past the limit
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"question": "Hi"}) + "\n")
    with pytest.raises(DataError, match=r"`prompts\.adapter`"):
        load_prompt_source(PromptsSection(source=str(odd)), key="prompts")


def test_rs_prompts_section_keys_and_toyworld_unchanged():
    from types import SimpleNamespace

    from core.sources import load_prompt_source
    from rejection_sampling.config import PromptsSection
    from rejection_sampling.sample import load_prompts

    section = PromptsSection(source=str(BYOD / "prefs_hh.jsonl"), category="safety", adapter="hh-rlhf", n=7)
    prompts = load_prompts(SimpleNamespace(prompts=section))
    assert len(prompts) == 7 and {p["category"] for p in prompts} == {"safety"}
    toy = PromptsSection(n=6, seed=3)
    assert load_prompt_source(toy, "train", toy.n, toy.seed) == load_prompt_source("toyworld", "train", 6, 3)
    with pytest.raises(ValueError, match="source toyworld takes only 'n' and 'seed'.*category"):
        PromptsSection(category="safety")


# ---------------------------------------------------------------- 3. RM held-out evaluation on the user's pairs
def _rm_config(out, *overrides):
    from reward.config import RewardConfig

    return load_config(RewardConfig, RM_SMOKE, [f"output_dir={out}", "batch_size=8", "per_device_batch_size=4", *overrides])


def test_reward_train_evaluates_on_the_users_heldout_pairs(tmp_path):
    from reward.train import run

    out = tmp_path / "rm"
    config = _rm_config(out, "kind=safety", f"data=[{{source: {BYOD / 'pairs_v2.jsonl'}}}]",
                        f"eval_data=[{{source: {BYOD / 'prefs_heldout.jsonl'}}}]")
    run(config)
    result = json.loads((out / "eval.json").read_text())
    assert "toyworld" not in result and result["kind"] == "safety"  # the RM never saw toyworld
    heldout = result["heldout"]
    assert heldout["overall"]["n"] == 40 and heldout["sources"] == [str(BYOD / "prefs_heldout.jsonl")]
    assert {c: v["n"] for c, v in heldout["per_category"].items()} == {"helpfulness": 24, "safety": 16}
    assert set(heldout["per_rating"]) == {"significantly_better", "better", "slightly_better", "negligibly_better"}
    assert sum(v["n"] for v in heldout["per_rating"].values()) == 40
    assert set(heldout["per_category_rating"]) == {"helpfulness", "safety"}
    safety = heldout["safety"]  # the safety RM as a classifier at the Llama 2 gate threshold
    assert safety["threshold"] == 0.15 and safety["n"] == 80 and safety["n_unsafe"] > 0
    assert (out / "safety_eval_data_rewards.png").exists()
    assert heldout["load_report"]["n_loaded"] == 40
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["heldout_accuracy"] == heldout["per_category"]["safety"]["accuracy"]
    assert manifest["outputs"]["eval"] == str(out / "eval.json")
    assert json.loads((out / "data_report.json").read_text())["eval_data"]["n_loaded"] == 40

    # the report draws the held-out accuracy per rating
    from pipelines.report import plot_rm

    assert plot_rm(tmp_path, [out], tmp_path).name == "rm_accuracy.png"


def test_reward_train_on_toyworld_and_eval_data_reports_both(tmp_path):
    from reward.train import run

    out = tmp_path / "rm"
    run(_rm_config(out, "kind=helpfulness", "toyworld_pairs=16", "eval_pairs=12",
                   f"eval_data=[{{source: {BYOD / 'prefs_pku.jsonl'}, category: helpfulness, limit: 10}}]"))
    result = json.loads((out / "eval.json").read_text())
    assert result["heldout"]["overall"]["n"] == 10 and set(result["heldout"]["per_category"]) == {"helpfulness"}
    assert result["toyworld"]["overall"]["n"] == 12 and result["data"] == "toyworld:heldout"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["heldout_accuracy"] == result["heldout"]["per_category"]["helpfulness"]["accuracy"]
    assert "toyworld_heldout_accuracy" in manifest


def test_eval_data_is_checked_before_anything_is_written(tmp_path):
    from reward.config import RewardConfig
    from reward.train import run

    bad = tmp_path / "heldout.jsonl"
    rows = [json.loads(line) for line in (BYOD / "prefs_heldout.jsonl").read_text().splitlines()[:4]]
    rows[3]["rating"] = "much_better"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "rm"
    with pytest.raises(DataError, match=r"heldout\.jsonl, line 4, field 'rating'"):
        run(_rm_config(out, f"data=[{{source: {BYOD / 'pairs_v2.jsonl'}}}]", f"eval_data=[{{source: {bad}}}]"))
    assert not (out / "manifest.json").exists()
    with pytest.raises(ConfigError, match=r"eval_data\[0\]: toyworld's held-out pairs"):
        load_config(RewardConfig, RM_SMOKE, ["eval_data=[{source: toyworld}]"])


def test_reward_eval_cli_category_and_limit_before_validation(tmp_path):
    from reward.cli import main as reward_main
    from reward.train import run

    model = run(_rm_config(tmp_path / "rm", f"data=[{{source: {BYOD / 'pairs_v2.jsonl'}, limit: 8}}]"))
    data = tmp_path / "mine.jsonl"  # HH-RLHF rows under a name that says nothing of the category
    lines = [json.loads(line) for line in (BYOD / "prefs_hh.jsonl").read_text().splitlines()[:4]]
    lines[3] = {"chosen": hh(("user", "Hi"), ("assistant", "")), "rejected": hh(("user", "Hi"), ("assistant", "No."))}
    data.write_text("".join(json.dumps(row) + "\n" for row in lines))

    args = ["eval", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "ev")]
    assert reward_main(args) == 2  # line 4's empty answer stops it
    assert reward_main([*args, "--limit", "3"]) == 0  # ... unless it is past the limit: not read
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["mine"]["per_category"] == {"helpfulness": {"accuracy": ev["mine"]["per_category"]["helpfulness"]["accuracy"], "n": 3}}
    assert ev["load_report"]["n_read"] == 3
    assert reward_main([*args, "--limit", "3", "--category", "safety"]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(ev["mine"]["per_category"]) == {"safety"} and ev["category"] == "safety"


# ---------------------------------------------------------------- 4. GAtt dialogues from every file type
def _dialogue_rows() -> list[dict]:
    return [json.loads(line) for line in (BYOD / "dialogues.jsonl").read_text().splitlines()]


def test_dialogues_from_a_json_list_and_a_csv_file(tmp_path):
    from gatt.dialogues import load_dialogues

    rows = _dialogue_rows()
    expected, _ = load_dialogues(str(BYOD / "dialogues.jsonl"), "train", 10, 3, 0)
    as_json = tmp_path / "dialogues.json"
    as_json.write_text(json.dumps(rows, indent=1))
    as_csv = tmp_path / "dialogues.csv"
    with as_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "messages"])
        writer.writerows([row["id"], json.dumps(row["messages"])] for row in rows)
    for path in (as_json, as_csv):
        dialogues, too_short = load_dialogues(str(path), "train", 10, 3, 0)
        assert dialogues == expected and too_short == 0
        assert dialogues[0].id == "dialogue-000"
    dialogues, too_short = load_dialogues(str(as_csv), "train", 100, 5, 0)
    assert too_short > 0 and all(len(d.users) == 5 for d in dialogues)


def test_dialogues_bad_rows_raise_or_are_skipped_and_counted(tmp_path):
    from gatt.dialogues import load_dialogues

    class Dialogues(SFTSourceKeys):
        source: str

    rows = _dialogue_rows()[:6]
    rows[2] = {"id": "broken", "messages": [{"role": "bot", "content": "x"}]}
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[:4]) + "{not json\n"
                    + "".join(json.dumps(row) + "\n" for row in rows[4:]))
    with pytest.raises(DataError, match=r"dialogues\.jsonl, line 3, field 'messages\[0\]'"):
        load_dialogues(str(path), "train", 10, 3, 0)
    report = LoadReport()
    dialogues, _ = load_dialogues(Dialogues(source=str(path), on_bad="skip"), "train", 10, 3, 0, report=report)
    assert len(dialogues) == 5 and report.n_skipped == 2 and report.n_loaded == 5 and report.n_read == 7
    assert "line 3" in report.skipped[0] and "line 5" in report.skipped[1]
    dialogues, _ = load_dialogues(Dialogues(source=str(path), limit=2), "train", 10, 3, 0)
    assert len(dialogues) == 2  # the bad rows are past the limit


def test_dialogues_from_a_hub_dataset(hub):
    from gatt.dialogues import load_dialogues

    class Dialogues(SFTSourceKeys):
        source: str

    calls, rows = hub
    rows["someone/dialogues"] = _dialogue_rows()
    dialogues, _ = load_dialogues(Dialogues(source="someone/dialogues", split="test", data_dir="en"), "train", 5, 3, 0)
    assert len(dialogues) == 5 and dialogues[0].id == "dialogue-000"
    assert (calls[0]["data_dir"], calls[0]["split"]) == ("en", "test")


def test_sft_data_section_passes_data_dir_and_subset(hub):
    from sft.config import DataSection
    from sft.data import load_conversations

    calls, rows = hub
    rows["someone/chats"] = [CHAT_ROW]
    data = DataSection(train="someone/chats", data_dir="en", subset="clean", split="validation")
    [conversation] = load_conversations(data.train, data.adapter, split=data.split, data_dir=data.data_dir, subset=data.subset)
    assert (calls[0]["data_dir"], calls[0]["name"], calls[0]["split"]) == ("en", "clean", "validation")
    assert conversation.messages[-1] == {"role": "assistant", "content": "Hello!"}
