"""Bad SFT examples are counted with their first offending line, or stop the run; never silently dropped."""

import json

import pytest

from core.errors import DataError
from sft.data import load_conversations, prepare_examples

GOOD = {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]}
NO_ASSISTANT = {"messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello?"}]}
EMPTY_ANSWER = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}
TOO_LONG = {"messages": [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " ".join(["one"] * 80)}]}


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def mixed(tmp_path):
    rows = [GOOD, NO_ASSISTANT, GOOD, EMPTY_ANSWER, TOO_LONG, NO_ASSISTANT, TOO_LONG, GOOD]
    return write(tmp_path / "sft.jsonl", rows)


def test_bad_examples_are_counted_with_first_line(mixed, smollm_tokenizer, caplog):
    conversations = load_conversations(str(mixed))
    with caplog.at_level("WARNING", logger="sft"):
        examples, report = prepare_examples(conversations, smollm_tokenizer, max_length=48, source=str(mixed))
    assert len(examples) == report.n_kept == 3
    assert report.n_rows == 8 and report.n_skipped == 5
    assert (report.bad["no_assistant_turn"].count, report.bad["no_assistant_turn"].first) == (2, f"{mixed}:2")
    assert (report.bad["empty_answer"].count, report.bad["empty_answer"].first) == (1, f"{mixed}:4")
    assert (report.bad["too_long"].count, report.bad["too_long"].first) == (2, f"{mixed}:5")
    assert "> max_length 48" in report.bad["too_long"].detail
    metrics = report.metrics()
    assert metrics["data/bad_no_assistant_turn"] == 2 and metrics["data/bad_too_long"] == 2 and metrics["data/n_skipped"] == 5
    assert f"{mixed}:2" in caplog.text and "too_long: 2" in caplog.text


def test_on_bad_example_error_names_the_line(mixed, smollm_tokenizer):
    with pytest.raises(DataError, match=r"sft.jsonl:2: no assistant turn"):
        prepare_examples(load_conversations(str(mixed)), smollm_tokenizer, max_length=48, on_bad_example="error")


def test_malformed_rows_are_errors_with_file_line_field(tmp_path):
    bad_role = {"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]}
    path = write(tmp_path / "a.jsonl", [GOOD, bad_role])
    with pytest.raises(DataError, match=r"a.jsonl, line 2, field 'messages\[1\].role'"):
        load_conversations(str(path))
    path = write(tmp_path / "b.jsonl", [{"text": "hi"}])
    with pytest.raises(DataError, match=r"b.jsonl, line 1, field 'messages'"):
        load_conversations(str(path))


def test_all_bad_is_an_error(tmp_path, smollm_tokenizer):
    path = write(tmp_path / "c.jsonl", [NO_ASSISTANT])
    with pytest.raises(DataError, match="no usable SFT example"):
        prepare_examples(load_conversations(str(path)), smollm_tokenizer, max_length=48)


def test_learn_last_ignores_empty_earlier_answers(smollm_tokenizer):
    from sft.data import Conversation

    messages = [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": ""},
        {"role": "user", "content": "b"}, {"role": "assistant", "content": "B"},
    ]
    _, report = prepare_examples([Conversation(messages, "x")], smollm_tokenizer, max_length=64, learn="last")
    assert report.n_kept == 1
    with pytest.raises(DataError, match="empty"):
        prepare_examples([Conversation(messages, "x")], smollm_tokenizer, max_length=64, learn="all", on_bad_example="error")


def test_toyworld_source_builds_train_demonstrations():
    conversations = load_conversations("toyworld", toyworld_n=5, toyworld_seed=0)
    assert len(conversations) == 5 and all(c.messages[-1]["role"] == "assistant" for c in conversations)
    assert conversations[0].ref == "toyworld[0]"
