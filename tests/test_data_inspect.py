"""`rlhf data inspect FILE`: kind, format, counts, length quantiles, first bad rows; exit 2 when unreadable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.data.inspect import format_summary, length_table, quantiles, summarize

REPO = Path(__file__).resolve().parents[1]
BYOD = REPO / "tests" / "data" / "byod"

pytestmark = pytest.mark.usefixtures("library_log_handlers_on_real_stderr")


def inspect(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- pure helpers, by hand
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3, 4], [2, 4, 4]),  # p50: 2 of 4 at or below 2; p90 and p99: the largest
        ([5], [5, 5, 5]),
        (list(range(1, 101)), [50, 90, 99]),
        ([10, 1, 7], [7, 10, 10]),  # unsorted input
        ([], []),
    ],
)
def test_quantiles_nearest_rank(values, expected):
    assert quantiles(values) == expected


def test_length_table_measures_each_part():
    rows = [
        {"prompt": [{"role": "user", "content": "ab"}], "chosen": "abcd", "rejected": "a"},
        {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "abc"}], "chosen": "ab", "rejected": "abcdef"},
    ]
    table = length_table("preferences", rows, len)
    assert table["prompt"] == {"n": 2, "p50": 2, "p90": 5, "p99": 5, "max": 5}  # "s\nabc" is 5 characters
    assert (table["chosen"]["p50"], table["rejected"]["max"]) == (2, 6)
    sft = length_table("sft", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]}], len)
    assert (sft["prompt"]["max"], sft["answer"]["max"]) == (1, 6)


# ---------------------------------------------------------------- every fixture through `rlhf data inspect`
FIXTURES = [
    # file, kind, adapter, loaded, line with the counts by category (None: SFT has none)
    ("sft_messages.jsonl", "sft", "canonical", "40 SFT examples", None),
    ("sft_prompt_completion.jsonl", "sft", "plain", "40 SFT examples", None),
    ("dialogues.jsonl", "sft", "plain", "24 SFT examples", None),
    ("prefs_hh.jsonl", "preferences", "hh-rlhf", "40 preference pairs", "category  helpfulness 40"),
    ("prefs_pku.jsonl", "preferences", "pku-saferlhf", "60 preference pairs", "category  helpfulness 30, safety 30"),
    ("prefs_ultrafeedback.jsonl", "preferences", "ultrafeedback", "30 preference pairs", "category  helpfulness 30"),
    ("prefs_implicit.jsonl", "preferences", "implicit-prompt", "30 preference pairs", "category  helpfulness 30"),
    ("prefs_heldout.jsonl", "preferences", "plain", "40 preference pairs", "category  helpfulness 24, safety 16"),
    ("pairs_v2.jsonl", "preferences", "plain", "30 preference pairs", "category  helpfulness 20, safety 10"),
    ("prompts_train.jsonl", "prompts", "canonical", "50 prompts", "category  helpfulness 30, safety 20"),
    ("prompts_heldout.jsonl", "prompts", "canonical", "40 prompts", "category  helpfulness 24, safety 16"),
]


@pytest.mark.parametrize(("name", "kind", "adapter", "loaded", "categories"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_inspect_each_fixture_prints_format_and_counts(capsys, name, kind, adapter, loaded, categories):
    code, out, err = inspect(capsys, BYOD / name)
    assert code == 0, err
    assert f"kind      {kind} (detected" in out
    assert f"format    {adapter} (detected" in out
    assert f"{loaded} loaded, 0 bad rows left out" in out
    if categories:
        assert categories in out
    else:
        assert "category" not in out
    assert "lengths   in characters" in out and "bad rows  none" in out
    assert ("rating    " in out) == (kind == "preferences")


def test_ratings_counted_from_score_gaps(capsys):
    code, out, _ = inspect(capsys, BYOD / "prefs_ultrafeedback.jsonl")
    # gaps 7, 2.5, 1.5, 0.25, 6 repeat over 30 rows: 12 / 6 / 6 / 6 with the default thresholds
    assert code == 0 and "rating    significantly_better 12, better 6, slightly_better 6, negligibly_better 6" in out


def test_category_limit_adapter_and_kind_options(capsys):
    code, out, _ = inspect(capsys, BYOD / "prefs_hh.jsonl", "--category", "safety", "--limit", "5")
    assert code == 0 and "category  safety 5" in out
    assert "40 records, first 5 read (--limit 5); 5 preference pairs loaded" in out
    code, out, _ = inspect(capsys, BYOD / "prefs_hh.jsonl", "--kind", "sft", "--adapter", "hh-rlhf")
    assert code == 0 and "kind      sft (as given)" in out and "format    hh-rlhf (as given)" in out
    assert "40 SFT examples loaded" in out
    code, out, _ = inspect(capsys, BYOD / "prefs_implicit.jsonl", "--kind", "prompts")
    assert code == 0 and "30 prompts loaded" in out


def test_tokenizer_lengths_are_tokens_not_characters(capsys):
    summary_chars = summarize(str(BYOD / "prefs_heldout.jsonl"))
    code, out, err = inspect(capsys, BYOD / "prefs_heldout.jsonl", "--tokenizer", "embedded:tiny-llama", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["length_unit"] == "tokens of embedded:tiny-llama"
    tokens, chars = summary["lengths"]["chosen"], summary_chars["lengths"]["chosen"]
    assert 0 < tokens["max"] < chars["max"] and tokens["p50"] <= tokens["p90"] <= tokens["p99"] <= tokens["max"]
    assert summary["by_rating"] == {"significantly_better": 14, "better": 14, "slightly_better": 6, "negligibly_better": 6}


def test_bad_rows_are_listed_with_file_and_line(tmp_path, capsys):
    pair = {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join([json.dumps(pair), json.dumps(pair), json.dumps({**pair, "chosen": ""}),
                               '{"prompt": ', json.dumps({**pair, "rating": "great"})]) + "\n")
    code, out, err = inspect(capsys, path)
    assert code == 0, err
    assert "2 preference pairs loaded, 3 bad rows left out" in out
    assert "bad rows  3 (the first 3):" in out
    assert f"{path}, line 3, field 'chosen': empty answer" in out
    assert f"{path}, line 4: malformed JSON" in out
    assert f"{path}, line 5, field 'rating': unknown rating 'great'" in out


@pytest.mark.parametrize(
    ("content", "args", "words"),
    [
        (None, [], ("missing.jsonl", "no such file")),
        ('{"question": "x"}\n', [], ("line 1", "cannot tell whether", "(question)", "--kind")),
        ('{"question": "x"}\n', ["--kind", "preferences"], ("line 1", "cannot tell the format", "`--adapter`")),
        ('{"prompt": "Hi", "chosen": "", "rejected": "x"}\n', [], ("no usable preference pairs", "line 1", "empty answer")),
        ('[{"prompt": "Hi",\n', [], ("malformed JSON",)),
        ("\n", [], ("no readable records",)),
    ],
    ids=["missing", "unknown-kind", "unknown-format", "all-bad", "broken-json-list", "empty"],
)
def test_unreadable_sources_exit_2_with_one_line(tmp_path, capsys, content, args, words):
    path = tmp_path / ("data.json" if content and content.startswith("[") else "data.jsonl")
    if content is None:
        path = tmp_path / "missing.jsonl"
    else:
        path.write_text(content)
    code, out, err = inspect(capsys, path, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]


def test_json_output_and_format_agree():
    summary = summarize(str(BYOD / "prompts_heldout.jsonl"))
    assert (summary["kind"], summary["adapter"], summary["n_loaded"], summary["n_bad"]) == ("prompts", "canonical", 40, 0)
    assert summary["by_category"] == {"helpfulness": 24, "safety": 16}
    text = format_summary(summary)
    assert "40 prompts loaded" in text and "rating" not in text


def test_runs_as_python_module():
    result = subprocess.run(
        [sys.executable, "-m", "core.data.inspect", str(BYOD / "prefs_pku.jsonl"), "--category", "safety"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "format    pku-saferlhf (detected" in result.stdout and "category  safety 30" in result.stdout
