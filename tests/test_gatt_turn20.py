"""GAtt as in the paper, to turn 20 (issue #23): synthesis with the instruction (single or a
combination, long or short) in every user turn, the best adhering sample of K by the gated RM
reward, unchecked instructions kept and counted, the learn-last loss mask token by token; the
evaluation in three conditions (once before/after GAtt, reminded every turn) to turn 20 from
`rlhf gatt eval` on the BYOD fixtures, unchecked instructions reported apart. Tiny model only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import gatt.evaluate as evaluate_module
import gatt.synthesize as synthesize_module
from core.chat import IGNORE_INDEX, prompt_ids
from core.generation import SamplingConfig
from core.io import write_jsonl
from gatt.cli import main
from gatt.config import FOLLOW_UPS, GattConfig, RankingSection, SynthesisSection
from gatt.dialogues import Dialogue
from gatt.evaluate import (
    EvalCase,
    build_report,
    extend_dialogue,
    load_eval_dialogues,
    run_dialogues,
    summarize,
    table_markdown,
)
from gatt.instructions import combine, load_library, parse_record, select_instructions
from gatt.synthesize import Ranker, synthesize

ROOT = Path(__file__).resolve().parents[1]
BYOD = ROOT / "tests" / "data" / "byod"
LIBRARY = BYOD / "instructions.jsonl"
DIALOGUES = BYOD / "dialogues.jsonl"
TURNS = [1, 2, 4, 6, 10, 15, 20]

# repairable kinds of the BYOD library: a stub model can obey them with `Instruction.apply`
OBEYABLE = ["prefix", "end_marker", "upper", "length"]


def by_kind(kind: str, split: str = "train"):
    return next(ins for line_split, ins in load_library(LIBRARY) if ins.kind == kind and line_split == split)


PREFIX, MARKER, PIRATE = by_kind("prefix"), by_kind("end_marker"), by_kind("persona")
COMBO = combine([PREFIX, MARKER])
THREE_TURNS = [
    Dialogue("d0", ("What is the capital of Peru?", "What is 2 + 3?", "List exactly 2 fruits.")),
    Dialogue("d1", ("Translate 'cat' into French.", "What is the opposite of 'hot'?", "What is 4 + 4?")),
    Dialogue("d2", ("What is 7 + 1?", "What is the capital of Chile?", "What is 9 - 2?")),
    Dialogue("d3", ("Name a colour.", "Name a fruit.", "Name a city.")),
]


def obeying_stub(seen: list[list[dict]], obey=lambda copy: copy > 0):
    """core.generation.generate's stand-in: sample `copy` of each K copies (K=2 here) obeys the
    instruction (found in the last user turn) when `obey(copy)`; every prompt is recorded."""
    instructions = [*select_instructions("train", 0, 30, OBEYABLE, source=str(LIBRARY)), PIRATE, COMBO]

    def generate(model, tokenizer, conversations, sampling, progress=True, description=""):
        seen.extend(conversations)
        outputs = []
        for index, messages in enumerate(conversations):
            last = [m["content"] for m in messages if m["role"] == "user"][-1]
            found = max((i for i in instructions if last.endswith((" " + i.text, " " + i.short))),
                        key=lambda i: len(i.parts), default=None)
            answer = f"answer {len(messages)} number {index}"
            outputs.append(found.apply(answer) if found is not None and obey(index % 2) else answer)
        return outputs

    return generate


def sft_examples(tmp_path: Path, records: list[dict], tokenizer):
    """The synthesised rows as the GAtt fine-tune tokenises them (the SFT stage, data.learn=last)."""
    from core.config import load_config
    from gatt.train import sft_config
    from sft.data import build_sft_dataset

    path = tmp_path / "gatt_data.jsonl"
    write_jsonl(path, records)
    config = sft_config(load_config(GattConfig, ROOT / "configs/gatt/smoke.yaml", []), path, tmp_path / "sft")
    examples, report = build_sft_dataset(config, tokenizer)
    assert report.n_kept == len(records) and report.learn == "last"
    return examples


# ---------------------------------------------------------------- synthesis
def test_loss_mask_of_a_synthesised_dialogue_token_by_token(monkeypatch, tmp_path, tiny_model_and_tokenizer):
    """A combination in its short form: sampled with the short text in every user turn, kept
    in turn 1 only, and only the last answer's tokens (and its end-of-turn) carry labels."""
    _, tokenizer = tiny_model_and_tokenizer
    seen: list[list[dict]] = []
    monkeypatch.setattr(synthesize_module, "generate", obeying_stub(seen))
    config = SynthesisSection(k=2, ranking=RankingSection(by="first"))
    records, stats = synthesize(None, None, THREE_TURNS[:1], [COMBO], config, Ranker(config.ranking), short_probability=1.0)
    assert stats.n_kept == 1 and stats.kept_combined == stats.kept_short == 1
    (record,) = records
    short = "Start: Answer:. End: -- done"
    assert record["instruction_text"] == COMBO.short == short and record["short"] and record["instruction"]["parts"]
    # while sampling: the short text appended to every user turn of every prompt
    assert len(seen) == 2 * 3
    assert all(m["content"].endswith(" " + short) for prompt in seen for m in prompt if m["role"] == "user")
    # in the trained row: the instruction in turn 1 only, every answer obeys both parts
    messages = record["messages"]
    users = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert users[0] == f"{THREE_TURNS[0].users[0]} {short}" and users[1:] == list(THREE_TURNS[0].users[1:])
    assert len(answers) == 3 and all(COMBO.check(a) and a.startswith("Answer:") and a.endswith("-- done") for a in answers)
    # token by token, as the SFT stage tokenises it
    (example,) = sft_examples(tmp_path, records, tokenizer)
    ids, labels = example["input_ids"], example["labels"]
    context = prompt_ids(tokenizer, messages[:-1])  # everything before the last answer, generation prompt included
    assert ids[: len(context)] == context
    learned = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert learned == list(range(len(context), learned[-1] + 1))  # one run, right after the context
    assert all(labels[i] == ids[i] for i in learned)
    assert all(label == IGNORE_INDEX for label in labels[: len(context)])  # turns 1 and 2 (answers included): no loss
    assert tokenizer.decode([ids[i] for i in learned]) == answers[-1] + tokenizer.eos_token
    assert all(label == IGNORE_INDEX for label in labels[learned[-1] + 1:])  # the template's tail
    for earlier in answers[:-1]:
        assert earlier in tokenizer.decode(context)


