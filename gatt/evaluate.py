"""GAtt evaluation: does an instruction given once still hold N turns later?

Hand-written (no library has GAtt). Each held-out dialogue gets one held-out
instruction (a single one or a two-kind combination, in its long or its short form).
The model answers every turn with its own earlier answers in context (the user turns
come from the held-out dialogues), and the instruction's checker marks each answer.
Three conditions, the rows of the paper's Table 30 plus its ceiling:

- `before`: the instruction given once (turn 1 or the system message), the model before GAtt;
- `after`: the same, the model after GAtt (`model` when `rlhf gatt eval` has no baseline);
- `reminded`: the instruction appended to every user turn, the model after GAtt: what it
  does when reminded, the ceiling for `after` (`reminded_before`: the model before GAtt).

`adherence_by_turn` turns the marks into the rate per turn; the report lays the rows
out per turn (columns 1, 2, 4, 6, 10, 15, 20 by default) as `eval.json` and
`adherence.png`. Instructions without a checker are reported apart (`unchecked`),
never counted as failures; kinds a model does not follow even when reminded are
listed (`not_followed_when_reminded`).
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from core.errors import DataError
from core.generation import SamplingConfig, TurnByTurnSampler
from core.io import atomic_write_json, write_jsonl
from core.sources import is_toyworld
from gatt.dialogues import Dialogue, load_dialogues, prompt_messages
from gatt.instructions import Instruction, assign_instructions, instruction_text

EVAL_JSON = "eval.json"
PLOT = "adherence.png"
ONCE, EVERY_TURN = "once", "every_turn"
DESCRIPTIONS = {
    "before": "once, without GAtt",
    "after": "once, with GAtt",
    "model": "once",
    "reminded": "every turn (ceiling)",
    "reminded_before": "every turn, without GAtt",
}


@dataclass(frozen=True)
class EvalCase:
    dialogue: Dialogue
    instruction: Instruction
    text: str = ""  # the instruction as given: its long or its short form ("" = the long form)

    @property
    def given(self) -> str:
        return self.text or self.instruction.text

    @property
    def short(self) -> bool:
        return self.given != self.instruction.text


@dataclass(frozen=True)
class Row:
    """One row of the table: a model in a condition (`once` or `every_turn`)."""

    label: str
    name: str
    model: object
    tokenizer: object
    condition: str = ONCE


# ---------------------------------------------------------------- pure functions
def report_turns(n_turns: int, turns: list[int] | None = None) -> list[int]:
    """The table's columns: `turns` up to `n_turns`, or else the paper's 1, 2, 4, 6, ...
    up to `n_turns` (plus `n_turns` itself)."""
    if turns is not None:
        return [t for t in sorted(set(turns)) if t <= n_turns]
    columns = [1] + list(range(2, n_turns + 1, 2))
    if n_turns not in columns:
        columns.append(n_turns)
    return [t for t in columns if t <= n_turns]


def adherence_by_turn(results: list[dict]) -> dict[int, float]:
    """{turn (1-based): share of dialogues whose answer at that turn obeyed the instruction}.

    `results` are `{"adhered": [bool | None, ...]}` records, one per dialogue; a dialogue
    shorter than others counts only at the turns it has, and an unchecked answer (None)
    counts nowhere.
    """
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for index, ok in enumerate(result["adhered"]):
            if ok is None:
                continue
            counts[index + 1][0] += int(bool(ok))
            counts[index + 1][1] += 1
    return {turn: hits / total for turn, (hits, total) in sorted(counts.items())}


def adherence_by_kind(results: list[dict]) -> dict[str, dict[int, float]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        groups[result["kind"]].append(result)
    return {kind: adherence_by_turn(group) for kind, group in sorted(groups.items())}


def adherence_by_part_kind(results: list[dict]) -> dict[str, float]:
    """{kind: share of checked answers that obeyed a part of that kind, over every turn}:
    a combination counts for each of its kinds (`parts`: [[kind, check], ...] per answer)."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for parts in result.get("parts", []):
            for kind, ok in parts:
                if ok is not None:
                    hits[kind][0] += int(bool(ok))
                    hits[kind][1] += 1
    return {kind: n / total for kind, (n, total) in sorted(hits.items())}


def mean_from_turn(by_turn: dict[int, float], first: int) -> float | None:
    """Mean adherence over turns >= `first` (the paper's point: late turns)."""
    values = [rate for turn, rate in by_turn.items() if turn >= first]
    return sum(values) / len(values) if values else None


