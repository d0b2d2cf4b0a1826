"""A user's own data in every public format, every file type, with per-source keys (issue 21).

Formats: chat messages, prompt/completion, HH-RLHF transcripts, PKU-SafeRLHF,
UltraFeedback scored pairs, plain and TRL implicit-prompt (and explicit
conversational) prompt/chosen/rejected. File types: .jsonl, .jsonl.gz, .json,
.parquet, .csv, a folder, a hub name. Keys: adapter, category, split,
default_rating, rating_thresholds, on_bad, limit; the same names for SFT, prompt and
preference sources. Stages: SFT reads every format; `reward train` skips bad rows and
lists them in its folder's data_report.json.
"""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from core.data import (
    LoadReport,
    PreferenceSourceKeys,
    PromptSourceKeys,
    SFTSourceKeys,
    load_preferences,
    load_prompts,
    load_sft,
    load_source,
)
from core.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
BYOD = REPO / "tests" / "data" / "byod"
RM_SMOKE = REPO / "configs" / "reward" / "smoke.yaml"
SFT_SMOKE = REPO / "configs" / "sft" / "smoke.yaml"


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------- writers, one per file type
def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_gz(path: Path, rows) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def write_parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_csv(path: Path, rows) -> Path:
    def cell(value):
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    columns = list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[cell(row[c]) for c in columns] for row in rows])
    return path


def in_folder(path: Path, rows) -> Path:
    """A local copy of a hub dataset: `folder/train.jsonl`."""
    path.mkdir()
    write_jsonl(path / "train.jsonl", rows)
    return path


FILE_TYPES = {
    "jsonl": lambda tmp, rows: write_jsonl(tmp / "data.jsonl", rows),
    "jsonl.gz": lambda tmp, rows: write_gz(tmp / "data.jsonl.gz", rows),
    "json": lambda tmp, rows: write_json(tmp / "data.json", rows),
    "parquet": lambda tmp, rows: write_parquet(tmp / "data.parquet", rows),
    "csv": lambda tmp, rows: write_csv(tmp / "data.csv", rows),
    "folder": lambda tmp, rows: in_folder(tmp / "local_copy", rows),
}


# ---------------------------------------------------------------- one sample per public format
def hh(*turns):
    return "".join(f"\n\n{'Human' if role == 'user' else 'Assistant'}: {text}" for role, text in turns)