def test_combinations_and_short_forms_appear_in_synthesis(monkeypatch):
    """The library's train instructions with combinations, the short form about half the time."""
    seen: list[list[dict]] = []
    monkeypatch.setattr(synthesize_module, "generate", obeying_stub(seen))
    instructions = select_instructions("train", 0, 6, OBEYABLE, source=str(LIBRARY))
    assert any(ins.parts for ins in instructions)
    dialogues = [Dialogue(f"d{i}", THREE_TURNS[i % 4].users) for i in range(24)]
    dealt = [instructions[i % len(instructions)] for i in range(24)]
    config = SynthesisSection(k=2, ranking=RankingSection(by="shortest"))
    records, stats = synthesize(None, None, dialogues, dealt, config, Ranker(config.ranking), short_probability=0.5)
    assert stats.n_kept == 24 and stats.n_unchecked == 0
    assert stats.kept_combined >= 1 and 4 <= stats.kept_short <= 20
    assert any(r["short"] for r in records) and any(r["instruction"]["parts"] for r in records)
    for record in records:
        first = next(m["content"] for m in record["messages"] if m["role"] == "user")
        expected = record["instruction"]["short_text"] if record["short"] else record["instruction"]["text"]
        assert record["instruction_text"] == expected and first.endswith(" " + expected)
    assert stats.repairs == {"enabled": False, "n_answers": 0, "n_dialogues": 0, "kept_without_repairs": 24,
                             "adherence_with_repairs": 1.0, "adherence_without_repairs": 1.0}
    assert set(stats.sample_adherence_by_kind) == set(OBEYABLE)