def make_cases(dialogues: list[Dialogue], instructions: list[Instruction], seed: int, short_probability: float = 0.0) -> list[EvalCase]:
    """One instruction per dialogue, dealt evenly from the (held-out) instructions, in
    its short form `short_probability` of the time (seeded)."""
    dealt = assign_instructions(instructions, len(dialogues), seed)
    rng = random.Random(f"gatt:eval-short:{seed}")
    return [EvalCase(d, ins, instruction_text(ins, rng, short_probability)) for d, ins in zip(dialogues, dealt, strict=True)]


def extend_dialogue(dialogue: Dialogue, n_turns: int, how: str, follow_ups: tuple[str, ...]) -> Dialogue:
    """`dialogue` with at least `n_turns` user turns: `cycle` replays its own user turns
    in order (turn 4 of a 3-turn dialogue is its turn 1 again), `follow_ups` appends
    the generic follow-ups in order, cycling them."""
    users = list(dialogue.users)
    extra = users if how == "cycle" else list(follow_ups)
    index = 0
    while len(users) < n_turns:
        users.append(extra[index % len(extra)])
        index += 1
    return Dialogue(dialogue.id, tuple(users), dialogue.system)


def load_eval_dialogues(source, n: int, n_turns: int, seed: int, how: str, follow_ups: tuple[str, ...]) -> tuple[list[Dialogue], int]:
    """`n` held-out dialogues of `n_turns` user turns, and how many were extended.

    toyworld builds dialogues of `n_turns` turns. A file's first `n` dialogues are taken
    in file order with all their user turns (up to `n_turns`), and a shorter one is
    extended (`extend_dialogue`). `load_dialogues` cuts every dialogue it returns to the
    length asked for, so the file is read once per length and each dialogue keeps the
    longest version that it has.
    """
    if is_toyworld(source):
        dialogues, _ = load_dialogues(source, "heldout", n, n_turns, seed)
        return dialogues, 0
    dialogues, _ = load_dialogues(source, "heldout", n, 1, seed)
    for length in range(2, n_turns + 1):
        if not any(len(d.users) == length - 1 for d in dialogues):
            break  # none of them is this long
        try:
            # the first n with `length` turns include every one of ours that has them (ours come first)
            longer, _ = load_dialogues(source, "heldout", n, length, seed)
        except DataError:
            break  # no dialogue has this many user turns
        at = 0
        for candidate in longer:  # both lists are in file order: match each to the next one it extends
            for index in range(at, len(dialogues)):
                current = dialogues[index]
                if current.id == candidate.id and candidate.users[: len(current.users)] == current.users and len(current.users) == length - 1:
                    dialogues[index] = candidate
                    at = index + 1
                    break
    extended = sum(len(d.users) < n_turns for d in dialogues)
    return [extend_dialogue(d, n_turns, how, follow_ups) for d in dialogues], extended


# ---------------------------------------------------------------- running dialogues
def run_dialogues(model, tokenizer, cases: list[EvalCase], position: str, sampling: SamplingConfig, progress: bool = True,
                  every_turn: bool = False, n_turns: int | None = None) -> list[dict]:
    """Answer every turn of every case (the first `n_turns`), the instruction given once
    (or, `every_turn`, appended to every user turn). The cases are cut into fixed
    batches of `sampling.batch_size`, each played to the end with its KV cache kept from
    turn to turn (`TurnByTurnSampler`: a turn encodes only its new tokens, so playing to
    turn 20 costs about 4x less than re-encoding every conversation every turn) and
    dropped before the next batch; batch b is seeded with `sampling.seed + turn + b` at
    each turn (0-based)."""
    answers: list[list[str]] = [[] for _ in cases]
    played = min(len(case.dialogue.users) for case in cases) if cases else 0
    played = played if n_turns is None else min(played, n_turns)
    condition = EVERY_TURN if every_turn else ONCE
    batches = [range(start, min(start + sampling.batch_size, len(cases))) for start in range(0, len(cases), sampling.batch_size)]
    with tqdm(total=played * len(batches), desc=f"GAtt eval ({condition})", disable=not progress, leave=False) as bar:
        for index, batch in enumerate(batches):
            sampler = TurnByTurnSampler(model, tokenizer)
            for turn in range(played):
                prompts = [prompt_messages(cases[i].dialogue, answers[i], cases[i].given, position, every_turn=every_turn) for i in batch]
                texts, _ = sampler.respond(prompts, sampling, seed=sampling.seed + turn + index)
                for i, text in zip(batch, texts, strict=True):
                    answers[i].append(text)
                bar.update()
    return [
        {
            "dialogue_id": case.dialogue.id,
            "instruction_id": case.instruction.id,
            "kind": case.instruction.kind,
            "instruction": case.given,
            "short": case.short,
            "combined": bool(case.instruction.parts),
            "checked": case.instruction.checked,
            "condition": condition,
            "users": list(case.dialogue.users[:played]),
            "responses": case_answers,
            "adhered": [case.instruction.check(text) for text in case_answers],
            "parts": [[[part.kind, part.check(text)] for part in (case.instruction.parts or (case.instruction,))] for text in case_answers],
        }
        for case, case_answers in zip(cases, answers, strict=True)
    ]


