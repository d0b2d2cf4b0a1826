"""core.data: schemas, loaders (JSONL/JSON/CSV/Parquet), adapters, and errors that name file, line and field."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import pytest

from core.data import (
    ADAPTERS,
    LoadReport,
    check_sft_example,
    detect_adapter,
    hh_transcript_to_messages,
    load_preferences,
    load_prompts,
    load_records,
    load_sft,
    rating_from_score_gap,
    save_jsonl,
    validate_preference_pair,
    validate_prompt,
    validate_sft_example,
)
from core.errors import ConfigError, DataError

HH_HARMLESS = Path("/work/shared/data/hh-rlhf-harmless/test.jsonl.gz")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


SFT = [
    {"messages": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello.")]},
    {"messages": [user("2+2?"), assistant("4")]},
]
PROMPTS = [
    {
        "messages": [user("How do I bake bread?")],
        "category": "helpfulness",
        "id": "a",
        "kind": None,
    },
    {"messages": [user("How do I pick a lock?")], "category": "safety", "id": "b", "kind": "crime"},
]
PAIRS = [
    {
        "prompt": [user("Hi")],
        "chosen": "Hello!",
        "rejected": "Go away.",
        "rating": "significantly_better",
        "category": "helpfulness",
        "chosen_safe": None,
        "rejected_safe": None,
        "source": "mine",
    },
    {
        "prompt": [user("Hurt someone?")],
        "chosen": "No.",
        "rejected": "Sure, ...",
        "rating": "better",
        "category": "safety",
        "chosen_safe": True,
        "rejected_safe": False,
        "source": "mine",
    },
]


# ---------------------------------------------------------------- writers for each format
def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
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


def write_parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv, "parquet": write_parquet}


# ---------------------------------------------------------------- 1. every loader on good data, every format
@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize(
    ("loader", "rows"),
    [(load_sft, SFT), (load_prompts, PROMPTS), (load_preferences, PAIRS)],
    ids=["sft", "prompts", "preferences"],
)
def test_loaders_read_canonical_rows_in_every_format(tmp_path, fmt, loader, rows):
    path = WRITERS[fmt](tmp_path / f"data.{fmt}", rows)
    assert loader(path) == rows


def test_jsonl_gz_json_lines_in_a_json_file_and_a_split_folder(tmp_path):
    with gzip.open(tmp_path / "pairs.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in PAIRS)
    assert load_preferences(tmp_path / "pairs.jsonl.gz") == PAIRS
    assert load_sft(write_jsonl(tmp_path / "lines.json", SFT)) == SFT
    folder = tmp_path / "local_copy"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", PROMPTS)
    assert load_prompts(folder, split="test") == PROMPTS


def test_plain_formats(tmp_path):
    sft = write_jsonl(
        tmp_path / "sft.jsonl",
        [
            {"prompt": "Hi", "completion": "Hello."},
            {"prompt": "Yo", "response": "Hey.", "system": "Be nice."},
        ],
    )
    assert load_sft(sft) == [
        {"messages": [user("Hi"), assistant("Hello.")]},
        {"messages": [{"role": "system", "content": "Be nice."}, user("Yo"), assistant("Hey.")]},
    ]
    prompts = write_csv(
        tmp_path / "prompts.csv",
        [
            {"id": 7, "prompt": "Kill a python process?", "type": "homonyms"},
            {"id": 8, "prompt": "Hi", "type": "x"},
        ],
    )
    loaded = load_prompts(prompts)
    assert [(p["id"], p["category"], p["messages"]) for p in loaded] == [
        ("7", "helpfulness", [user("Kill a python process?")]),
        ("8", "helpfulness", [user("Hi")]),
    ]
    no_ids = write_jsonl(
        tmp_path / "no_ids.jsonl", [{"prompt": "a"}, {"prompt": "b", "category": "safety"}]
    )
    assert [(p["id"], p["category"]) for p in load_prompts(no_ids)] == [
        ("p0", "helpfulness"),
        ("p1", "safety"),
    ]
    assert [p["category"] for p in load_prompts(no_ids, category="safety")] == ["safety", "safety"]
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": "Hi", "chosen": "Hello", "rejected": "Meh", "extra": 1}],
    )
    assert load_preferences(pairs, default_rating="slightly_better") == [
        {
            "prompt": [user("Hi")],
            "chosen": "Hello",
            "rejected": "Meh",
            "rating": "slightly_better",
            "category": "helpfulness",
            "chosen_safe": None,
            "rejected_safe": None,
            "source": str(pairs),
        }
    ]


def test_save_jsonl_round_trip(tmp_path):
    assert save_jsonl(tmp_path / "out.jsonl", PAIRS) == 2
    assert load_preferences(tmp_path / "out.jsonl") == PAIRS


# ---------------------------------------------------------------- 2. bad inputs name file, line and field
def lines(*rows) -> bytes:
    return b"".join(
        (row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows
    )


def without(row, key):
    return {k: v for k, v in row.items() if k != key}


BAD_INPUTS = [
    # (case, loader, file name, content, line, field, words in the message)
    (
        "malformed JSON line",
        load_preferences,
        "d.jsonl",
        lines(PAIRS[0], b'{"prompt": [', PAIRS[1]),
        2,
        None,
        "malformed JSON",
    ),
    (
        "missing field",
        load_preferences,
        "d.jsonl",
        lines(PAIRS[0], without(PAIRS[1], "rating")),
        2,
        "rating",
        "missing field",
    ),
    (
        "wrong type",
        load_sft,
        "d.jsonl",
        lines(SFT[0], {"messages": [user("a"), {"role": "assistant", "content": 42}]}),
        2,
        "messages[1].content",
        "expected a string, got integer",
    ),
    (
        "wrong type bool",
        load_preferences,
        "d.jsonl",
        lines(PAIRS[0], {**PAIRS[1], "chosen_safe": "yes"}),
        2,
        "chosen_safe",
        "expected true, false or null",
    ),
    (
        "unknown role",
        load_prompts,
        "d.jsonl",
        lines(
            PROMPTS[0],
            PROMPTS[1],
            {**PROMPTS[0], "id": "c", "messages": [{"role": "bot", "content": "x"}]},
        ),
        3,
        "messages[0].role",
        "unknown role 'bot' (expected one of system, user, assistant)",
    ),
    (
        "unknown rating",
        load_preferences,
        "d.jsonl",
        lines({**PAIRS[0], "rating": "much_better"}),
        1,
        "rating",
        "unknown rating 'much_better' (expected one of significantly_better, better,",
    ),
    (
        "unknown category",
        load_prompts,
        "d.jsonl",
        lines({**PROMPTS[0], "category": "fun"}),
        1,
        "category",
        "unknown category 'fun'",
    ),
    (
        "unknown field",
        load_preferences,
        "d.jsonl",
        lines(PAIRS[0], {**PAIRS[1], "raitng": "better"}),
        2,
        "raitng",
        "unknown field",
    ),
    (
        "empty chosen",
        load_preferences,
        "d.jsonl",
        lines(PAIRS[0], {**PAIRS[1], "chosen": "  "}),
        2,
        "chosen",
        "empty answer",
    ),
    (
        "same answers",
        load_preferences,
        "d.jsonl",
        lines({**PAIRS[0], "rejected": "Hello!"}),
        1,
        "rejected",
        "same answer",
    ),
    (
        "prompt not ending with user",
        load_preferences,
        "d.jsonl",
        lines({**PAIRS[0], "prompt": [user("a"), assistant("b")]}),
        1,
        "prompt[1].role",
        "must end with a user message",
    ),
    (
        "non-UTF-8 bytes",
        load_sft,
        "d.jsonl",
        lines(SFT[0], b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'),
        2,
        None,
        "not valid UTF-8",
    ),
    (
        "duplicate ids",
        load_prompts,
        "d.jsonl",
        lines(PROMPTS[0], PROMPTS[1], {**PROMPTS[1], "id": "a"}),
        3,
        "id",
        "duplicate id 'a' (first at line 1)",
    ),
    (
        "JSON not an object",
        load_sft,
        "d.jsonl",
        lines(SFT[0], [1, 2]),
        2,
        None,
        "expected a JSON object, got list",
    ),
    (
        "JSON list element not an object",
        load_sft,
        "d.json",
        b'[\n  {"messages": []},\n  "text"\n]\n',
        3,
        None,
        "expected a JSON object, got str",
    ),
    (
        "JSON list element bad field",
        load_sft,
        "d.json",
        b'[\n  {"messages": []},\n\n  {"messages": [{"role": "user", "content": null}]}\n]',
        4,
        "messages[0].content",
        "expected a string, got null",
    ),
    (
        "malformed JSON list",
        load_sft,
        "d.json",
        b'[\n  {"messages": []},\n  {"messages": [}\n]',
        3,
        None,
        "malformed JSON",
    ),
    (
        "CSV bad rating",
        load_preferences,
        "d.csv",
        b'prompt,chosen,rejected,rating\nHi,a,b,better\n"multi\nline",a,b,huge\n',
        3,
        "rating",
        "unknown rating 'huge'",
    ),
    (
        "CSV empty cell",
        load_preferences,
        "d.csv",
        b"prompt,chosen,rejected\nHi,a,b\nHi,,b\n",
        3,
        "chosen",
        "no value (null, or an empty CSV cell)",
    ),
    (
        "plain SFT without answer",
        load_sft,
        "d.jsonl",
        lines({"prompt": "a", "completion": "b"}, {"prompt": "a"}),
        2,
        "completion",
        "missing field",
    ),
    (
        "HH transcript prompts differ",
        load_preferences,
        "d.jsonl",
        lines(
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"}
        ),
        1,
        "rejected",
        "differ before",
    ),
    (
        "HH transcript ends with human",
        load_preferences,
        "d.jsonl",
        lines(
            {
                "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c",
                "rejected": "\n\nHuman: a\n\nAssistant: c",
            }
        ),
        1,
        "chosen",
        "does not end with an 'Assistant:' turn",
    ),
    (
        "PKU bad response id",
        load_preferences,
        "d.jsonl",
        lines(
            {
                "prompt": "p",
                "response_0": "a",
                "response_1": "b",
                "better_response_id": 2,
                "safer_response_id": 0,
                "is_response_0_safe": True,
                "is_response_1_safe": True,
            }
        ),
        1,
        "better_response_id",
        "expected 0 or 1",
    ),
    (
        "scores reversed",
        load_preferences,
        "d.jsonl",
        lines(
            {"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 3, "score_rejected": 8}
        ),
        1,
        "score_chosen",
        "below score_rejected",
    ),
    (
        "score not a number",
        load_preferences,
        "d.jsonl",
        lines(
            {
                "prompt": "p",
                "chosen": "a",
                "rejected": "b",
                "score_chosen": "high",
                "score_rejected": 8,
            }
        ),
        1,
        "score_chosen",
        "expected a number",
    ),
]


@pytest.mark.parametrize(
    ("loader", "name", "content", "line", "field", "words"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_names_file_line_and_field(tmp_path, loader, name, content, line, field, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        loader(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line {line}"), message
    assert (caught.value.line, caught.value.field) == (line, field)
    if field is not None:
        assert f"field '{field}'" in message
    assert words in message


def test_parquet_errors_name_the_row(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [PAIRS[0], {**PAIRS[1], "rating": "best"}])
    with pytest.raises(
        DataError, match=r"d\.parquet, row 2, field 'rating': unknown rating 'best'"
    ):
        load_preferences(path)


def test_example_message_format(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(lines(*([PAIRS[0]] * 6), {**PAIRS[0], "rating": "much_better"}))
    with pytest.raises(DataError) as caught:
        load_preferences(path)
    assert str(caught.value) == (
        f"{path}, line 7, field 'rating': unknown rating 'much_better' "
        "(expected one of significantly_better, better, slightly_better, negligibly_better)"
    )


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("no-such-dataset", "not a hub dataset name"),
        ("missing/file.jsonl", "no such file"),
        ("./x/y", "no such file"),
    ],
)
def test_missing_local_source_fails_at_once_without_the_hub(source, words):
    with pytest.raises(DataError, match=words):
        load_records(source)


def test_file_level_errors(tmp_path):
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type"):
        load_records(tmp_path / "d.txt")
    (tmp_path / "one_line.json").write_text('{"messages": []}\n')
    assert load_records(tmp_path / "one_line.json")[0][1] == {"messages": []}
    (tmp_path / "one.json").write_text('{\n  "messages": []\n}')
    with pytest.raises(DataError, match="expected a JSON list of objects"):
        load_records(tmp_path / "one.json")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        load_sft(tmp_path / "empty.jsonl")
    write_jsonl(tmp_path / "odd.jsonl", [{"question": "x"}])
    with pytest.raises(
        DataError,
        match=r"odd\.jsonl, line 1: cannot tell the format .*\(question\); name an adapter",
    ):
        load_preferences(tmp_path / "odd.jsonl")
    with pytest.raises(ConfigError, match="unknown data adapter"):
        load_preferences(tmp_path / "odd.jsonl", adapter="nope")
    with pytest.raises(ConfigError, match="does not make SFT examples"):
        load_sft(tmp_path / "odd.jsonl", adapter="pku-saferlhf")
    with pytest.raises(ConfigError, match="default_rating"):
        load_preferences(tmp_path / "odd.jsonl", default_rating="great")


# ---------------------------------------------------------------- 3. skip, count, report; SFT problems; long prompts
def test_on_bad_skip_counts_and_logs(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        lines(PAIRS[0], {**PAIRS[1], "chosen": ""}, PAIRS[1], {**PAIRS[1], "rating": "x"})
    )
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger="core.data"):
        rows = load_preferences(path, on_bad="skip", report=report)
    assert rows == PAIRS
    assert (report.n_records, report.n_loaded, report.n_skipped) == (4, 2, 2)
    assert report.first_skipped == f"{path}, line 2, field 'chosen': empty answer"
    assert "2 bad records left out" in caplog.text


def test_sft_loader_keeps_unanswered_conversations_unless_asked(tmp_path):
    rows = [SFT[0], {"messages": [user("a")]}, {"messages": [user("a"), assistant(" ")]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_sft(path) == rows
    with pytest.raises(DataError, match=r"line 2, field 'messages': no assistant turn"):
        load_sft(path, require_answer=True)
    report = LoadReport()
    assert load_sft(path, require_answer=True, on_bad="skip", report=report) == [SFT[0]]
    assert report.n_skipped == 2


@pytest.mark.parametrize(
    ("example", "problem"),
    [
        (SFT[0], None),
        ({"messages": [user("a")]}, "field 'messages': no assistant turn (nothing to learn)"),
        (
            {"messages": [user("a"), assistant("")]},
            "field 'messages[1].content': empty assistant answer",
        ),
        (
            {"messages": [user("a"), assistant("b"), user("c")]},
            "field 'messages[2]': ends with a user turn that has no answer",
        ),
        (
            {"messages": [{"role": "robot", "content": "b"}]},
            "field 'messages[0].role': unknown role 'robot' (expected one of system, user, assistant)",
        ),
        ({"messages": "hi"}, "field 'messages': expected a list, got string"),
        (["not", "a", "dict"], "expected a JSON object, got list"),
    ],
)
def test_check_sft_example(example, problem):
    assert check_sft_example(example) == problem


def test_validate_functions_raise_located_errors():
    assert validate_sft_example(SFT[0]) == SFT[0]
    assert validate_prompt(PROMPTS[1]) == PROMPTS[1]
    assert validate_preference_pair(PAIRS[1]) == PAIRS[1]
    assert validate_prompt(without(PROMPTS[0], "kind"))["kind"] is None
    with pytest.raises(DataError, match=r"^f\.jsonl, line 3, field 'messages': no assistant turn"):
        validate_sft_example({"messages": [user("a")]}, path="f.jsonl", line=3)
    with pytest.raises(DataError, match=r"field 'id': empty id"):
        validate_prompt({**PROMPTS[0], "id": " "})
    with pytest.raises(
        DataError, match=r"field 'messages\[0\].role': must end with a user message"
    ):
        validate_prompt({**PROMPTS[0], "messages": [assistant("x")]})
    with pytest.raises(DataError, match=r"field 'id': expected a string, got integer"):
        validate_prompt({**PROMPTS[0], "id": 3})


def test_long_prompts_are_left_out_and_counted(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "short"}, {"prompt": "x" * 50}, {"prompt": "y" * 60}]
    )
    report = LoadReport()
    kept = load_prompts(path, max_prompt_chars=10, report=report)
    assert [p["id"] for p in kept] == ["p0"]
    assert report.n_too_long == 2
    assert report.first_too_long == f"{path}:2: prompt of 50 characters > max_prompt_chars 10"


# ---------------------------------------------------------------- 4. adapters on hand-made records
def test_hh_transcript_to_messages():
    text = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: Sure?\n\nAssistant: Yes.\n\nAssistant: Quite."
    assert hh_transcript_to_messages(text) == [
        user("What is 2+2?"),
        assistant("4."),
        user("Sure?"),
        assistant("Yes.\n\nQuite."),
    ]
    assert hh_transcript_to_messages("Human: hi\n\nAssistant:") == [user("hi"), assistant("")]
    with pytest.raises(ValueError, match="before the first"):
        hh_transcript_to_messages("preamble\n\nHuman: hi")


def test_hh_rlhf_adapter_for_each_kind(tmp_path):
    record = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Steal a car?\n\nAssistant: I can't help with that.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Steal a car?\n\nAssistant: Break the window.",
    }
    path = write_jsonl(tmp_path / "harmless-base.jsonl", [record])
    assert detect_adapter("preferences", record) == "hh-rlhf"
    [pair] = load_preferences(path, default_rating="slightly_better")
    assert pair == {
        "prompt": [user("Hi"), assistant("Hello"), user("Steal a car?")],
        "chosen": "I can't help with that.",
        "rejected": "Break the window.",
        "rating": "slightly_better",
        "category": "safety",
        "chosen_safe": None,
        "rejected_safe": None,
        "source": "hh-rlhf",
    }
    assert load_preferences(path, category="helpfulness")[0]["category"] == "helpfulness"
    assert (
        load_preferences(write_jsonl(tmp_path / "helpful.jsonl", [record]))[0]["category"]
        == "helpfulness"
    )
    assert load_sft(path)[0]["messages"][-1] == assistant("I can't help with that.")
    assert load_prompts(path)[0] == {
        "messages": pair["prompt"],
        "category": "safety",
        "id": "p0",
        "kind": None,
    }


PKU_ROW = {
    "prompt": "How to make a weapon?",
    "response_0": "Here is how...",
    "response_1": "I can't help, but ...",
    "better_response_id": 0,
    "safer_response_id": 1,
    "is_response_0_safe": False,
    "is_response_1_safe": True,
    "prompt_source": "x",
    "response_0_sha256": "ignored",
}


def test_pku_saferlhf_gives_a_helpfulness_and_a_safety_pair(tmp_path):
    path = write_jsonl(tmp_path / "pku.jsonl", [PKU_ROW])
    helpful, safe = load_preferences(path)
    assert (
        helpful["category"],
        helpful["chosen"],
        helpful["chosen_safe"],
        helpful["rejected_safe"],
    ) == ("helpfulness", "Here is how...", False, True)
    assert (safe["category"], safe["chosen"], safe["chosen_safe"], safe["rejected_safe"]) == (
        "safety",
        "I can't help, but ...",
        True,
        False,
    )
    assert {helpful["source"], helpful["rating"], safe["rating"]} == {"pku-saferlhf", "better"}
    assert [p["category"] for p in load_preferences(path, category="safety")] == ["safety"]
    assert load_prompts(path)[0]["category"] == "safety"  # one response is unsafe
    both_safe = write_csv(tmp_path / "pku.csv", [{**PKU_ROW, "is_response_0_safe": True}])
    assert load_prompts(both_safe)[0]["category"] == "helpfulness"
    assert len(load_preferences(both_safe)) == 2  # CSV: "0"/"1" ids and true/false labels are read


@pytest.mark.parametrize(
    ("gap", "rating"),
    [
        (9, "significantly_better"),
        (3, "significantly_better"),
        (2.5, "better"),
        (1, "slightly_better"),
        (0.5, "negligibly_better"),
        (0, "negligibly_better"),
    ],
)
def test_rating_from_score_gap(gap, rating):
    assert rating_from_score_gap(gap) == rating


def test_ultrafeedback_adapter(tmp_path):
    rows = [
        {
            "prompt": "Write a haiku",
            "prompt_id": "u1",
            "chosen": [user("Write a haiku"), assistant("Old pond...")],
            "rejected": [user("Write a haiku"), assistant("No.")],
            "score_chosen": 9.0,
            "score_rejected": 2.0,
        },
        {
            "prompt": "Add 1+1",
            "chosen": "2",
            "rejected": "3",
            "score_chosen": 7,
            "score_rejected": 5.5,
        },
    ]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    first, second = load_preferences(path)
    assert (first["prompt"], first["chosen"], first["rejected"], first["rating"]) == (
        [user("Write a haiku")],
        "Old pond...",
        "No.",
        "significantly_better",
    )
    assert (second["rating"], second["source"]) == ("slightly_better", "ultrafeedback")
    assert [p["rating"] for p in load_preferences(path, rating_thresholds=(8, 6, 1.5))] == [
        "better",
        "slightly_better",
    ]
    assert [p["id"] for p in load_prompts(path)] == ["u1", "p1"]
    with pytest.raises(ConfigError, match="rating_thresholds"):
        load_preferences(path, rating_thresholds=(1, 2, 3))


def test_registry_and_detection():
    assert {"canonical", "plain", "hh-rlhf", "pku-saferlhf", "ultrafeedback"} <= set(ADAPTERS)
    assert detect_adapter("preferences", PAIRS[0]) == "canonical"
    assert detect_adapter("preferences", PKU_ROW) == "pku-saferlhf"
    assert detect_adapter("preferences", {"prompt": "p", "chosen": "a", "rejected": "b"}) == "plain"
    assert detect_adapter("sft", {"prompt": "p", "response": "a"}) == "plain"
    # extra keys: not the strict schema, but the lenient reader of the same fields
    assert detect_adapter("sft", {"messages": [], "prompt_id": "x"}) == "plain"
    assert detect_adapter("prompts", {"text": "x"}) is None


# ---------------------------------------------------------------- 5. the real HH-RLHF file (shared, never copied into the repo)
@pytest.mark.skipif(not HH_HARMLESS.is_file(), reason="shared HH-RLHF harmless data not present")
def test_hh_rlhf_harmless_first_50_rows(tmp_path):
    with gzip.open(HH_HARMLESS, "rt", encoding="utf-8") as handle:
        head = [next(handle) for _ in range(50)]
    sample = tmp_path / "hh-rlhf-harmless-head.jsonl.gz"
    with gzip.open(sample, "wt", encoding="utf-8") as handle:
        handle.writelines(head)
    pairs = load_preferences(sample)
    assert len(pairs) == 50
    for pair in pairs:
        assert (
            pair["prompt"][-1]["role"] == "user"
            and pair["chosen"].strip()
            and pair["chosen"] != pair["rejected"]
        )
        assert [m["role"] for m in pair["prompt"]] == ["user", "assistant"] * (
            len(pair["prompt"]) // 2
        ) + ["user"]
        assert (pair["category"], pair["source"], pair["rating"]) == ("safety", "hh-rlhf", "better")
    assert len(load_prompts(sample)) == 50