def test_unchecked_instructions_are_kept_ranked_by_reward_and_counted(monkeypatch):
    """An instruction with no checker (check -> None) used to drop every dialogue; it is now
    kept, the reward (here: shortest) alone picks the sample, and the stats count it."""
    seen: list[list[dict]] = []
    monkeypatch.setattr(synthesize_module, "generate", obeying_stub(seen, obey=lambda copy: False))
    assert PIRATE.check("Arr, matey!") is None and not PIRATE.checked
    config = SynthesisSection(k=2, ranking=RankingSection(by="shortest"))
    records, stats = synthesize(None, None, THREE_TURNS[:2], [PIRATE, PREFIX], config, Ranker(config.ranking))
    assert stats.n_unchecked == stats.kept_unchecked == 1
    assert stats.n_kept == 1 and stats.dropped_at_turn == {1: 1} and stats.dropped_by_kind == {"prefix": 1}
    (record,) = records
    assert record["instruction"]["id"] == PIRATE.id and record["checked"] is False
    answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    # of two samples of the same length ("... number 0", "... number 1"), the first
    assert answers == [f"answer {2 * t + 1} number 0" for t in range(3)]
    assert 1 not in stats.sample_adherence_by_turn or stats.sample_adherence_by_turn[1] == 0.0
    assert "1 unchecked (of 1: ranked by reward only)" in stats.summary()


def test_repairs_are_off_by_default_counted_and_reported_with_and_without(monkeypatch):
    seen: list[list[dict]] = []
    monkeypatch.setattr(synthesize_module, "generate", obeying_stub(seen, obey=lambda copy: False))
    assert SynthesisSection().repair == "none"
    config = SynthesisSection(k=2, ranking=RankingSection(by="first"), repair="apply")
    records, stats = synthesize(None, None, THREE_TURNS[:2], [PREFIX, PIRATE], config, Ranker(config.ranking))
    assert stats.n_kept == 2 and stats.repaired_by_turn == {1: 1, 2: 1, 3: 1}
    assert stats.repairs == {"enabled": True, "n_answers": 3, "n_dialogues": 1, "kept_without_repairs": 1,
                             "adherence_with_repairs": 1.0, "adherence_without_repairs": 0.0}
    assert "kept without repairs: 1" in stats.summary()