def summarize(model_name: str, results: list[dict], condition: str = ONCE, turns: list[int] | None = None) -> dict:
    """One row: adherence per turn of the checked instructions (unchecked ones apart), by
    kind, by form (single or combined, long or short) and per part kind over all turns."""
    checked = [r for r in results if r.get("checked", True)]
    by_turn = adherence_by_turn(checked)
    columns = turns if turns is not None else sorted(by_turn)

    def at(group: list[dict]) -> dict[int, float | None]:
        rates = adherence_by_turn(group)
        return {turn: rates.get(turn) for turn in columns}

    forms = {
        "single": [r for r in checked if not r.get("combined")],
        "combined": [r for r in checked if r.get("combined")],
        "long": [r for r in checked if not r.get("short")],
        "short": [r for r in checked if r.get("short")],
    }
    unchecked = [r for r in results if not r.get("checked", True)]
    return {
        "model": model_name,
        "condition": condition,
        "n_dialogues": len(checked),
        "by_turn": by_turn,
        "by_kind": adherence_by_kind(checked),
        "by_form": {form: {"n_dialogues": len(group), "by_turn": at(group)} for form, group in forms.items()},
        "kind_adherence": adherence_by_part_kind(results),
        "mean_turn_4_on": mean_from_turn(by_turn, 4),
        "unchecked": {"n_dialogues": len(unchecked), "instructions": sorted({r["instruction_id"] for r in unchecked})},
    }


def condition_rows(after: tuple[str, object, object], before: tuple[str, object, object] | None = None,
                   reminded: str = "after") -> list[Row]:
    """The table's rows: `before`/`after` (or `model` without a baseline) with the instruction
    once, `reminded` (the `after` model reminded every turn) and, with `reminded=both` and a
    baseline, `reminded_before`."""
    rows = []
    if before is not None:
        rows.append(Row("before", *before))
    rows.append(Row("after" if before is not None else "model", *after))
    rows.append(Row("reminded", *after, condition=EVERY_TURN))
    if before is not None and reminded == "both":
        rows.append(Row("reminded_before", *before, condition=EVERY_TURN))
    return rows


def evaluate_models(
    models: dict[str, tuple[str, object, object]] | list[Row],
    cases: list[EvalCase],
    position: str,
    sampling: SamplingConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    turns: list[int] | None = None,
    min_reminded_adherence: float = 0.5,
    extra: dict | None = None,
) -> dict:
    """Evaluate each row (a `Row`, or `label -> (name, model, tokenizer)` with the
    instruction once) on the same cases, played to the last of `turns` (default: as long
    as the dialogues); write eval.json, the PNG and one JSONL of dialogues per row.
    `extra` is merged into the report (how dialogues were extended). Returns the report."""
    rows = [Row(label, *spec) for label, spec in models.items()] if isinstance(models, dict) else list(models)
    played = play_rows(rows, cases, position, sampling, progress, turns)
    return write_evaluation(rows, played, cases, position, out_dir, turns, min_reminded_adherence, extra)


def play_rows(rows: list[Row], cases: list[EvalCase], position: str, sampling: SamplingConfig, progress: bool = True,
              turns: list[int] | None = None) -> dict[str, list[dict]]:
    """{label: the answered dialogues of `run_dialogues`} for each of `rows`. A row's
    results do not depend on the other rows, so processes may play different rows."""
    n_turns = max(turns) if turns else None
    return {row.label: run_dialogues(row.model, row.tokenizer, cases, position, sampling, progress,
                                     every_turn=row.condition == EVERY_TURN, n_turns=n_turns) for row in rows}


def write_evaluation(rows: list[Row], played: dict[str, list[dict]], cases: list[EvalCase], position: str,
                     out_dir: str | os.PathLike, turns: list[int] | None = None, min_reminded_adherence: float = 0.5,
                     extra: dict | None = None) -> dict:
    """eval.json, the PNG and one JSONL of dialogues per row from every row's played dialogues."""
    out_dir = Path(out_dir)
    summaries = {}
    for row in rows:
        write_jsonl(out_dir / f"eval_dialogues_{row.label}.jsonl", played[row.label])
        summaries[row.label] = summarize(row.name, played[row.label], row.condition, turns)
    report = build_report(summaries, position, cases, turns, min_reminded_adherence)
    report.update(extra or {})
    atomic_write_json(out_dir / EVAL_JSON, report)
    plot_adherence(report, out_dir / PLOT)
    return report