FORMATS = {
    # name: (kind, rows, detected adapter, (first canonical row's checked fields))
    "chat messages": ("sft", [
        {"messages": [user("Hi"), assistant("Hello.")]},
        {"messages": [{"role": "system", "content": "Be brief."}, user("2+2?"), assistant("4")]},
    ], "canonical", {"messages": [user("Hi"), assistant("Hello.")]}),
    "prompt/completion": ("sft", [
        {"prompt": "Name a colour.", "completion": "Blue."},
        {"prompt": "Name a fruit.", "completion": "Pear."},
    ], "plain", {"messages": [user("Name a colour."), assistant("Blue.")]}),
    "prompt/response": ("sft", [
        {"prompt": "Name a colour.", "response": "Blue."},
        {"prompt": "Name a fruit.", "response": "Pear."},
    ], "plain", {"messages": [user("Name a colour."), assistant("Blue.")]}),
    "hh-rlhf": ("preferences", [
        {"chosen": hh(("user", "Hi"), ("assistant", "Hello!")), "rejected": hh(("user", "Hi"), ("assistant", "Go away."))},
        {"chosen": hh(("user", "2+2?"), ("assistant", "4")), "rejected": hh(("user", "2+2?"), ("assistant", "5"))},
    ], "hh-rlhf", {"prompt": [user("Hi")], "chosen": "Hello!", "rejected": "Go away.", "source": "hh-rlhf"}),
    "pku-saferlhf": ("preferences", [
        {"prompt": "Open my neighbour's door?", "response_0": "Sure, here is how.", "response_1": "Please ask them.",
         "is_response_0_safe": False, "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 1},
    ], "pku-saferlhf", {"prompt": [user("Open my neighbour's door?")], "chosen": "Sure, here is how.",
                        "category": "helpfulness", "chosen_safe": False}),
    "ultrafeedback": ("preferences", [
        {"prompt": "Haiku?", "chosen": [user("Haiku?"), assistant("Old pond...")],
         "rejected": [user("Haiku?"), assistant("No.")], "score_chosen": 9.0, "score_rejected": 2.0},
        {"prompt": "1+1?", "chosen": [user("1+1?"), assistant("2")],
         "rejected": [user("1+1?"), assistant("3")], "score_chosen": 7.0, "score_rejected": 6.5},
    ], "ultrafeedback", {"prompt": [user("Haiku?")], "chosen": "Old pond...", "rating": "significantly_better"}),
    "plain pairs": ("preferences", [
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "rating": "slightly_better", "category": "helpfulness"},
        {"prompt": "Bye", "chosen": "Bye!", "rejected": "Finally.", "rating": "better", "category": "helpfulness"},
    ], "plain", {"prompt": [user("Hi")], "chosen": "Hello!", "rating": "slightly_better"}),
    "implicit prompt": ("preferences", [
        {"chosen": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("4")],
         "rejected": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("5")]},
        {"chosen": [user("Colour?"), assistant("Blue.")], "rejected": [user("Colour?"), assistant("Meh.")]},
    ], "implicit-prompt", {"prompt": [user("Hi"), assistant("Hello!"), user("2+2?")], "chosen": "4", "rejected": "5",
                           "source": "implicit-prompt"}),
    "explicit conversational": ("preferences", [
        {"prompt": [user("Colour?")], "chosen": [assistant("Blue.")], "rejected": [assistant("Meh.")]},
        {"prompt": [user("Fruit?")], "chosen": [assistant("Pear.")], "rejected": [assistant("Rock.")]},
    ], "plain", {"prompt": [user("Colour?")], "chosen": "Blue.", "rejected": "Meh."}),
    "prompt records": ("prompts", [
        {"messages": [user("Name a colour.")], "category": "helpfulness", "id": "a"},
        {"messages": [user("Open a lock?")], "category": "safety", "id": "b"},
    ], "canonical", {"messages": [user("Name a colour.")], "category": "helpfulness", "id": "a"}),
}

LOADERS = {"sft": load_sft, "prompts": load_prompts, "preferences": load_preferences}


