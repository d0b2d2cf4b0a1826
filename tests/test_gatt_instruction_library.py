"""A user's GAtt instruction library (JSONL): every built-in checker on hand-written answers,
bad lines named by file and line, combinations and short forms, toyworld as one such
library, and `gatt run` on a user's files with toyworld blocked from being imported."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ConfigError, DataError
from gatt.checks import CHECK_TYPES, Check, detect_language, is_language
from gatt.config import GattConfig
from gatt.instructions import (
    Instruction,
    apply,
    instruction_text,
    load_library,
    parse_record,
    repairable,
    select_instructions,
)

ROOT = Path(__file__).resolve().parents[1]
BYOD = ROOT / "tests" / "data" / "byod"
LIBRARY = BYOD / "instructions.jsonl"


def single(spec: dict | None, kind: str = "test", text: str = "An instruction.") -> Instruction:
    return parse_record({"text": text, "kind": kind, **({"check": spec} if spec else {})}, "lib.jsonl", 1)[1]


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- each checker by hand
@pytest.mark.parametrize("spec, good, bad", [
    ({"type": "starts_with", "value": "Answer:"}, ["Answer: Lima.", "  answer: lima"], ["The answer: Lima.", "Lima. Answer:"]),
    ({"type": "starts_with", "value": "Answer:", "case_sensitive": True}, ["Answer: Lima."], ["answer: Lima."]),
    ({"type": "ends_with", "value": "-- done"}, ["Lima. -- done", "Lima -- done.", "Lima -- DONE!"], ["-- done Lima.", "Lima."]),
    ({"type": "contains", "value": "Napoleon"}, ["Yours, Napoleon.", "Napoleon's plan worked.", "signed NAPOLEON"], ["Paris.", "The Napoleonic wars."]),
    ({"type": "contains", "value": ["chess", "go"]}, ["I play go.", "Chess is fun."], ["I play golf.", "Lima."]),
    ({"type": "contains", "value": "chess", "whole_word": False}, ["Chessboards are square."], ["Lima."]),
    ({"type": "not_contains", "value": ["sorry", "apologize"]}, ["Lima is the capital.", "A sorrowful tale."], ["Sorry, it is Lima.", "I apologize: Lima."]),
    ({"type": "regex", "value": r"(?m)^\s*1[.)]\s"}, ["1. Lima\n2. Quito", "Capitals:\n 1) Lima"], ["Lima and Quito.", "Item 1. Lima"]),
    ({"type": "regex", "value": r"\?\s*$"}, ["Lima. Anything else?"], ["Lima. Anything else? No."]),
    ({"type": "upper"}, ["LIMA, 42!", "ÉTÉ"], ["Lima", "42", ""]),
    ({"type": "max_words", "value": 3}, ["It is Lima.", "Lima"], ["It is Lima, of course.", "", "  "]),
    ({"type": "language", "value": "German"},
     ["Die Hauptstadt von Peru ist Lima.", "Ja, die Hauptstadt von Peru ist Lima.", "Ich spiele gern Schach."],
     ["Ja", "Ja.", "Ja, the capital of Peru is Lima.", "Hallo! The capital of Peru is Lima.", "The answer is four.",
      "La réponse est quatre.", "Hallo Welt"]),
    ({"type": "language", "value": "es"}, ["La respuesta es cuatro.", "Claro, con mucho gusto."], ["Gracias! Two plus two is four.", "Hola amigo"]),
    ({"type": "language", "value": "Italian"}, ["La risposta è quattro.", "Mi piace giocare a scacchi."], ["Ciao! Rome is the capital of Italy."]),
])
def test_builtin_checkers_by_hand(spec, good, bad):
    instruction = single(spec)
    for answer in good:
        assert instruction.check(answer) is True, (spec, answer)
    for answer in bad:
        assert instruction.check(answer) is False, (spec, answer)


def test_language_check_needs_words_and_confidence():
    # "Ja" alone: too few words to say anything; the detector is not even sure it is German
    assert detect_language("Ja")[0] != "de"
    assert not is_language("Ja", "German")
    # one German word in an English sentence: the detector says English
    assert detect_language("Ja, the capital of Peru is Lima.")[0] == "en"
    # thresholds are the check's options
    assert not single({"type": "language", "value": "German", "min_words": 10}).check("Die Hauptstadt von Peru ist Lima.")
    assert not single({"type": "language", "value": "German", "min_confidence": 1.0}).check("Die Hauptstadt von Peru ist Lima.")
    assert detect_language("Die Hauptstadt von Peru ist Lima.") == detect_language("Die Hauptstadt von Peru ist Lima.")  # deterministic


def test_callable_checks_from_a_module_or_a_file_beside_the_library(tmp_path, monkeypatch):
    (tmp_path / "lib_checks_file.py").write_text("def polite(instruction, response):\n    return 'please' in response.lower()\n")
    (tmp_path / "lib_checks_mod.py").write_text(
        "def echoes_kind(instruction, response):\n    return instruction.kind in response\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    library = write_lines(tmp_path / "lib.jsonl", [
        {"text": "Be polite.", "kind": "polite", "check": {"type": "callable", "value": "lib_checks_file.py:polite"}},
        {"text": "Say your kind.", "kind": "kindly", "check": {"type": "callable", "value": "lib_checks_mod:echoes_kind"}},
    ])
    polite, kindly = (ins for _, ins in load_library(library))
    assert polite.check("Lima, please.") is True and polite.check("Lima.") is False
    assert kindly.check("I am kindly.") is True and kindly.check("I am not.") is False  # the callable gets the instruction
    assert Instruction.from_dict(json.loads(json.dumps(polite.to_dict()))).check("please") is True


def test_unchecked_instructions_return_none_and_combine_three_ways():
    unchecked = single(None, kind="persona", text="Talk like a pirate.")
    assert unchecked.check("Arr, Lima.") is None and not unchecked.checked
    library = select_instructions("train", 0, 0, ["persona"], source=str(LIBRARY))
    assert [ins.check_spec for ins in library] == [None]
    from gatt.instructions import combine

    upper = single({"type": "upper"}, kind="upper")
    both = combine([upper, unchecked])
    assert both.check("lima") is False  # a failing part fails the combination
    assert both.check("LIMA") is None  # else an unchecked part leaves it unchecked
    assert combine([upper, single({"type": "max_words", "value": 2})]).check("LIMA") is True


# ---------------------------------------------------------------- bad lines
@pytest.mark.parametrize("line, field, message", [
    ({"text": "x", "kind": "k", "check": {"type": "rhymes"}}, "check.type", "known: starts_with, ends_with, contains"),
    ({"text": "x", "kind": "k", "check": {"type": "regex", "value": "(unclosed"}}, "check.value", "bad regex"),
    ({"text": "x", "kind": "k", "check": {"type": "callable", "value": "no_such_module_gatt:f"}}, "check.value", "cannot use"),
    ({"text": "x", "kind": "k", "check": {"type": "callable", "value": "missing_file.py:f"}}, "check.value", "cannot use"),
    ({"text": "x", "kind": "k", "check": {"type": "callable", "value": "no_colon"}}, "check.value", "module:function"),
    ({"text": "x", "kind": "k", "check": {"type": "max_words", "value": "ten"}}, "check.value", "integer"),
    ({"text": "x", "kind": "k", "check": {"type": "language", "value": "Klingon"}}, "check.value", "unknown language"),
    ({"text": "x", "kind": "k", "check": {"type": "upper", "value": "yes"}}, "check.value", "no value"),
    ({"text": "x", "kind": "k", "check": {"type": "contains", "value": "a", "min_words": 2}}, "check.min_words", "unknown key"),
    ({"text": "x", "kind": "k", "check": {"type": "language", "value": "de", "min_confidence": 2}}, "check.min_confidence", "from 0 to 1"),
    ({"kind": "k"}, "text", "non-empty string"),
    ({"text": "x"}, "kind", "non-empty string"),
    ({"text": "x", "kind": "a+b"}, "kind", "reserved"),
    ({"text": "x", "kind": "k", "split": "test"}, "split", "train, heldout"),
    ({"text": "x", "kind": "k", "shrot": "y"}, "shrot", "unknown key"),
    ({"text": "x", "kind": "k", "repair": {"insert": "y"}}, "repair", "append"),
])
def test_a_bad_line_names_file_line_and_field(tmp_path, line, field, message):
    path = write_lines(tmp_path / "mine.jsonl", [{"text": "fine", "kind": "k"}, line])
    with pytest.raises(DataError) as error:
        load_library(path)
    text = str(error.value)
    assert f"{path}, line 2, field '{field}'" in text and message in text
    assert "\n" not in text


def test_malformed_json_and_duplicate_ids_name_the_line(tmp_path):
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: malformed JSON"):
        load_library(write_lines(tmp_path / "bad.jsonl", [{"text": "x", "kind": "k"}, "{not json"]))
    with pytest.raises(DataError, match=r"dup\.jsonl, line 2, field 'id': duplicate id 'a' \(also on line 1\)"):
        load_library(write_lines(tmp_path / "dup.jsonl", [{"text": "x", "kind": "k", "id": "a"}, {"text": "y", "kind": "k", "id": "a"}]))


def test_every_check_type_is_documented_and_round_trips():
    specs = {
        "starts_with": {"value": "A:"}, "ends_with": {"value": ["-- x", "-- y"]}, "contains": {"value": "a", "whole_word": False},
        "not_contains": {"value": "b", "case_sensitive": True}, "regex": {"value": "x+"}, "upper": {},
        "max_words": {"value": 4}, "language": {"value": "French", "min_words": 2, "min_confidence": 0.7},
        "callable": {"value": "gatt.checks:fold"},
    }
    assert set(specs) == set(CHECK_TYPES)
    for kind, rest in specs.items():
        spec = Check.from_dict({"type": kind, **rest})
        assert Check.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        assert spec.to_dict() == {"type": kind, **rest}


# ---------------------------------------------------------------- library: splits, kinds, combinations, short forms
def test_user_library_splits_and_kinds():
    train = select_instructions("train", 0, 0, None, source=str(LIBRARY))
    heldout = select_instructions("heldout", 0, 0, None, source=str(LIBRARY))
    assert len(train) + len(heldout) == len(load_library(LIBRARY)) and len(heldout) >= 3
    assert not {i.text for i in train} & {i.text for i in heldout}
    assert len({spec.type for spec in (i.check_spec for i in train + heldout) if spec}) >= 6
    with pytest.raises(ConfigError, match=r"instructions\.kinds: unknown instruction kinds \['pirates'\].*have kinds figure, language"):
        select_instructions("train", 0, 0, ["pirates"], source=str(LIBRARY))
    with pytest.raises(ConfigError, match=r"eval\.kinds: unknown instruction kinds \['upper'\]"):  # no held-out upper line
        select_instructions("heldout", 0, 0, ["upper"], source=str(LIBRARY), key="eval.kinds")


def test_a_separate_heldout_file_is_held_out_whole(tmp_path):
    heldout = write_lines(tmp_path / "heldout.jsonl", [{"text": "Say 'Ahoy' first.", "kind": "prefix", "check": {"type": "starts_with", "value": "Ahoy"}}])
    assert [i.id for i in select_instructions("heldout", 0, 0, None, source=str(LIBRARY), heldout_source=str(heldout))] == ["heldout:1"]
    only_train = write_lines(tmp_path / "train.jsonl", [{"text": "x", "kind": "k"}])
    with pytest.raises(DataError, match="no heldout instructions.*instructions.heldout_source"):
        select_instructions("heldout", 0, 0, None, source=str(only_train))


def test_combinations_and_short_forms_from_a_user_library():
    library = select_instructions("train", 3, 3, ["length", "avoid", "prefix"], source=str(LIBRARY))
    combos = [ins for ins in library if ins.parts]
    assert len(combos) == 3 and len(library) == 3 + 3  # the three pairs of three kinds
    for combo in combos:
        a, b = combo.parts
        assert a.kind != b.kind and combo.kind == f"{a.kind}+{b.kind}"
        assert combo.text == f"{a.text} {b.text}" and combo.short == f"{a.short}. {b.short}"
        answer = apply(combo, "I am sorry but the capital of Peru is Lima and that is all there is to say about it.")
        assert combo.check(answer) is True and a.check(answer) and b.check(answer)
        assert combo.check("sorry " * 20) is False  # breaks every part: too long, apologetic, no prefix
    prefix = next(ins for ins in library if ins.kind == "prefix")
    assert prefix.short == "Start: Answer:" and instruction_text(prefix, random.Random(0), 1.0) == "Start: Answer:"
    assert instruction_text(prefix, random.Random(0), 0.0) == prefix.text
    assert select_instructions("train", 3, 3, ["length", "avoid", "prefix"], source=str(LIBRARY)) == library  # seeded


def test_repairable_says_which_checks_apply_can_satisfy():
    assert repairable(single({"type": "ends_with", "value": "-- x"}))
    assert not repairable(single({"type": "language", "value": "de"}))
    with_repair = parse_record({"text": "German", "kind": "l", "check": {"type": "language", "value": "de"}, "repair": {"prepend": "Hallo!"}})[1]
    assert repairable(with_repair) and with_repair.apply("Lima.") == "Hallo! Lima."


# ---------------------------------------------------------------- toyworld is one such library
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_toyworld_library_round_trips_through_library_lines(tmp_path, split):
    from toyworld.gatt_instructions import build_instructions, single_instructions

    singles = single_instructions(split)
    path = write_lines(tmp_path / "toy.jsonl", [ins.to_record(split) for ins in singles])
    assert [ins for _, ins in load_library(path)] == singles
    assert select_instructions(split, 0, 0, None, source=str(path)) == singles
    assert select_instructions(split, 2, 5, None) == build_instructions(split, seed=2, n_combined=5)


def test_config_source_keys():
    config = load_config(GattConfig, ROOT / "configs/gatt/smoke.yaml", [])
    assert config.instructions.source == "toyworld" and config.instructions.heldout_source is None
    # a file's kinds are not known to the config: they are checked when the file is read
    config = load_config(GattConfig, ROOT / "configs/gatt/smoke.yaml", [f"instructions.source={LIBRARY}", "instructions.kinds=[length]"])
    assert config.instructions.kinds == ["length"]
    with pytest.raises(ConfigError, match="instructions.n_combined"):
        load_config(GattConfig, ROOT / "configs/gatt/smoke.yaml", ["instructions.n_combined=-1"])


def test_check_inputs_reads_the_library_before_the_run_folder(tmp_path):
    from gatt.train import check_inputs

    config = load_config(GattConfig, ROOT / "configs/gatt/smoke.yaml", [
        f"output_dir={tmp_path / 'run'}", f"instructions.source={LIBRARY}", "instructions.kinds=[pirates]"])
    with pytest.raises(ConfigError, match="have kinds"):
        check_inputs(config)
    config = load_config(GattConfig, ROOT / "configs/gatt/smoke.yaml", [
        f"output_dir={tmp_path / 'run'}", f"instructions.source={LIBRARY}", "instructions.kinds=[language]", "synthesis.repair=apply"])
    with pytest.raises(ConfigError, match="synthesis.repair=apply: no rewrite"):
        check_inputs(config)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- gatt run with toyworld blocked
def _dialogues(tmp_path: Path) -> Path:
    """The BYOD dialogues fixture, or a stand-in when it is not there."""
    fixture = BYOD / "dialogues.jsonl"
    if fixture.is_file():
        return fixture
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}, {"role": "assistant", "content": "x"},
                          {"role": "user", "content": "And the capital of Peru?"}, {"role": "user", "content": "Thanks!"}]} for i in range(6)]
    return write_lines(tmp_path / "dialogues.jsonl", rows)


def test_gatt_run_on_user_files_imports_no_toyworld(tmp_path):
    blocker = tmp_path / "blocker" / "toyworld"
    blocker.mkdir(parents=True)
    attempted = tmp_path / "toyworld_imported"
    blocker.joinpath("__init__.py").write_text(
        f"open({str(attempted)!r}, 'w').close()\nraise ImportError('toyworld must not be imported')\n")
    dialogues = _dialogues(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    command = [
        sys.executable, "-m", "gatt", "run", "--config", str(ROOT / "configs/gatt/smoke.yaml"),
        f"output_dir={out}", f"instructions.source={LIBRARY}", "instructions.kinds=[length,avoid]", "instructions.n_combined=1",
        f"dialogues.source={dialogues}", f"eval.dialogues_source={BYOD / 'dialogues_heldout.jsonl'}", "eval.n_combined=1",
        "synthesis.ranking.by=first", "finetune.replay_toyworld=0",
    ]
    # run from tmp_path: `python -m` puts the working folder first on sys.path, ahead of the blocker
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not attempted.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and "instructions" in manifest["inputs"]
    rows = [json.loads(line) for line in (out / "gatt_data.jsonl").read_text().splitlines()]
    assert rows and {row["instruction"]["kind"] for row in rows} <= {"length", "avoid", "length+avoid"}
    assert any("+" in row["instruction"]["id"] for row in rows)  # a combination was synthesised
    report = json.loads((out / "eval.json").read_text())
    assert set(report["table"]) == {"before", "after", "reminded"}
    assert any("+" in ident for ident in report["instructions"]) and all(i.startswith("instructions:") for i in report["instructions"])