@pytest.fixture(scope="module")
def two_tiny_rms(tmp_path_factory):
    """Two one-output reward models made from the tiny model (different random heads)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models import resolve_model_path

    tiny = Path(resolve_model_path("embedded:tiny-llama"))
    root = tmp_path_factory.mktemp("gatt_rms")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    folders = {}
    for seed, kind in enumerate(("helpfulness", "safety")):
        torch.manual_seed(100 + seed)
        model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(root / kind, safe_serialization=True)
        tokenizer.save_pretrained(root / kind)
        folders[kind] = str(root / kind)
    yield folders
    shutil.rmtree(root, ignore_errors=True)


def test_rm_ranking_picks_the_higher_reward_adhering_sample(monkeypatch, two_tiny_rms):
    """Of three samples, the best by the gated reward of both RMs among those that adhere:
    not the first adhering one, and never one that does not adhere, whatever its reward."""
    from reward.gated import GatedScorer, RewardModelsSection

    section = RewardModelsSection(helpfulness=two_tiny_rms["helpfulness"], safety=two_tiny_rms["safety"], device="cpu")
    dialogue = Dialogue("d", ("What is the capital of Peru?",))
    prompt = [{"role": "user", "content": f"{dialogue.users[0]} {PREFIX.text}"}]
    pool_adhering = [f"Answer: {text}" for text in ("Lima.", "It is Lima, in Peru.", "Lima, of course!", "The capital is Lima.")]
    pool_failing = ["Lima.", "The capital of Peru is Lima.", "Peru's capital: Lima."]
    scorer = GatedScorer(section, device="cpu")
    reward = dict(zip(pool_adhering + pool_failing, scorer.score([{"messages": prompt}] * 7, pool_adhering + pool_failing).reward.tolist()))
    ranked = sorted(pool_adhering, key=reward.get)
    low, high = ranked[0], ranked[-1]
    failing = max(pool_failing, key=reward.get)
    assert reward[high] > reward[low]
    samples = [failing, low, high]  # "first" would take `low`; "shortest" is not the rule either

    def generate(model, tokenizer, conversations, sampling, progress=True, description=""):
        assert conversations == [prompt] * 3
        return list(samples)

    monkeypatch.setattr(synthesize_module, "generate", generate)
    config = SynthesisSection(k=3, ranking=RankingSection(by="reward_model"))
    records, stats = synthesize(None, None, [dialogue], [PREFIX], config, Ranker(config.ranking, section, device="cpu"))
    assert stats.n_kept == 1
    assert records[0]["messages"][-1]["content"] == high
    # the gate itself: a rule that ignored the checker would take the non-adhering sample if it scored best
    assert synthesize_module.pick_best([False, True, True], [reward[failing], reward[low], reward[high]]) == 2


# ---------------------------------------------------------------- evaluation
def test_once_and_reminded_conditions_place_the_instruction(monkeypatch):
    seen: list[list[dict]] = []

    class Sampler:
        def __init__(self, model, tokenizer):
            pass

        def respond(self, conversations, sampling, seed):
            seen.extend(conversations)
            return ["Answer: yes"] * len(conversations), [True] * len(conversations)

    monkeypatch.setattr(evaluate_module, "TurnByTurnSampler", Sampler)
    case = EvalCase(THREE_TURNS[0], COMBO, COMBO.short)
    once = run_dialogues(None, None, [case], "first_user", SamplingConfig(), progress=False)
    last = seen[-1]
    assert [m["content"] for m in last if m["role"] == "user"] == [f"{THREE_TURNS[0].users[0]} {COMBO.short}", *THREE_TURNS[0].users[1:]]
    reminded = run_dialogues(None, None, [case], "first_user", SamplingConfig(), progress=False, every_turn=True)
    assert [m["content"] for m in seen[-1] if m["role"] == "user"] == [f"{u} {COMBO.short}" for u in THREE_TURNS[0].users]
    assert once[0]["condition"] == "once" and reminded[0]["condition"] == "every_turn"
    assert once[0]["short"] and once[0]["combined"] and once[0]["adhered"] == [False] * 3  # no "-- done"
    assert once[0]["parts"][0] == [["prefix", True], ["end_marker", False]]


def test_dialogues_are_played_in_fixed_batches_each_with_its_seeds(monkeypatch):
    """3 cases in batches of 2: each batch keeps one sampler through every turn, batch b
    is seeded seed + turn + b, and each answer goes back to its own case."""
    calls = []

    class Sampler:
        def __init__(self, model, tokenizer):
            pass

        def respond(self, conversations, sampling, seed):
            users = [next(m["content"] for m in c if m["role"] == "user") for c in conversations]
            calls.append((id(self), tuple(users), seed))
            return [f"{u[:12]}|turn{len(c) // 2}" for u, c in zip(users, conversations)], [True] * len(conversations)

    monkeypatch.setattr(evaluate_module, "TurnByTurnSampler", Sampler)
    cases = [EvalCase(dialogue, PREFIX) for dialogue in THREE_TURNS[:3]]
    results = run_dialogues(None, None, cases, "first_user", SamplingConfig(batch_size=2, seed=10), progress=False)
    samplers = list(dict.fromkeys(call[0] for call in calls))
    assert len(samplers) == 2 and [len(call[1]) for call in calls] == [2, 2, 2, 1, 1, 1]
    assert [call[2] for call in calls] == [10, 11, 12, 11, 12, 13]  # batch 0: 10 + turn, batch 1: 11 + turn
    assert all(call[0] == samplers[0] for call in calls[:3]) and all(call[0] == samplers[1] for call in calls[3:])
    for case, result in zip(cases, results, strict=True):
        assert result["responses"] == [f"{case.dialogue.users[0]} {PREFIX.text}"[:12] + f"|turn{t}" for t in range(3)]


def test_unchecked_instructions_are_reported_apart_not_as_failures():
    checked = {"instruction_id": "a", "kind": "prefix", "checked": True, "adhered": [True, False], "parts": [[["prefix", True]], [["prefix", False]]]}
    unchecked = {"instruction_id": "p", "kind": "persona", "checked": False, "adhered": [None, None], "parts": [[["persona", None]]] * 2}
    partly = {"instruction_id": "a+p", "kind": "prefix+persona", "checked": False, "combined": True, "adhered": [False, None],
              "parts": [[["prefix", False], ["persona", None]], [["prefix", True], ["persona", None]]]}
    summary = summarize("m", [checked, unchecked, partly], turns=[1, 2])
    assert summary["by_turn"] == {1: 1.0, 2: 0.0} and summary["n_dialogues"] == 1
    assert summary["unchecked"] == {"n_dialogues": 2, "instructions": ["a+p", "p"]}
    assert summary["kind_adherence"] == {"prefix": 0.5}  # a checked part of a combination still tells about its kind
    cases = [EvalCase(THREE_TURNS[0], PREFIX), EvalCase(THREE_TURNS[1], PIRATE)]
    report = build_report({"model": summary, "reminded": {**summary, "condition": "every_turn"}}, "first_user", cases, [1, 2], 0.6)
    assert report["unchecked"]["n_dialogues"] == 1 and report["unchecked"]["instructions"] == [PIRATE.id]
    assert report["not_followed_when_reminded"] == {"reminded": {"prefix": 0.5}}
    assert report["ratio_to_ceiling"] == {1: 1.0, 2: None}
    text = table_markdown(report)
    assert "1 dialogues with unchecked instructions" in text and "not followed even when reminded (< 60%): prefix 50%" in text


def test_short_dialogues_are_extended_by_cycling_or_follow_ups():
    dialogue = Dialogue("d", ("Q1", "Q2", "Q3"), system="S")
    assert extend_dialogue(dialogue, 7, "cycle", FOLLOW_UPS).users == ("Q1", "Q2", "Q3", "Q1", "Q2", "Q3", "Q1")
    assert extend_dialogue(dialogue, 5, "follow_ups", FOLLOW_UPS).users == ("Q1", "Q2", "Q3", *FOLLOW_UPS[:2])
    assert extend_dialogue(dialogue, 2, "cycle", FOLLOW_UPS) == dialogue  # never cut here
    # from a file: every dialogue keeps all its user turns (up to n_turns), in file order
    rows = [json.loads(line) for line in DIALOGUES.read_text().splitlines()][:6]
    users = [[m["content"] for m in row["messages"] if m["role"] == "user"] for row in rows]
    dialogues, n_extended = load_eval_dialogues(str(DIALOGUES), 6, 20, 0, "cycle", FOLLOW_UPS)
    assert [d.id for d in dialogues] == [row["id"] for row in rows] and n_extended == 6
    for dialogue, own in zip(dialogues, users):
        assert len(dialogue.users) == 20 and list(dialogue.users[: len(own)]) == own
        assert all(dialogue.users[t] == own[t % len(own)] for t in range(20))
    cut, n_extended = load_eval_dialogues(str(DIALOGUES), 6, 3, 0, "cycle", FOLLOW_UPS)
    assert [list(d.users) for d in cut] == [own[:3] for own in users] and n_extended == 0


@pytest.mark.usefixtures("library_log_handlers_on_real_stderr")
def test_rlhf_gatt_eval_three_conditions_to_turn_20(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--model", "embedded:tiny-llama", "--baseline", "embedded:tiny-llama",
                 "--instructions", str(LIBRARY), "--dialogues", str(DIALOGUES), "--turns", ",".join(map(str, TURNS)),
                 "--out", str(out), "eval.n_dialogues=6", "eval.kinds=[length,avoid,persona]", "eval.n_combined=2",
                 "eval.sampling.max_new_tokens=3", "progress=false"])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    columns = [str(t) for t in TURNS]
    assert report["turns"] == TURNS
    assert set(report["table"]) == {"before", "after", "reminded"}
    assert all(list(row) == columns for row in report["table"].values())
    assert report["conditions"]["reminded"] == {"model": "embedded:tiny-llama", "instruction": "every_turn", "description": "every turn (ceiling)"}
    assert report["conditions"]["before"]["instruction"] == report["conditions"]["after"]["instruction"] == "once"
    assert set(report["gain"]) == set(report["ratio_to_ceiling"]) == set(columns)
    for label in ("before", "after", "reminded"):
        assert f"| {label}: " in printed
    # held-out instructions only (the file's "split": "heldout" lines), combinations and short forms included
    heldout = {ins.id: ins for split, ins in load_library(LIBRARY) if split == "heldout"}
    assert all(part in heldout for ident in report["instructions"] for part in ident.split("+"))
    assert report["n_combined"] >= 1 and report["n_short"] >= 1
    # the dialogues: 6 from the file, played to turn 20 by replaying their own user turns
    assert report["dialogue_extension"]["extend"] == "cycle" and report["dialogue_extension"]["n_extended"] == 6
    rows = {label: [json.loads(line) for line in (out / f"eval_dialogues_{label}.jsonl").read_text().splitlines()]
            for label in report["table"]}
    for row in rows["after"]:
        assert len(row["responses"]) == len(row["adhered"]) == len(row["users"]) == 20
        ins = heldout.get(row["instruction_id"])
        if ins is not None:
            assert row["instruction"] == (ins.short if row["short"] else ins.text)
    assert any(row["combined"] and row["checked"] for row in rows["after"]) and any(row["short"] for row in rows["after"])
    assert all(row["users"][3:6] == row["users"][:3] for row in rows["after"] if row["dialogue_id"] == "dialogue-000")
    # the unchecked one (the cowboy persona) is reported apart, not counted as failures
    cowboy = next(ident for ident, ins in heldout.items() if ins.kind == "persona")
    assert cowboy in report["unchecked"]["instructions"] and report["unchecked"]["n_dialogues"] >= 1
    assert report["n_checked"] == 6 - report["unchecked"]["n_dialogues"] >= 3
    for label, results in rows.items():
        counted = [r for r in results if r["checked"]]
        assert report["rows"][label]["n_dialogues"] == len(counted)
        for turn in TURNS:
            marks = [r["adhered"][turn - 1] for r in counted]
            assert report["table"][label][str(turn)] == pytest.approx(sum(marks) / len(marks))
    # kinds the model does not follow even when reminded (listed per reminded row)
    assert set(report["not_followed_when_reminded"]) == {"reminded"}
    kinds = report["rows"]["reminded"]["kind_adherence"]
    assert set(kinds) == {"length", "avoid"}  # checked kinds only (persona has no checker)
    assert report["not_followed_when_reminded"]["reminded"] == {k: v for k, v in kinds.items() if v < 0.5}
    assert report["min_reminded_adherence"] == 0.5
    assert (out / "adherence.png").stat().st_size > 0


def test_plot_gatt_in_the_run_report_reads_the_table(tmp_path):
    """pipelines/report.py draws GAtt's before/after rows from eval.json's `table`."""
    from pipelines.report import plot_gatt

    folder = tmp_path / "gatt"
    folder.mkdir()
    cases = [EvalCase(THREE_TURNS[0], PREFIX)]
    summary = {"model": "m", "condition": "once", "by_turn": {1: 1.0, 2: 0.5}, "kind_adherence": {}}
    report = build_report({"before": summary, "after": summary, "reminded": {**summary, "condition": "every_turn"}}, "first_user", cases, [1, 2])
    (folder / "eval.json").write_text(json.dumps(report))
    assert plot_gatt(tmp_path, [folder], tmp_path).name == "gatt_adherence.png"


def test_stage_config_defaults_follow_the_paper():
    config = GattConfig()
    assert config.instructions.short_probability == 0.5 and config.instructions.n_combined > 0
    assert config.eval.turns == TURNS and config.eval.n_combined > 0 and config.eval.short_probability == 0.5
    assert config.synthesis.repair == "none"
    assert parse_record({"text": "x", "kind": "k"})[1].checked is False


def test_eval_flags_become_config_keys_and_a_reward_model_preset_loads_without_rms(tmp_path):
    import argparse

    from core.config import load_config
    from gatt.cli import eval_flag_overrides

    args = argparse.Namespace(instructions=str(LIBRARY), dialogues=str(DIALOGUES), turns="1, 2,20")
    config = load_config(GattConfig, ROOT / "configs/gatt/quickstart.yaml", eval_flag_overrides(args))
    assert config.instructions.source == str(LIBRARY) and config.instructions.kinds is None
    assert config.eval.dialogues_source == str(DIALOGUES) and config.eval.turns == [1, 2, 20]
    # a file without held-out lines is held out whole
    own = tmp_path / "mine.jsonl"
    own.write_text("".join(json.dumps(ins.to_record()) + "\n" for _, ins in load_library(LIBRARY)[:3]))
    whole = argparse.Namespace(instructions=str(own), dialogues=None, turns=None)
    config = load_config(GattConfig, None, eval_flag_overrides(whole))
    assert config.instructions.heldout_source == str(own) and config.instructions.source == "toyworld"
