"""GAtt evaluation: adherence per turn by hand, the instruction given once, the report and plot."""

import json

import pytest

from core.errors import DataError
from core.generation import SamplingConfig
from gatt.dialogues import Dialogue, dialogue_from_record, prompt_messages
from gatt.evaluate import (
    adherence_by_kind,
    adherence_by_turn,
    build_report,
    evaluate_models,
    make_cases,
    mean_from_turn,
    report_turns,
    table_markdown,
)
from gatt.instructions import make_instruction


def test_adherence_by_turn_by_hand():
    results = [
        {"kind": "prefix", "adhered": [True, True, False, False]},
        {"kind": "prefix", "adhered": [True, False, False, True]},
        {"kind": "upper", "adhered": [False, True, True, False]},
        {"kind": "upper", "adhered": [True, True]},  # a shorter dialogue counts only where it has turns
    ]
    assert adherence_by_turn(results) == {1: 0.75, 2: 0.75, 3: pytest.approx(1 / 3), 4: pytest.approx(1 / 3)}
    assert adherence_by_kind(results) == {"prefix": {1: 1.0, 2: 0.5, 3: 0.0, 4: 0.5}, "upper": {1: 0.5, 2: 1.0, 3: 1.0, 4: 0.0}}
    assert adherence_by_turn([]) == {}
    assert mean_from_turn({1: 1.0, 2: 0.5, 4: 0.2, 6: 0.4}, 4) == pytest.approx(0.3)


def test_report_turns_follow_the_paper():
    assert report_turns(6) == [1, 2, 4, 6]
    assert report_turns(5) == [1, 2, 4, 5]
    assert report_turns(1) == [1]
    assert report_turns(20)[:5] == [1, 2, 4, 6, 8]


def test_instruction_is_given_once_or_every_turn():
    dialogue = Dialogue("d", ("Q1?", "Q2?", "Q3?"), system="Be brief.")
    once = prompt_messages(dialogue, ["A1", "A2"], "Start: Ahoy", "first_user", every_turn=False)
    assert [m["content"] for m in once] == ["Be brief.", "Q1? Start: Ahoy", "A1", "Q2?", "A2", "Q3?"]
    system = prompt_messages(dialogue, ["A1"], "Start: Ahoy", "system", every_turn=False)
    assert [m["content"] for m in system] == ["Start: Ahoy\nBe brief.", "Q1?", "A1", "Q2?"]
    every = prompt_messages(dialogue, ["A1"], "Start: Ahoy", "first_user", every_turn=True)
    assert [m["content"] for m in every if m["role"] == "user"] == ["Q1? Start: Ahoy", "Q2? Start: Ahoy"]


def test_dialogue_records_are_checked():
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]}
    assert dialogue_from_record(record, "x").users == ("Hi", "Bye")
    with pytest.raises(DataError, match=r"line 3.*messages\[0\]"):
        dialogue_from_record({"messages": [{"role": "bot", "content": "x"}]}, "x", "data.jsonl", 3)


def test_table_and_gain_layout():
    summaries = {
        "before": {"by_turn": {1: 1.0, 2: 0.5, 3: 0.2, 4: 0.0}},
        "after": {"by_turn": {1: 1.0, 2: 1.0, 3: 0.9, 4: 0.75}},
    }
    cases = make_cases([Dialogue("d", ("q",))], [make_instruction("upper")], seed=0)
    report = build_report(summaries, "system", cases)
    assert report["turns"] == [1, 2, 4]
    assert report["gain"] == {1: 0.0, 2: 0.5, 4: 0.75}
    assert table_markdown(report).splitlines()[-1] == "| after: once, with GAtt | 100% | 100% | 75% |"
    # the same table from eval.json, whose turn keys are strings
    assert table_markdown(json.loads(json.dumps(report))).splitlines()[-2] == "| before: once, without GAtt | 100% | 50% | 0% |"


def test_evaluate_writes_json_plot_and_dialogues(tmp_path, tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    dialogues = [Dialogue(f"d{i}", ("What is 2 + 2?", "What is the capital of Peru?", "What is 3 + 3?")) for i in range(3)]
    cases = make_cases(dialogues, [make_instruction("max_words", 8), make_instruction("upper")], seed=0)
    sampling = SamplingConfig(max_new_tokens=4, temperature=0.0, batch_size=8)
    report = evaluate_models({"model": ("tiny", model, tokenizer)}, cases, "first_user", sampling, tmp_path, progress=False)
    assert report["turns"] == [1, 2, 3]
    assert set(json.loads((tmp_path / "eval.json").read_text())["table"]["model"]) == {"1", "2", "3"}
    assert (tmp_path / "adherence.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "eval_dialogues_model.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(row["responses"]) == len(row["adhered"]) == 3 for row in rows)
    assert all(row["adhered"] == [make_instruction("max_words", 8).check(r) if row["kind"] == "max_words" else make_instruction("upper").check(r) for r in row["responses"]] for row in rows)
