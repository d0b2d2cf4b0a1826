"""Builders of the toy world's datasets, deterministic for a seed.

    build_prompts(split, n, seed, family)     Prompt records for RL and evaluation
    build_eval_prompts(n, seed)               held-out prompts for gold evaluation
    build_sft_examples(split, n, seed)        demonstrations for SFT
    build_preference_pairs(split, n, seed)    rated pairs for the two reward models
    build_dialogues(split, n, n_turns, seed)  multi-turn benign dialogues for GAtt
    sample_candidate_responses(prompt, rng, n), annotate(prompt, a, b, rng)

Splits ``train`` and ``heldout`` are disjoint by item (see `toyworld.tasks`), so
no prompt text appears in both; harmful requests are also framed differently in
each split (held-out frames as well as held-out goals), and the candidate responses
of a split's preference pairs are written from that split's material only, so no
response text of a held-out pair appears in a training pair.

Prompt records are ``{"messages", "category", "id", "kind"}``. ``kind`` is the
family: capital, arithmetic, list, translation, opposite, format, harmful or
borderline. Harmful *and* borderline prompts have category "safety": borderline
prompts are the safety set's false-refusal probes (Llama 2 collected its
borderline prompts with the safety data), so safety-gated rewards see them; the gold
combined score judges them by helpfulness (`toyworld.judges.combined`), so a false
refusal there scores low. About one prompt in five starts with a system message.

Mix of families (weights): capital 14, arithmetic 14, list 12, translation 12,
opposite 8, format 12, harmful 16, borderline 12. Builders return unique prompt
texts; a split with fewer unique prompts than asked for returns fewer
(the held-out split has 36 unique borderline prompts, 9 requests in 4 framings, and
120 harmful ones, 12 requests in 10 frames; the training split 297 harmful ones, 27
requests in 11 frames).
"""

from __future__ import annotations

import hashlib
import random

from toyworld import tables, tasks
from toyworld.annotators import annotate, guideline_for
from toyworld.candidates import sample_candidate_responses
from toyworld.tasks import Task

__all__ = [
    "FAMILY_WEIGHTS",
    "annotate",
    "build_dialogues",
    "build_eval_prompts",
    "build_preference_pairs",
    "build_prompts",
    "build_sft_examples",
    "sample_candidate_responses",
    "sample_task",
]

FAMILY_WEIGHTS: dict[str, float] = {
    "capital": 14, "arithmetic": 14, "list": 12, "translation": 12, "opposite": 8,
    "format": 12, "harmful": 16, "borderline": 12,
}
DEFAULT_SIZES = {"train": 400, "heldout": 200}
SYSTEM_PROBABILITY = 0.2
DIALOGUE_KINDS = ("capital", "arithmetic", "list", "translation", "opposite")

_BORDERLINE_FRAMES = ("{prompt}", "Quick question: {prompt}", "{prompt} Thanks!", "Can you help me? {prompt}")


def _rng(purpose: str, split: str, seed: int) -> random.Random:
    tasks._check_split(split)
    return random.Random(f"toyworld:{purpose}:{split}:{seed}")


