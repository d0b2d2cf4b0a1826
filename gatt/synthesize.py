"""GAtt data synthesis (Llama 2, section 3.3), hand-written: no library has it.

For each multi-turn dialogue, one instruction from the library (a single one or a
random two-kind combination), in its short form `short_probability` of the time:

1. append the instruction text to every user turn;
2. turn by turn, sample K answers with the current (latest) model, keep those that
   the instruction's checker accepts and take the best of them by reward (Llama 2's
   gated reward from the two RMs by default in a pipeline; toyworld's gold judge or a
   length heuristic by choice). An instruction without a checker (`check` returns
   None) accepts every sample: the reward alone ranks them, and the stats count such
   dialogues (`n_unchecked`, `kept_unchecked`). The chosen answer stays in context for
   the next turn. A turn with no adhering sample (scoring at least `min_score`, when
   set) drops the dialogue, and the drop is counted (by turn and kind); with
   `repair: apply` (off by default) the best-scoring sample is rewritten to obey the
   instruction instead, and the repair is counted, with adherence with and without
   repairs in the stats;
3. drop the instruction from every user turn but the first (or move it to the
   system message) and mark the example `learn: last`: the SFT stage then zeroes
   the loss on every token but the last answer's, so the earlier (sampled,
   adhering) answers are context the model learns to stay consistent with.

The output is an SFT JSONL (`{"messages", "learn": "last", "instruction",
"instruction_text", "short", ...}`) that `sft.train.run` trains with `data.learn: last`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field

from core.generation import SamplingConfig, generate
from gatt.config import RankingSection, SynthesisSection
from gatt.dialogues import Dialogue, dialogue_messages, prompt_messages
from gatt.instructions import Instruction, apply, instruction_text

TURN_SEED_STRIDE = 7919  # a different sampling seed per turn (a prime, so turns never collide)
# A different seed per shard of dialogues (a larger prime: shard i turn t meets shard j
# turn u only if 104729 (i - j) = 7919 (u - t) plus a batch index, past turn 13).
SHARD_SEED_STRIDE = 104729


@dataclass
class DialogueState:
    """One dialogue being synthesised: its instruction and the answers chosen so far."""

    dialogue: Dialogue
    instruction: Instruction
    text: str  # the instruction's text in this dialogue: its long or its short form
    answers: list[str] = field(default_factory=list)
    repaired: int = 0  # answers of this dialogue rewritten by `repair: apply`
    adhering: int = 0  # answers (of a checked instruction) that passed the check before any repair

    @property
    def short(self) -> bool:
        return self.text != self.instruction.text


@dataclass
class SynthesisStats:
    n_dialogues: int = 0
    n_kept: int = 0
    n_dropped: int = 0
    n_examples: int = 0
    dropped_at_turn: dict[int, int] = field(default_factory=dict)  # 1-based turn -> dialogues dropped there
    dropped_by_kind: dict[str, int] = field(default_factory=dict)
    kept_by_kind: dict[str, int] = field(default_factory=dict)
    sample_adherence_by_turn: dict[int, float] = field(default_factory=dict)  # share of the checked K samples that adhered
    # Share of a kind's checked samples that adhered with the instruction in every user turn:
    # what the sampling model can follow when reminded (a combination counts for each of its kinds).
    sample_adherence_by_kind: dict[str, float] = field(default_factory=dict)
    repaired_by_turn: dict[int, int] = field(default_factory=dict)  # 1-based turn -> answers rewritten (repair: apply)
    n_samples: int = 0
    n_unchecked: int = 0  # dialogues whose instruction has no checker (ranked by the reward alone)
    kept_unchecked: int = 0
    n_short: int = 0  # dialogues given the instruction's short form
    kept_short: int = 0
    n_combined: int = 0  # dialogues given a two-kind combination
    kept_combined: int = 0
    # Template repairs (`repair: apply`) and the adherence of the kept answers with and without them.
    repairs: dict = field(default_factory=dict)
    # The numerators and denominators behind the shares above ([adhering, checked]; the
    # kept answers: {"checked", "with_repairs", "without_repairs"}), so that the stats of
    # shards synthesised apart (by several processes) merge exactly (`merge_stats`).
    sample_checks_by_turn: dict[int, list[int]] = field(default_factory=dict)
    sample_checks_by_kind: dict[str, list[int]] = field(default_factory=dict)
    answer_checks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        repairs = self.repairs
        repaired = (f"; repairs: {repairs['n_answers']} answers in {repairs['n_dialogues']} dialogues "
                    f"(kept without repairs: {repairs['kept_without_repairs']}; checked answers adhering "
                    f"{_pct(repairs['adherence_without_repairs'])} without, {_pct(repairs['adherence_with_repairs'])} with)"
                    if repairs.get("enabled") else "")
        return (
            f"{self.n_dialogues} dialogues: {self.n_kept} kept, {self.n_dropped} dropped "
            f"(no adhering sample of K; by turn {self.dropped_at_turn}); "
            f"kept: {self.kept_short} short forms, {self.kept_combined} combinations, "
            f"{self.kept_unchecked} unchecked (of {self.n_unchecked}: ranked by reward only){repaired}; "
            f"{self.n_examples} training examples"
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


# ---------------------------------------------------------------- pure helpers
def pick_best(adheres: list[bool], scores: list[float], min_score: float | None = None) -> int | None:
    """Index of the highest-scoring adhering sample (the first on ties) that scores
    at least `min_score` (when given), or None if there is none."""
    best = None
    for index, (ok, score) in enumerate(zip(adheres, scores, strict=True)):
        if min_score is not None and score < min_score:
            continue
        if ok and (best is None or score > scores[best]):
            best = index
    return best


def repair_answer(instruction: Instruction, samples: list[str], scores: list[float]) -> str:
    """The highest-scoring sample (the first on ties), rewritten to obey `instruction`."""
    best = max(range(len(samples)), key=lambda index: (scores[index], -index))
    return apply(instruction, samples[best])


def training_records(state: DialogueState, position: str, examples: str) -> list[dict]:
    """The finished dialogue as learn-last SFT rows: the instruction (`state.text`) only in turn 1."""
    ends = [len(state.answers)] if examples == "last" else list(range(1, len(state.answers) + 1))
    return [
        {
            "messages": dialogue_messages(state.dialogue, state.answers[:end], state.text, position, every_turn=False),
            "learn": "last",
            "id": f"{state.dialogue.id}" + ("" if examples == "last" else f"-t{end}"),
            "instruction": state.instruction.to_dict(),
            "instruction_text": state.text,
            "short": state.short,
            "checked": state.instruction.checked,
            "repaired_answers": state.repaired,
        }
        for end in ends
    ]


def eligible(adheres: list[bool | None]) -> list[bool]:
    """Which samples may be kept: those that pass the check, and every sample of an
    unchecked instruction (None: the reward alone ranks them)."""
    return [ok is not False for ok in adheres]


def part_results(instruction: Instruction, response: str) -> list[tuple[str, bool | None]]:
    """(kind, check) of each part of `instruction` (the instruction itself when single)."""
    return [(part.kind, part.check(response)) for part in (instruction.parts or (instruction,))]


def turn_sampling(sampling: SamplingConfig, seed: int, turn: int) -> SamplingConfig:
    return sampling.model_copy(update={"seed": seed + sampling.seed + TURN_SEED_STRIDE * turn})


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard `index` of the dialogues: a function of the shard's index only, never
    of the process that synthesises it, so any number of processes gives the same data
    (shard 0 keeps `seed`: a run of one shard samples what it did before shards existed)."""
    return seed + SHARD_SEED_STRIDE * index


