"""GAtt evaluation: does an instruction given once still hold N turns later?

Hand-written (no library has GAtt). Each held-out dialogue gets one held-out
instruction, given once: appended to the first user turn or as the system
message. The model answers every turn with its own earlier answers in context
(user turns come from held-out dialogues), and the instruction's checker marks
each answer. `adherence_by_turn` turns those marks into the rate per turn, and
the report lays out "before" and "after" GAtt per turn like Table 30 of the
Llama 2 paper (turns 1, 2, 4, 6, ...), as `eval.json` and `adherence.png`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.generation import SamplingConfig, generate
from core.io import atomic_write_json, write_jsonl
from gatt.dialogues import Dialogue, prompt_messages
from gatt.instructions import Instruction, assign_instructions

EVAL_JSON = "eval.json"
PLOT = "adherence.png"


@dataclass(frozen=True)
class EvalCase:
    dialogue: Dialogue
    instruction: Instruction


# ---------------------------------------------------------------- pure functions
def report_turns(n_turns: int) -> list[int]:
    """The paper's columns: turns 1, 2, 4, 6, ... up to `n_turns` (plus `n_turns` itself)."""
    turns = [1] + list(range(2, n_turns + 1, 2))
    if n_turns not in turns:
        turns.append(n_turns)
    return [t for t in turns if t <= n_turns]


def adherence_by_turn(results: list[dict]) -> dict[int, float]:
    """{turn (1-based): share of dialogues whose answer at that turn obeyed the instruction}.

    `results` are `{"adhered": [bool, ...]}` records, one per dialogue; a dialogue
    shorter than others counts only at the turns it has.
    """
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for index, ok in enumerate(result["adhered"]):
            counts[index + 1][0] += int(bool(ok))
            counts[index + 1][1] += 1
    return {turn: hits / total for turn, (hits, total) in sorted(counts.items())}


def adherence_by_kind(results: list[dict]) -> dict[str, dict[int, float]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        groups[result["kind"]].append(result)
    return {kind: adherence_by_turn(group) for kind, group in sorted(groups.items())}


def mean_from_turn(by_turn: dict[int, float], first: int) -> float | None:
    """Mean adherence over turns >= `first` (the paper's point: late turns)."""
    values = [rate for turn, rate in by_turn.items() if turn >= first]
    return sum(values) / len(values) if values else None


def make_cases(dialogues: list[Dialogue], instructions: list[Instruction], seed: int) -> list[EvalCase]:
    """One instruction per dialogue, dealt evenly from the (held-out) instructions."""
    dealt = assign_instructions(instructions, len(dialogues), seed)
    return [EvalCase(d, ins) for d, ins in zip(dialogues, dealt, strict=True)]


# ---------------------------------------------------------------- running dialogues
def run_dialogues(model, tokenizer, cases: list[EvalCase], position: str, sampling: SamplingConfig, progress: bool = True) -> list[dict]:
    """Answer every turn of every case, the instruction given once; one `generate` call per turn."""
    answers: list[list[str]] = [[] for _ in cases]
    n_turns = min(len(case.dialogue.users) for case in cases) if cases else 0
    for turn in range(n_turns):
        prompts = [prompt_messages(c.dialogue, a, c.instruction.text, position, every_turn=False) for c, a in zip(cases, answers, strict=True)]
        turn_sampling = sampling.model_copy(update={"seed": sampling.seed + turn})
        for case_answers, text in zip(answers, generate(model, tokenizer, prompts, turn_sampling, progress=progress, description=f"eval turn {turn + 1}"), strict=True):
            case_answers.append(text)
    return [
        {
            "dialogue_id": case.dialogue.id,
            "instruction_id": case.instruction.id,
            "kind": case.instruction.kind,
            "instruction": case.instruction.text,
            "users": list(case.dialogue.users[:n_turns]),
            "responses": case_answers,
            "adhered": [case.instruction.check(text) for text in case_answers],
        }
        for case, case_answers in zip(cases, answers, strict=True)
    ]


def summarize(model_name: str, results: list[dict]) -> dict:
    by_turn = adherence_by_turn(results)
    return {
        "model": model_name,
        "n_dialogues": len(results),
        "by_turn": by_turn,
        "by_kind": adherence_by_kind(results),
        "mean_turn_4_on": mean_from_turn(by_turn, 4),
    }


def evaluate_models(
    models: dict[str, tuple[str, object, object]],
    cases: list[EvalCase],
    position: str,
    sampling: SamplingConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Evaluate each `label -> (name, model, tokenizer)` on the same cases; write eval.json, the PNG
    and one JSONL of dialogues per label. Returns the eval.json content."""
    out_dir = Path(out_dir)
    summaries = {}
    for label, (name, model, tokenizer) in models.items():
        results = run_dialogues(model, tokenizer, cases, position, sampling, progress)
        write_jsonl(out_dir / f"eval_dialogues_{label}.jsonl", results)
        summaries[label] = summarize(name, results)
    report = build_report(summaries, position, cases)
    atomic_write_json(out_dir / EVAL_JSON, report)
    plot_adherence(report, out_dir / PLOT)
    return report


def build_report(summaries: dict[str, dict], position: str, cases: list[EvalCase]) -> dict:
    n_turns = max((max(s["by_turn"]) for s in summaries.values() if s["by_turn"]), default=0)
    turns = report_turns(n_turns)
    report = {
        "turns": turns,
        "instruction_position": position,
        "n_dialogues": len(cases),
        "instructions": sorted({case.instruction.id for case in cases}),
        "table": {label: {turn: s["by_turn"].get(turn) for turn in turns} for label, s in summaries.items()},
        "models": summaries,
    }
    if "before" in summaries and "after" in summaries:
        before, after = summaries["before"]["by_turn"], summaries["after"]["by_turn"]
        report["gain"] = {turn: after[turn] - before[turn] for turn in turns if turn in before and turn in after}
    return report


def table_markdown(report: dict) -> str:
    """The Table 30 layout: one row per model, one column per reported turn, in %."""
    turns = report["turns"]
    lines = ["| model | " + " | ".join(f"turn {t}" for t in turns) + " |", "|---|" + "---|" * len(turns)]
    for label, row in report["table"].items():
        cells = [("-" if row.get(t, row.get(str(t))) is None else f"{100 * row.get(t, row.get(str(t))):.0f}%") for t in turns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_adherence(report: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, summary in report["models"].items():
        turns = sorted(int(t) for t in summary["by_turn"])
        ax.plot(turns, [100 * summary["by_turn"][t] for t in turns], marker="o", label=label)
    ax.set_xlabel("dialogue turn")
    ax.set_ylabel("instruction adherence (%)")
    ax.set_ylim(-5, 105)
    ax.set_title(f"GAtt: instruction given once ({report['instruction_position']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