def family_weights(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """FAMILY_WEIGHTS with some families re-weighted (unknown families are an error)."""
    unknown = sorted(set(overrides or {}) - set(FAMILY_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown toyworld families {unknown} (known: {', '.join(FAMILY_WEIGHTS)})")
    return {**FAMILY_WEIGHTS, **(overrides or {})}


def sample_task(split: str, rng: random.Random, family: str | None = None, weights: dict[str, float] | None = None) -> Task:
    """A random task of `split`, of `family` or of a family drawn from `weights` (default FAMILY_WEIGHTS)."""
    weights = weights or FAMILY_WEIGHTS
    family = family or rng.choices(list(weights), list(weights.values()))[0]
    if family == "format":
        while True:
            kind = rng.choice(("capital", "translation", "opposite", "list"))
            task = Task(kind, rng.choice(tasks.items(kind, split)), rng.choice(tasks.MODIFIERS))
            if tasks.accepts_modifier(task, task.modifier):
                return task
    return Task(family, rng.choice(tasks.items(family, split)))


def _user_text(task: Task, rng: random.Random) -> str:
    text = tasks.render(task, rng)
    if task.kind == "borderline":
        text = rng.choice(_BORDERLINE_FRAMES).format(prompt=text)
    return text


def _messages(user_text: str, rng: random.Random) -> list[dict]:
    messages = []
    if rng.random() < SYSTEM_PROBABILITY:
        messages.append({"role": "system", "content": rng.choice(tables.SYSTEM_PROMPTS)})
    messages.append({"role": "user", "content": user_text})
    return messages


def _prompt_id(split: str, task: Task, messages: list[dict]) -> str:
    digest = hashlib.md5("\n".join(m["content"] for m in messages).encode("utf-8")).hexdigest()[:10]
    return f"tw-{split}-{task.family}-{digest}"


def _unique_tasks(
    split: str, n: int, rng: random.Random, family: str | None = None, weights: dict[str, float] | None = None
) -> list[tuple[Task, str]]:
    """Up to `n` (task, user text) pairs with distinct user texts."""
    found: dict[str, Task] = {}
    for _ in range(50 * n + 100):
        if len(found) >= n:
            break
        task = sample_task(split, rng, family, weights)
        found.setdefault(_user_text(task, rng), task)
    return [(task, text) for text, task in found.items()]


def _prompt_record(split: str, task: Task, text: str, rng: random.Random) -> dict:
    messages = _messages(text, rng)
    return {"messages": messages, "category": task.category, "id": _prompt_id(split, task, messages), "kind": task.family}


def build_prompts(split: str = "train", n: int | None = None, seed: int = 0, family: str | None = None) -> list[dict]:
    """`n` unique Prompt records of `split` (default 400 train, 200 held-out),
    from the family mix or, with `family`, of that family only."""
    rng = _rng("prompts" if family is None else f"prompts:{family}", split, seed)
    n = DEFAULT_SIZES[split] if n is None else n
    return [_prompt_record(split, task, text, rng) for task, text in _unique_tasks(split, n, rng, family)]


def build_eval_prompts(n: int, seed: int = 0) -> list[dict]:
    """Held-out prompts for gold evaluation: `n` from the family mix plus every
    other held-out borderline prompt (36 in all).

    Borderline prompts are 12 % of the mix, too few on their own to measure a
    change in the false-refusal rate; adding all of them cuts its standard error.
    """
    prompts = build_prompts("heldout", n, seed)
    seen = {p["messages"][-1]["content"] for p in prompts}
    for prompt in build_prompts("heldout", 4 * DEFAULT_SIZES["heldout"], seed, family="borderline"):
        if prompt["messages"][-1]["content"] not in seen:
            seen.add(prompt["messages"][-1]["content"])
            prompts.append(prompt)
    return prompts


def build_sft_examples(split: str = "train", n: int = 300, seed: int = 0, weights: dict[str, float] | None = None) -> list[dict]:
    """`n` demonstrations `{"messages": [(system,) user, assistant]}`: right answers,
    polite refusals to harmful requests, real help on borderline ones. `weights`
    re-weights families (e.g. more borderline demonstrations against over-refusal)."""
    rng = _rng("sft", split, seed)
    examples = []
    for task, text in _unique_tasks(split, n, rng, weights=family_weights(weights) if weights else None):
        messages = _messages(text, rng)
        messages.append({"role": "assistant", "content": tasks.gold_answer(task, rng)})
        examples.append({"messages": messages})
    return examples


def build_preference_pairs(split: str = "train", n: int = 1000, seed: int = 0, noise: float | None = None) -> list[dict]:
    """`n` rated Preference pairs: two candidates per prompt judged by a simulated annotator.

    Each pair draws a fresh prompt from the family mix, so prompts can repeat
    (with different candidates), as when several annotators see one prompt. A
    pair's category is its annotator's guideline (`annotators.guideline_for`):
    helpfulness for every helpfulness prompt and a quarter of the safety ones.
    """
    rng = _rng("preferences", split, seed)
    kwargs = {} if noise is None else {"noise": noise}
    pairs = []
    for _ in range(n):
        task = sample_task(split, rng)
        prompt = _prompt_record(split, task, _user_text(task, rng), rng)
        response_a, response_b = sample_candidate_responses(prompt, rng, 2)
        guideline = guideline_for(prompt["category"], rng)
        pairs.append(annotate(prompt, response_a, response_b, rng, category=guideline, **kwargs))
    return pairs


def build_dialogues(split: str = "train", n: int = 100, n_turns: int = 4, seed: int = 0) -> list[dict]:
    """`n` dialogues of `n_turns` benign user requests, each answered with a gold answer.

    Used by Ghost Attention: the GAtt stage adds a system instruction, re-samples
    the assistant turns and keeps those that obey it.
    """
    rng = _rng("dialogues", split, seed)
    dialogues = []
    for index in range(n):
        messages: list[dict] = []
        seen: set[Task] = set()
        while len(messages) < 2 * n_turns:
            task = sample_task(split, rng, rng.choice(DIALOGUE_KINDS))
            if task in seen:  # never ask the same thing twice in one dialogue
                continue
            seen.add(task)
            text = tasks.render(task, rng)
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": tasks.gold_answer(task, rng)})
        dialogues.append({"messages": messages, "id": f"tw-{split}-dialogue-{seed}-{index:05d}"})
    return dialogues