def shards(n: int, size: int) -> list[slice]:
    """The dialogues [0, n) cut into consecutive shards of `size` (the last one shorter)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def merge_stats(parts: list[SynthesisStats]) -> SynthesisStats:
    """The stats of the shards `parts` (in shard order) as one synthesis: counts summed,
    shares recomputed from the summed numerators and denominators. Pure."""
    merged = SynthesisStats()
    for name in ("n_dialogues", "n_kept", "n_dropped", "n_examples", "n_samples", "n_unchecked", "kept_unchecked",
                 "n_short", "kept_short", "n_combined", "kept_combined"):
        setattr(merged, name, sum(getattr(part, name) for part in parts))
    for name in ("dropped_at_turn", "dropped_by_kind", "kept_by_kind", "repaired_by_turn"):
        total: Counter = Counter()
        for part in parts:
            total.update(getattr(part, name))
        setattr(merged, name, dict(sorted(total.items())))
    for name in ("sample_checks_by_turn", "sample_checks_by_kind"):
        total = {}
        for part in parts:
            for key, (hits, checked) in getattr(part, name).items():
                previous = total.get(key, [0, 0])
                total[key] = [previous[0] + hits, previous[1] + checked]
        setattr(merged, name, dict(sorted(total.items())))
    merged.sample_adherence_by_turn = {turn: hits / checked for turn, (hits, checked) in merged.sample_checks_by_turn.items() if checked}
    merged.sample_adherence_by_kind = {kind: hits / checked for kind, (hits, checked) in merged.sample_checks_by_kind.items() if checked}
    answers = Counter()
    for part in parts:
        answers.update(part.answer_checks)
    merged.answer_checks = {key: answers[key] for key in ("checked", "with_repairs", "without_repairs")}
    merged.repairs = repair_summary(
        any(part.repairs.get("enabled") for part in parts),
        *(sum(part.repairs.get(key, 0) for part in parts) for key in ("n_answers", "n_dialogues", "kept_without_repairs")),
        merged.answer_checks,
    )
    return merged


# ---------------------------------------------------------------- ranking
class Ranker:
    """Scores adhering candidates: higher is better (`synthesis.ranking.by`)."""

    def __init__(self, ranking: RankingSection, reward_models=None, device: str | None = None):
        self.ranking = ranking
        self.scorer = None
        if ranking.by == "reward_model":
            from reward.gated import GatedScorer

            self.scorer = GatedScorer(reward_models, device=device)

    def scores(self, prompts: list[list[dict]], responses: list[str], is_safety: list[bool]) -> list[float]:
        by = self.ranking.by
        if not responses:
            return []
        if by == "first":
            return [0.0] * len(responses)
        if by == "shortest":
            return [-float(len(response)) for response in responses]
        if by == "gold":
            from core.sources import TOYWORLD, gold_judge

            judge = gold_judge(TOYWORLD)  # the config allows `gold` only with toyworld dialogues
            return [judge.helpfulness(prompt, response) for prompt, response in zip(prompts, responses, strict=True)]
        records = [{"messages": prompt, "category": "safety" if safe else "helpfulness"} for prompt, safe in zip(prompts, is_safety, strict=True)]
        return self.scorer.score(records, responses, where="GAtt synthesis").reward.tolist()


# ---------------------------------------------------------------- the loop
def synthesize(
    model,
    tokenizer,
    dialogues: list[Dialogue],
    instructions: list[Instruction],
    config: SynthesisSection,
    ranker: Ranker,
    seed: int = 0,
    short_probability: float = 0.0,
    progress: bool = True,
) -> tuple[list[dict], SynthesisStats]:
    """Synthesise GAtt training rows; `instructions[i]` goes with `dialogues[i]`.

    Each dialogue's instruction text (long, or short `short_probability` of the time)
    is drawn once: it is what the model sees in every user turn while sampling and
    what stays in turn 1 of the trained row. All live dialogues advance one turn at a
    time, so each turn is one batched `generate` call over (dialogues x K) conversations.
    """
    rng = random.Random(f"gatt:short:{seed}")
    states = [DialogueState(d, ins, instruction_text(ins, rng, short_probability)) for d, ins in zip(dialogues, instructions, strict=True)]
    stats = SynthesisStats(n_dialogues=len(states))
    dropped_at: Counter = Counter()
    dropped_kind: Counter = Counter()
    repaired: Counter = Counter()
    kind_hits: Counter = Counter()
    kind_total: Counter = Counter()
    n_turns = min(len(d.users) for d in dialogues) if dialogues else 0
    alive = states
    for turn in range(n_turns):
        if not alive:
            break
        # 1. the instruction appended to every user turn, K copies of each conversation
        prompts = [prompt_messages(s.dialogue, s.answers, s.text, "first_user", every_turn=True) for s in alive]
        k = config.k
        flat = [p for p in prompts for _ in range(k)]
        # 2. sample K answers per dialogue with the current model
        samples = generate(model, tokenizer, flat, turn_sampling(config.sampling, seed, turn), progress=progress, description=f"GAtt turn {turn + 1}")
        # 3. the checker (True, False, or None: unchecked), then the ranking of every
        # eligible sample (all of them when a failed turn is repaired from the best one)
        adheres = [s.instruction.check(samples[i * k + j]) for i, s in enumerate(alive) for j in range(k)]
        ok = eligible(adheres)
        to_score = list(range(len(flat))) if config.repair == "apply" else [i for i, good in enumerate(ok) if good]
        scored = ranker.scores([flat[i] for i in to_score], [samples[i] for i in to_score], [False] * len(to_score))
        scores = [float("-inf")] * len(flat)
        for index, score in zip(to_score, scored, strict=True):
            scores[index] = score
        stats.n_samples += len(flat)
        checked = [a for a in adheres if a is not None]
        if checked:
            stats.sample_checks_by_turn[turn + 1] = [sum(checked), len(checked)]
            stats.sample_adherence_by_turn[turn + 1] = sum(checked) / len(checked)
        for i, state in enumerate(alive):
            for j in range(k):
                for kind, result in part_results(state.instruction, samples[i * k + j]):
                    if result is not None:
                        kind_hits[kind] += int(result)
                        kind_total[kind] += 1
        # 4. keep the best eligible answer; else repair (if asked) or drop, and count it
        survivors = []
        for i, state in enumerate(alive):
            own = slice(i * k, (i + 1) * k)
            best = pick_best(ok[own], scores[own], config.min_score)
            if best is not None:
                state.answers.append(samples[i * k + best])
                state.adhering += int(adheres[i * k + best] is True)
            elif config.repair == "apply":
                state.answers.append(repair_answer(state.instruction, samples[own], scores[own]))
                state.repaired += 1
                repaired[turn + 1] += 1
            else:
                dropped_at[turn + 1] += 1
                dropped_kind[state.instruction.kind] += 1
                continue
            survivors.append(state)
        alive = survivors
    # 5. instruction kept in turn 1 only (in the dialogue's form), learn the last turn only
    records = []
    for state in alive:
        records.extend(training_records(state, config.instruction_position, config.examples))
    stats.n_kept = len(alive)
    stats.n_dropped = len(states) - len(alive)
    stats.n_examples = len(records)
    stats.dropped_at_turn = dict(sorted(dropped_at.items()))
    stats.dropped_by_kind = dict(sorted(dropped_kind.items()))
    stats.repaired_by_turn = dict(sorted(repaired.items()))
    stats.kept_by_kind = dict(sorted(Counter(s.instruction.kind for s in alive).items()))
    stats.sample_checks_by_kind = {kind: [kind_hits[kind], kind_total[kind]] for kind in sorted(kind_total)}
    stats.sample_adherence_by_kind = {kind: kind_hits[kind] / kind_total[kind] for kind in sorted(kind_total)}
    stats.n_unchecked = sum(not s.instruction.checked for s in states)
    stats.kept_unchecked = sum(not s.instruction.checked for s in alive)
    stats.n_short, stats.kept_short = sum(s.short for s in states), sum(s.short for s in alive)
    stats.n_combined = sum(bool(s.instruction.parts) for s in states)
    stats.kept_combined = sum(bool(s.instruction.parts) for s in alive)
    stats.answer_checks = answer_checks(alive)
    stats.repairs = repair_summary(config.repair == "apply", sum(s.repaired for s in alive), sum(s.repaired > 0 for s in alive),
                                   sum(s.repaired == 0 for s in alive), stats.answer_checks)
    return records, stats


def answer_checks(kept: list[DialogueState]) -> dict[str, int]:
    """The kept dialogues' checked answers, and how many adhere with the repairs (the
    rewritten answers as they were trained on) and without them."""
    checked = [s for s in kept if s.instruction.checked]
    answers = [(s, answer) for s in checked for answer in s.answers]
    return {"checked": len(answers), "with_repairs": sum(s.instruction.check(answer) is True for s, answer in answers),
            "without_repairs": sum(s.adhering for s in checked)}


def repair_summary(enabled: bool, n_answers: int, n_dialogues: int, kept_without_repairs: int, checks: dict[str, int]) -> dict:
    """Template repairs of the kept dialogues, and their checked answers' adherence with and without them."""
    n = checks["checked"]
    return {
        "enabled": enabled,
        "n_answers": n_answers,
        "n_dialogues": n_dialogues,
        "kept_without_repairs": kept_without_repairs,
        "adherence_with_repairs": checks["with_repairs"] / n if n else None,
        "adherence_without_repairs": checks["without_repairs"] / n if n else None,
    }
