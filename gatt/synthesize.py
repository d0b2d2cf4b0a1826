"""GAtt data synthesis (Llama 2, section 3.3), hand-written: no library has it.

For each multi-turn dialogue, one instruction from the library:

1. append the instruction to every user turn;
2. turn by turn, sample K answers with the current model, keep those that the
   instruction's checker accepts and take the best of them by reward (Llama 2's
   gated reward from two RMs, toyworld's gold judge, or a length heuristic); the
   chosen answer stays in context for the next turn. A turn with no adhering
   sample (scoring at least `min_score`, when set) drops the dialogue, and the drop
   is counted (by turn and kind); with `repair: apply` the best-scoring sample is
   rewritten to obey the instruction instead (for models too small to follow it
   even when it is repeated), and the repair is counted;
3. drop the instruction from every user turn but the first (or move it to the
   system message) and mark the example `learn: last`: the SFT stage then zeroes
   the loss on every token but the last answer's, so the earlier (sampled,
   adhering) answers are context the model learns to stay consistent with.

The output is an SFT JSONL (`{"messages", "learn": "last", "instruction", ...}`)
that `sft.train.run` trains with `data.learn: last`.
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


@dataclass
class DialogueState:
    """One dialogue being synthesised: its instruction and the answers chosen so far."""

    dialogue: Dialogue
    instruction: Instruction
    answers: list[str] = field(default_factory=list)


@dataclass
class SynthesisStats:
    n_dialogues: int = 0
    n_kept: int = 0
    n_dropped: int = 0
    n_examples: int = 0
    dropped_at_turn: dict[int, int] = field(default_factory=dict)  # 1-based turn -> dialogues dropped there
    dropped_by_kind: dict[str, int] = field(default_factory=dict)
    kept_by_kind: dict[str, int] = field(default_factory=dict)
    sample_adherence_by_turn: dict[int, float] = field(default_factory=dict)  # share of the K samples that adhered
    repaired_by_turn: dict[int, int] = field(default_factory=dict)  # 1-based turn -> answers rewritten (repair: apply)
    n_samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.n_dialogues} dialogues: {self.n_kept} kept, {self.n_dropped} dropped "
            f"(no adhering sample of K; by turn {self.dropped_at_turn}); "
            f"repaired answers by turn {self.repaired_by_turn}; {self.n_examples} training examples"
        )


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


def training_records(state: DialogueState, text: str, position: str, examples: str) -> list[dict]:
    """The finished dialogue as learn-last SFT rows: the instruction (`text`) only in turn 1."""
    ends = [len(state.answers)] if examples == "last" else list(range(1, len(state.answers) + 1))
    return [
        {
            "messages": dialogue_messages(state.dialogue, state.answers[:end], text, position, every_turn=False),
            "learn": "last",
            "id": f"{state.dialogue.id}" + ("" if examples == "last" else f"-t{end}"),
            "instruction": state.instruction.to_dict(),
            "instruction_text": text,
        }
        for end in ends
    ]


def turn_sampling(sampling: SamplingConfig, seed: int, turn: int) -> SamplingConfig:
    return sampling.model_copy(update={"seed": seed + sampling.seed + TURN_SEED_STRIDE * turn})


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

    All live dialogues advance one turn at a time, so each turn is one batched
    `generate` call over (dialogues x K) conversations.
    """
    states = [DialogueState(d, ins) for d, ins in zip(dialogues, instructions, strict=True)]
    stats = SynthesisStats(n_dialogues=len(states))
    dropped_at: Counter = Counter()
    dropped_kind: Counter = Counter()
    repaired: Counter = Counter()
    n_turns = min(len(d.users) for d in dialogues) if dialogues else 0
    alive = states
    for turn in range(n_turns):
        if not alive:
            break
        # 1. the instruction appended to every user turn, K copies of each conversation
        prompts = [prompt_messages(s.dialogue, s.answers, s.instruction.text, "first_user", every_turn=True) for s in alive]
        k = config.k
        flat = [p for p in prompts for _ in range(k)]
        # 2. sample K answers per dialogue with the current model
        samples = generate(model, tokenizer, flat, turn_sampling(config.sampling, seed, turn), progress=progress, description=f"GAtt turn {turn + 1}")
        # 3. the checker, then the ranking, of every sample (only adhering ones
        # need a score unless a failed turn is repaired from the best sample)
        adheres = [s.instruction.check(samples[i * k + j]) for i, s in enumerate(alive) for j in range(k)]
        to_score = list(range(len(flat))) if config.repair == "apply" else [i for i, ok in enumerate(adheres) if ok]
        scored = ranker.scores([flat[i] for i in to_score], [samples[i] for i in to_score], [False] * len(to_score))
        scores = [float("-inf")] * len(flat)
        for index, score in zip(to_score, scored, strict=True):
            scores[index] = score
        stats.n_samples += len(flat)
        stats.sample_adherence_by_turn[turn + 1] = sum(adheres) / len(adheres)
        # 4. keep the best adhering answer; else repair (if asked) or drop, and count it
        survivors = []
        for i, state in enumerate(alive):
            own = slice(i * k, (i + 1) * k)
            best = pick_best(adheres[own], scores[own], config.min_score)
            if best is not None:
                state.answers.append(samples[i * k + best])
            elif config.repair == "apply":
                state.answers.append(repair_answer(state.instruction, samples[own], scores[own]))
                repaired[turn + 1] += 1
            else:
                dropped_at[turn + 1] += 1
                dropped_kind[state.instruction.kind] += 1
                continue
            survivors.append(state)
        alive = survivors
    # 5. instruction kept in turn 1 only (sometimes shortened), learn the last turn only
    rng = random.Random(f"gatt:short:{seed}")
    records = []
    for state in alive:
        text = instruction_text(state.instruction, rng, short_probability)
        records.extend(training_records(state, text, config.instruction_position, config.examples))
    stats.n_kept = len(alive)
    stats.n_dropped = len(states) - len(alive)
    stats.n_examples = len(records)
    stats.dropped_at_turn = dict(sorted(dropped_at.items()))
    stats.dropped_by_kind = dict(sorted(dropped_kind.items()))
    stats.repaired_by_turn = dict(sorted(repaired.items()))
    stats.kept_by_kind = dict(sorted(Counter(s.instruction.kind for s in alive).items()))
    return records, stats