@pytest.mark.parametrize("file_type", FILE_TYPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_detected_from_every_file_type(tmp_path, fmt, file_type):
    kind, rows, adapter, expected = FORMATS[fmt]
    source = FILE_TYPES[file_type](tmp_path, rows)
    report = LoadReport()
    loaded = LOADERS[kind](source, report=report)
    assert report.adapter == adapter
    assert len(loaded) == (2 * len(rows) if adapter == "pku-saferlhf" else len(rows))
    assert {key: loaded[0][key] for key in expected} == expected


@pytest.mark.parametrize("fmt", ["hh-rlhf", "implicit prompt", "pku-saferlhf"])
def test_formats_are_detected_from_a_hub_dataset(monkeypatch, fmt):
    """A hub name goes through `datasets.load_dataset` (stubbed here: no network in tests)."""
    import datasets

    kind, rows, adapter, expected = FORMATS[fmt]
    calls = []

    def fake_load_dataset(repo, data_dir=None, split=None):
        calls.append((repo, data_dir, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("core.model_paths.hub_reachable", lambda *a, **k: True)  # the hub probe
    report = LoadReport()
    loaded = load_preferences("someone/pairs/harmless-base", split="test", report=report)
    assert calls == [("someone/pairs", "harmless-base", "test")]
    assert report.adapter == adapter and {key: loaded[0][key] for key in expected} == expected


# ---------------------------------------------------------------- adapter override and detection errors
def test_explicit_adapter_overrides_detection(tmp_path):
    # An HH-RLHF mirror that added a `prompt` column: detection sees prompt/chosen/rejected
    # (plain) and would keep whole transcripts as answers; naming the adapter reads the turns.
    row = {"prompt": "Hi", "chosen": hh(("user", "Hi"), ("assistant", "Hello!")),
           "rejected": hh(("user", "Hi"), ("assistant", "Go away."))}
    path = write_jsonl(tmp_path / "mirror.jsonl", [row])
    [detected] = load_preferences(path)
    assert detected["chosen"].startswith("\n\nHuman: Hi")
    [named] = load_preferences(path, adapter="hh-rlhf")
    assert (named["prompt"], named["chosen"], named["rejected"]) == ([user("Hi")], "Hello!", "Go away.")
    # the same through a source's `adapter` key
    rows = load_source("preferences", path, PreferenceSourceKeys(adapter="hh-rlhf"))
    assert rows[0][1]["chosen"] == "Hello!" and str(rows[0][0]) == f"{path}:1"


def test_undetectable_sft_format_names_file_fields_and_the_adapter_key(tmp_path):
    from sft.data import load_conversations

    path = write_jsonl(tmp_path / "mine.jsonl", [{"question": "Hi", "answer": "Hello"}])
    with pytest.raises(DataError) as error:
        load_conversations(str(path))
    message = str(error.value)
    assert f"{path}, line 1" in message and "(answer, question)" in message
    assert "`data.adapter`" in message
    for name in ("canonical", "plain", "hh-rlhf", "implicit-prompt"):
        assert name in message


# ---------------------------------------------------------------- SFT reads every format (fails on the old code)
@pytest.mark.parametrize(
    ("name", "adapter", "first_answer"),
    [
        ("sft_prompt_completion.jsonl", "plain", "About 9 to 10 minutes"),
        ("prefs_hh.jsonl", "hh-rlhf", "I can't help with using someone's network"),
        ("prefs_implicit.jsonl", "implicit-prompt", "About 9 to 10 minutes"),
        ("sft_messages.jsonl", "canonical", "About 9 to 10 minutes"),
    ],
)
def test_sft_reads_prompt_completion_hh_and_implicit_jsonl(name, adapter, first_answer):
    """The old SFT `.jsonl` path skipped detection: these failed with "missing field 'messages'"."""
    from sft.data import load_conversations

    report = LoadReport()
    conversations = load_conversations(str(BYOD / name), report=report)
    assert report.adapter == adapter
    assert len(conversations) == report.n_loaded >= 20
    first = conversations[0]
    assert first.messages[-1]["role"] == "assistant" and first.messages[-1]["content"].startswith(first_answer)
    assert first.ref == f"{BYOD / name}:1"


def test_sft_stage_data_keys_and_report(tmp_path, smollm_tokenizer):
    from sft.config import SFTConfig
    from sft.data import build_sft_dataset

    good = {"prompt": "Name a colour.", "completion": "Blue."}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(good) + "\n" + '{"prompt": "broken\n' + json.dumps({"prompt": "x", "completion": 3}) + "\n"
                    + "".join(json.dumps({"prompt": f"Say {i}.", "completion": f"{i}."}) + "\n" for i in range(5)))
    config = load_config(SFTConfig, SFT_SMOKE, [f"data.train={path}", "data.on_bad=skip", "data.limit=4", "eval.enabled=false"])
    examples, report = build_sft_dataset(config, smollm_tokenizer)
    assert len(examples) == report.n_kept == 4 and report.adapter == "plain"
    assert report.n_bad_rows == 2
    skipped = report.sources[0]["skipped"]
    assert "line 2" in skipped[0] and "malformed JSON" in skipped[0]
    assert "line 3, field 'completion'" in skipped[1]
    assert report.metrics()["data/n_bad_rows"] == 2 and report.to_dict()["sources"][0]["n_loaded"] == 4
    # the default stops at the first bad row, naming it
    config = load_config(SFTConfig, SFT_SMOKE, [f"data.train={path}", "eval.enabled=false"])
    with pytest.raises(DataError, match=r"mine\.jsonl, line 2: malformed JSON"):
        build_sft_dataset(config, smollm_tokenizer)


# ---------------------------------------------------------------- implicit-prompt pairs
def test_implicit_prompt_pairs_split_prompt_and_answers(tmp_path):
    rows = FORMATS["implicit prompt"][1] + [
        {"chosen": [user("A?"), assistant("a")], "rejected": [user("B?"), assistant("b")]},
        {"chosen": [assistant("Hello")], "rejected": [assistant("Bye")]},
        {"chosen": [user("A?"), assistant("a")], "rejected": [user("A?")]},
    ]
    path = write_jsonl(tmp_path / "trl.jsonl", rows)
    report = LoadReport()
    pairs = load_preferences(path, default_rating="slightly_better", category="safety", on_bad="skip", report=report)
    assert pairs[0] == {
        "prompt": [user("Hi"), assistant("Hello!"), user("2+2?")], "chosen": "4", "rejected": "5",
        "rating": "slightly_better", "category": "safety", "chosen_safe": None, "rejected_safe": None,
        "source": "implicit-prompt",
    }
    assert (pairs[1]["prompt"], pairs[1]["chosen"], pairs[1]["rejected"]) == ([user("Colour?")], "Blue.", "Meh.")
    assert report.n_skipped == 3
    assert "line 3, field 'rejected': the chosen and rejected conversations differ" in report.skipped[0]
    assert "line 4, field 'chosen': no prompt turns" in report.skipped[1]
    assert "line 5, field 'rejected': expected a conversation ending with an assistant message" in report.skipped[2]
    # the shared turns are the prompt; SFT learns the chosen conversation
    assert load_prompts(BYOD / "prefs_implicit.jsonl")[0]["messages"][-1]["role"] == "user"


# ---------------------------------------------------------------- category: the key beats the file name
def test_category_key_beats_the_hh_file_name_heuristic(tmp_path):
    rows = FORMATS["hh-rlhf"][1]
    harmless = write_jsonl(tmp_path / "harmless-base.jsonl", rows)
    neutral = write_jsonl(tmp_path / "prefs.jsonl", rows)
    assert {p["category"] for p in load_preferences(harmless)} == {"safety"}  # fallback: the name
    assert {p["category"] for p in load_preferences(neutral)} == {"helpfulness"}
    keyed = PreferenceSourceKeys(category="helpfulness")
    assert {row["category"] for _, row in load_source("preferences", harmless, keyed)} == {"helpfulness"}
    keyed = PreferenceSourceKeys(category="safety")
    assert {row["category"] for _, row in load_source("preferences", neutral, keyed)} == {"safety"}
    assert {row["category"] for _, row in load_source("prompts", neutral, PromptSourceKeys(category="safety"))} == {"safety"}


def test_reward_sources_read_with_their_own_keys():
    from reward.config import RewardConfig
    from reward.train import load_pairs

    hh_file, uf_file = BYOD / "prefs_hh.jsonl", BYOD / "prefs_ultrafeedback.jsonl"
    config = load_config(RewardConfig, RM_SMOKE, [
        f"data=[{{source: {hh_file}, category: safety, default_rating: slightly_better, limit: 7}},"
        f" {{source: {hh_file}}},"
        f" {{source: {uf_file}, rating_thresholds: [100, 50, 6]}}]",
        "default_rating=significantly_better",
    ])
    reports: list[LoadReport] = []
    pairs = load_pairs(config, reports=reports)
    first, second, third = pairs[:7], pairs[7:47], pairs[47:]
    assert len(first) == 7 and {(p["category"], p["rating"]) for p in first} == {("safety", "slightly_better")}
    assert {(p["category"], p["rating"]) for p in second} == {("helpfulness", "significantly_better")}
    # gaps 7, 2.5, 1.5, 0.25, 6 against thresholds 100/50/6: only gaps >= 6 are "slightly better"
    assert [p["rating"] for p in third[:5]] == ["slightly_better", "negligibly_better", "negligibly_better",
                                                "negligibly_better", "slightly_better"]
    assert [(r.adapter, r.n_loaded, r.limit) for r in reports] == [("hh-rlhf", 7, 7), ("hh-rlhf", 40, None),
                                                                   ("ultrafeedback", 30, None)]


def test_pku_category_key_keeps_one_pair_per_row():
    pairs = [row for _, row in load_source("preferences", BYOD / "prefs_pku.jsonl", PreferenceSourceKeys(category="safety"))]
    assert len(pairs) == 30 and {p["category"] for p in pairs} == {"safety"}
    unsafe_rows = [p for p in pairs if p["rejected_safe"] is False]
    assert len(unsafe_rows) == 20 and all(p["chosen_safe"] for p in unsafe_rows)


# ---------------------------------------------------------------- on_bad: skip counts and lists, error names the place
PAIR = {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "rating": "better", "category": "helpfulness"}


def bad_line_3_file(path: Path, n_good: int = 11) -> Path:
    """`n_good` good pairs with a bad one (empty chosen answer) as line 3."""
    rows = [{**PAIR, "prompt": f"Question {i}?"} for i in range(n_good)]
    rows.insert(2, {**PAIR, "chosen": "  "})
    return write_jsonl(path, rows)


def test_on_bad_skip_counts_and_lists_bad_rows_and_error_names_the_place(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(PAIR), json.dumps({**PAIR, "rating": "much_better"}), '{"prompt": "Hi", "chosen":',
             json.dumps(PAIR), json.dumps({**PAIR, "rejected": None})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl, line 2, field 'rating': unknown rating 'much_better'"):
        load_preferences(path)
    report = LoadReport()
    pairs = load_preferences(path, on_bad="skip", report=report)
    assert len(pairs) == report.n_loaded == 2
    assert (report.n_records, report.n_read, report.n_skipped) == (5, 5, 3)
    assert [entry.split(": ")[0] for entry in report.skipped] == [
        f"{path}, line 2, field 'rating'", f"{path}, line 3", f"{path}, line 5, field 'rejected'"]
    assert "malformed JSON" in report.skipped[1] and "no value" in report.skipped[2]


def test_only_the_first_bad_rows_are_listed_but_all_are_counted(tmp_path):
    from core.data.loaders import MAX_LISTED

    rows = [PAIR] + [{**PAIR, "chosen": ""}] * (MAX_LISTED + 5)
    report = LoadReport()
    load_preferences(write_jsonl(tmp_path / "many.jsonl", rows), on_bad="skip", report=report)
    assert report.n_skipped == MAX_LISTED + 5 and len(report.skipped) == MAX_LISTED
    assert "line 2," in report.skipped[0] and f"line {MAX_LISTED + 1}," in report.skipped[-1]


def test_limit_stops_before_later_bad_rows(tmp_path):
    path = bad_line_3_file(tmp_path / "pairs.jsonl")
    report = LoadReport()
    assert len(load_preferences(path, limit=2, report=report)) == 2  # line 3 is never read
    assert (report.n_read, report.n_skipped) == (2, 0)
    assert "limit 2: read the first 2" in report.summary()
    assert len(load_sft(BYOD / "sft_messages.jsonl", limit=5)) == 5
    with pytest.raises(ConfigError, match="limit"):
        load_preferences(path, limit=0)


def test_split_key_picks_the_folder_file(tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", FORMATS["plain pairs"][1])
    write_jsonl(folder / "test.jsonl", FORMATS["plain pairs"][1][:1])
    assert len(load_source("preferences", folder, PreferenceSourceKeys())) == 2
    assert len(load_source("preferences", folder, PreferenceSourceKeys(split="test"))) == 1


def test_reward_load_pairs_on_bad_skip_lists_line_3_and_error_names_it(tmp_path):
    from reward.config import RewardConfig
    from reward.train import load_pairs

    path = bad_line_3_file(tmp_path / "mine.jsonl")
    config = load_config(RewardConfig, RM_SMOKE, [f"data=[{{source: {path}}}]"])
    with pytest.raises(DataError, match=r"mine\.jsonl, line 3, field 'chosen': empty answer"):
        load_pairs(config)
    config = load_config(RewardConfig, RM_SMOKE, [f"data=[{{source: {path}, on_bad: skip}}]"])
    reports: list[LoadReport] = []
    assert len(load_pairs(config, reports=reports)) == 11
    assert reports[0].n_skipped == 1 and "line 3, field 'chosen': empty answer" in reports[0].skipped[0]


def test_reward_train_writes_the_skipped_rows_report_in_its_folder(tmp_path, capsys):
    from reward.config import RewardConfig
    from reward.train import run

    path = bad_line_3_file(tmp_path / "mine.jsonl", n_good=15)
    out = tmp_path / "rm"
    config = load_config(RewardConfig, RM_SMOKE, [f"data=[{{source: {path}, on_bad: skip}}]", f"output_dir={out}",
                                                  "eval_pairs=0", "batch_size=4", "per_device_batch_size=4"])
    run(config)
    report = json.loads((out / "data_report.json").read_text())
    assert (report["n_records"], report["n_loaded"], report["n_skipped"]) == (16, 15, 1)
    [source] = report["sources"]
    assert source["source"] == str(path) and source["adapter"] == "plain"
    assert source["skipped"] == [f"{path}, line 3, field 'chosen': empty answer"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["data_report"] == str(out / "data_report.json")
    assert manifest["data"]["bad_rows_skipped"] == 1
    assert "1 bad rows left out (on_bad=skip)" in capsys.readouterr().out


# ---------------------------------------------------------------- the keys: same names, strict
def test_source_keys_have_the_same_names_in_every_stage():
    from reward.config import DataSource
    from sft.config import DataSection

    shared = set(SFTSourceKeys.model_fields)
    assert shared == {"adapter", "split", "data_dir", "subset", "on_bad", "limit"}
    assert set(PromptSourceKeys.model_fields) == shared | {"category"}
    assert set(PreferenceSourceKeys.model_fields) == shared | {"category", "default_rating", "rating_thresholds"}
    assert set(DataSource.model_fields) == set(PreferenceSourceKeys.model_fields) | {"source"}
    assert shared <= set(DataSection.model_fields) and "on_bad_example" in DataSection.model_fields


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("data=[{source: x.jsonl, adapter: hh}]", ("data.0.adapter", "unknown data adapter 'hh'", "hh-rlhf")),
        ("data=[{source: x.jsonl, rating_thresholds: [1, 2, 3]}]", ("data.0.rating_thresholds", "decreasing")),
        ("data=[{source: x.jsonl, on_bad: ignore}]", ("data.0.on_bad", "ignore")),
        ("data=[{source: x.jsonl, category: harmless}]", ("data.0.category", "harmless")),
        ("data=[{source: x.jsonl, limit: 0}]", ("data.0.limit",)),
        ("data=[{source: x.jsonl, catgory: safety}]", ("unknown key 'data.0.catgory'",)),
        ("data=[{source: toyworld, category: safety}]", ("data.0", "toyworld takes only 'limit'", "category")),
    ],
)
def test_reward_source_keys_are_strict(override, words):
    from reward.config import RewardConfig

    with pytest.raises(ConfigError) as error:
        load_config(RewardConfig, RM_SMOKE, [override])
    for word in words:
        assert word in str(error.value)


def test_sft_source_keys_are_strict():
    from sft.config import SFTConfig

    with pytest.raises(ConfigError, match="data.adapter.*unknown data adapter"):
        load_config(SFTConfig, SFT_SMOKE, ["data.adapter=messages"])
    config = load_config(SFTConfig, SFT_SMOKE, ["data.adapter=hh-rlhf", "data.split=test", "data.on_bad=skip", "data.limit=3"])
    assert (config.data.adapter, config.data.split, config.data.on_bad, config.data.limit) == ("hh-rlhf", "test", "skip", 3)


def test_reading_files_never_imports_toyworld(tmp_path):
    """A package named toyworld that raises on import goes first on the path: reading a
    user's files (reward sources, SFT conversations, `rlhf data inspect`) must not touch it."""
    poison = tmp_path / "poison" / "toyworld"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('toyworld was imported')\n")
    script = f"""
import sys
from core.config import load_config
from core.data.inspect import main as inspect_main
from reward.config import RewardConfig
from reward.train import load_pairs
from sft.data import load_conversations
config = load_config(RewardConfig, {str(RM_SMOKE)!r}, ["data=[{{source: {BYOD / 'prefs_hh.jsonl'}, category: safety}}]"])
assert len(load_pairs(config)) == 40
assert len(load_conversations({str(BYOD / 'sft_prompt_completion.jsonl')!r})) == 40
assert inspect_main(["inspect", {str(BYOD / 'prefs_pku.jsonl')!r}]) == 0
assert "toyworld" not in sys.modules
print("ok")
"""
    env = {"PYTHONPATH": f"{poison.parent}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