def build_report(summaries: dict[str, dict], position: str, cases: list[EvalCase], turns: list[int] | None = None,
                 min_reminded_adherence: float = 0.5) -> dict:
    """eval.json: the Table 30 layout (`table`: row -> turn -> adherence), the rows'
    conditions and summaries, gains, the ratio to the ceiling, unchecked instructions
    and the kinds not followed even when reminded."""
    n_turns = max((max(s["by_turn"]) for s in summaries.values() if s["by_turn"]), default=0)
    columns = report_turns(n_turns, turns)
    unchecked = [case for case in cases if not case.instruction.checked]
    report = {
        "turns": columns,
        "instruction_position": position,
        "n_dialogues": len(cases),
        "n_checked": len(cases) - len(unchecked),
        "n_short": sum(case.short for case in cases),
        "n_combined": sum(bool(case.instruction.parts) for case in cases),
        "instructions": sorted({case.instruction.id for case in cases}),
        "conditions": {label: {"model": s.get("model"), "instruction": s.get("condition", ONCE),
                               "description": DESCRIPTIONS.get(label, label)} for label, s in summaries.items()},
        "table": {label: {turn: s["by_turn"].get(turn) for turn in columns} for label, s in summaries.items()},
        "rows": summaries,
        "unchecked": {
            "n_dialogues": len(unchecked),
            "instructions": sorted({case.instruction.id for case in unchecked}),
            "note": "no checker: not counted in the table (neither adhered nor failed); their answers are in eval_dialogues_*.jsonl",
        },
    }
    once = "after" if "after" in summaries else "model" if "model" in summaries else None
    if "before" in summaries and "after" in summaries:
        before, after = summaries["before"]["by_turn"], summaries["after"]["by_turn"]
        report["gain"] = {turn: after[turn] - before[turn] for turn in columns if turn in before and turn in after}
    if once and "reminded" in summaries:
        given, ceiling = summaries[once]["by_turn"], summaries["reminded"]["by_turn"]
        report["ratio_to_ceiling"] = {turn: (given[turn] / ceiling[turn] if ceiling[turn] > 0 else None)
                                      for turn in columns if turn in given and turn in ceiling}
    reminded_rows = {label: s for label, s in summaries.items() if s.get("condition") == EVERY_TURN}
    if reminded_rows:
        report["min_reminded_adherence"] = min_reminded_adherence
        report["not_followed_when_reminded"] = {
            label: {kind: rate for kind, rate in s["kind_adherence"].items() if rate < min_reminded_adherence}
            for label, s in reminded_rows.items()
        }
    return report


def _rate(row: dict, turn: int) -> float | None:
    return row.get(turn, row.get(str(turn)))


def table_markdown(report: dict) -> str:
    """The Table 30 layout: one row per model and condition, one column per reported turn, in %."""
    turns = report["turns"]
    conditions = report.get("conditions", {})
    lines = ["| model | " + " | ".join(f"turn {t}" for t in turns) + " |", "|---|" + "---|" * len(turns)]
    for label, row in report["table"].items():
        cells = [("-" if _rate(row, t) is None else f"{100 * _rate(row, t):.0f}%") for t in turns]
        description = (conditions.get(label) or {}).get("description")
        name = f"{label}: {description}" if description and description != label else label
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = []
    unchecked = report.get("unchecked") or {}
    if unchecked.get("n_dialogues"):
        notes.append(f"{unchecked['n_dialogues']} dialogues with unchecked instructions ({', '.join(unchecked['instructions'])}) not counted")
    for label, kinds in (report.get("not_followed_when_reminded") or {}).items():
        if kinds:
            shown = ", ".join(f"{kind} {100 * rate:.0f}%" for kind, rate in kinds.items())
            notes.append(f"{label}: not followed even when reminded (< {100 * report['min_reminded_adherence']:.0f}%): {shown}")
    return "\n".join(lines + [f"- {note}" for note in notes])


def plot_adherence(report: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, summary in report["rows"].items():
        turns = sorted(int(t) for t in summary["by_turn"])
        style = "--" if summary.get("condition") == EVERY_TURN else "-"
        ax.plot(turns, [100 * summary["by_turn"][t] for t in turns], style, marker="o", label=f"{label} ({summary.get('condition', ONCE)})")
    ax.set_xlabel("dialogue turn")
    ax.set_ylabel("instruction adherence (%)")
    ax.set_ylim(-5, 105)
    ax.set_title(f"GAtt: instruction once ({report['instruction_position']}) or every turn")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
