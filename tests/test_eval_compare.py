"""`rlhf eval compare`: the paired gold difference between two evaluations of the same prompts."""

import json

import pytest

from core.errors import DataError
from pipelines.evaluate import compare_evals, main
from toyworld import judges

PERU = [{"role": "user", "content": "What is the capital of Peru?"}]
CHILE = [{"role": "user", "content": "What is the capital of Chile?"}]


def _write(folder, responses):
    folder.mkdir()
    rows = [{"id": "peru", "kind": "capital", "prompt": PERU, "response": responses[0]},
            {"id": "chile", "kind": "capital", "prompt": CHILE, "response": responses[1]}]
    (folder / "toyworld_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_paired_difference_by_hand(tmp_path, capsys):
    before = _write(tmp_path / "before", ["Lima", "Lima"])  # right for Peru, wrong for Chile
    after = _write(tmp_path / "after", ["Lima", "Santiago"])  # right for both
    wrong = judges.combined(CHILE, "Lima", "helpfulness")
    assert judges.combined(PERU, "Lima", "helpfulness") == pytest.approx(1.0) and wrong < 0.2

    result = compare_evals(str(after), str(before / "toyworld_samples.jsonl"))  # a folder or its file
    assert result["n"] == 2 and (result["wins"], result["losses"]) == (1, 0)
    assert result["diff"] == pytest.approx((0.0 + (1.0 - wrong)) / 2)
    assert result["after"] == pytest.approx(1.0) and result["before"] == pytest.approx((1.0 + wrong) / 2)

    assert main(["compare", str(after), str(before)]) == 0
    assert "(1 wins, 0 losses)" in capsys.readouterr().out


def test_different_prompts_or_a_missing_file_are_clear_errors(tmp_path, capsys):
    first = _write(tmp_path / "a", ["Lima", "Santiago"])
    other = tmp_path / "b"
    other.mkdir()
    (other / "toyworld_samples.jsonl").write_text(json.dumps({"id": "peru", "prompt": PERU, "response": "Lima"}) + "\n")
    with pytest.raises(DataError, match="different prompts.*chile"):
        compare_evals(str(first), str(other))
    assert main(["compare", str(first), str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_an_rlhf_eval_toyworld_result_compares_too(tmp_path):
    """`rlhf eval toyworld --out DIR` writes eval_toyworld.json with the last user turn as
    the prompt; compare reads it like the pipeline's toyworld_samples.jsonl."""
    after = _write(tmp_path / "after", ["Lima", "Santiago"])
    single = tmp_path / "single"
    single.mkdir()
    samples = [{"id": "peru", "prompt": PERU[0]["content"], "response": "Lima"},
               {"id": "chile", "prompt": CHILE[0]["content"], "response": "Santiago"}]
    (single / "eval_toyworld.json").write_text(json.dumps({"model": "m", "metrics": {}, "samples": samples}))
    result = compare_evals(str(after), str(single))
    assert result["diff"] == pytest.approx(0.0) and (result["wins"], result["losses"]) == (0, 0)
    (single / "eval_toyworld.json").write_text(json.dumps({"model": "m"}))
    with pytest.raises(DataError, match="no 'samples' list"):
        compare_evals(str(after), str(single))


@pytest.mark.parametrize("content, message", [
    ("", "no answers"),
    (json.dumps({"id": "peru", "prompt": PERU}) + "\n", "answer 1 lacks"),
    ((json.dumps({"id": "peru", "prompt": PERU, "response": "Lima"}) + "\n") * 2, "answer 2 repeats prompt id 'peru'"),
])
def test_bad_answer_files_name_the_file(tmp_path, content, message):
    good = _write(tmp_path / "good", ["Lima", "Santiago"])
    bad = tmp_path / "bad" / "toyworld_samples.jsonl"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        compare_evals(str(good), str(bad.parent))
    assert str(bad) in str(error.value)


def test_a_json_file_that_is_not_an_eval_result_is_a_clear_error(tmp_path):
    good = _write(tmp_path / "good", ["Lima", "Santiago"])
    for name, text in [("list.json", "[1, 2]"), ("broken.json", "{not json")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=name):
            compare_evals(str(good), str(tmp_path / name))
