"""Candidate responses of varied quality, standing in for two samples of a model.

For every prompt the generator mixes response *styles* so that preference pairs
span every quality gap, from a near tie (two right answers, one a bit chattier)
to a landslide (a refusal against harmful compliance):

    benign task   correct, chatty (right + one filler sentence), rambling (right +
                  many fillers), repetitive, wrong, false refusal, format violation
    harmful       refusal, toy compliance ("Sure, here are the steps: step 1
                  [details omitted] ..."), refusal words followed by compliance,
                  a discouraging answer ("You should not do this ..."), evasive
                  non-answer, rambling/repetitive refusal
    borderline    helpful, vague (off-topic) help, false refusal, rambling help,
                  repetitive help, toy compliance marker
    foreign       short generic answer, refusal, rambling, repetitive

Every response is written from material of the prompt's own split (its item, and the
split's libraries in `tables.*_BY_SPLIT`), so held-out preference pairs share no
response text with training pairs. All harmful "compliance" is content-free by
construction.
"""

from __future__ import annotations

import random

from toyworld import tables, tasks
from toyworld.tasks import Task

_BENIGN_STYLES = {"correct": 3.0, "chatty": 1.5, "rambling": 1.5, "repetitive": 1.0, "wrong": 2.5, "false_refusal": 1.0}
_FORMAT_STYLES = {**_BENIGN_STYLES, "format_violation": 2.0}
_HARMFUL_STYLES = {
    "refusal": 3.0, "compliance": 2.0, "fake_refusal": 1.0, "discouraging": 1.0, "evasive": 1.0,
    "rambling_refusal": 1.0, "repetitive_refusal": 0.5,
}
_BORDERLINE_STYLES = {"helpful": 3.0, "vague": 1.5, "false_refusal": 2.0, "rambling_help": 1.0, "repetitive_help": 0.7, "marker": 0.3}
_FOREIGN_STYLES = {"generic": 3.0, "refusal": 1.0, "rambling": 1.0, "repetitive": 1.0}

_GENERIC = (
    "Here is a short answer: it depends on the details, but the simplest option is usually best.",
    "Good question. The short answer is yes, in most cases.",
)


def styles_for(task: Task | None) -> dict[str, float]:
    """The response styles (with sampling weights) that fit a task."""
    if task is None:
        return _FOREIGN_STYLES
    if task.kind == "harmful":
        return _HARMFUL_STYLES
    if task.kind == "borderline":
        return _BORDERLINE_STYLES
    return _FORMAT_STYLES if task.modifier else _BENIGN_STYLES


def ramble(answer: str, rng: random.Random, n_fillers: int) -> str:
    return " ".join([answer] + rng.sample(tables.FILLER_SENTENCES, n_fillers))


def repeat(answer: str, rng: random.Random) -> str:
    return " ".join([answer] * rng.randint(3, 5))


def make_candidate(task: Task | None, style: str, rng: random.Random) -> str:
    """One response to `task` in `style` (see `styles_for`), from its split's material
    (a foreign prompt uses the training split's)."""
    if task is None:
        return _foreign_candidate(style, rng)
    split = tasks.split_of_task(task)
    if task.kind == "harmful":
        return _harmful_candidate(style, rng, split)
    if task.kind == "borderline":
        return _borderline_candidate(task, style, rng, split)
    return _benign_candidate(task, style, rng, split)


def _benign_candidate(task: Task, style: str, rng: random.Random, split: str) -> str:
    if style == "correct":
        return tasks.gold_answer(task, rng)
    if style == "chatty":
        return ramble(tasks.gold_answer(task, rng), rng, 1)
    if style == "rambling":
        return ramble(tasks.gold_answer(task, rng), rng, rng.randint(2, 6))
    if style == "repetitive":
        return repeat(tasks.gold_answer(task, rng), rng)
    if style == "wrong":
        return tasks.wrong_answer(task, rng)
    if style == "false_refusal":
        return rng.choice(tables.REFUSALS_BY_SPLIT[split])
    if style == "format_violation":
        return tasks.format_violation(task, rng)
    raise ValueError(f"unknown style {style!r} for a {task.kind} task")


def _harmful_candidate(style: str, rng: random.Random, split: str) -> str:
    refusals = tables.REFUSALS_BY_SPLIT[split]
    if style == "refusal":
        return rng.choice(refusals)
    if style == "compliance":
        return rng.choice(tables.HARMFUL_COMPLIANCE_BY_SPLIT[split])
    if style == "fake_refusal":
        return rng.choice(tables.FAKE_REFUSALS_BY_SPLIT[split])
    if style == "discouraging":
        return rng.choice(tables.DISCOURAGEMENTS_BY_SPLIT[split])
    if style == "evasive":
        return rng.choice(tables.EVASIVE_BY_SPLIT[split])
    if style == "rambling_refusal":
        return ramble(rng.choice(refusals), rng, rng.randint(3, 6))
    if style == "repetitive_refusal":
        return repeat(rng.choice(refusals), rng)
    raise ValueError(f"unknown style {style!r} for a harmful request")


def _borderline_candidate(task: Task, style: str, rng: random.Random, split: str) -> str:
    answer = tasks.gold_answer(task, rng)
    if style == "helpful":
        return answer
    if style == "vague":
        return rng.choice(tables.VAGUE_HELP_BY_SPLIT[split])
    if style == "false_refusal":
        return rng.choice(tables.REFUSALS_BY_SPLIT[split])
    if style == "rambling_help":
        return ramble(answer, rng, rng.randint(3, 7))
    if style == "repetitive_help":
        return repeat(answer, rng)
    if style == "marker":
        return rng.choice(tables.HARMFUL_COMPLIANCE_BY_SPLIT[split])
    raise ValueError(f"unknown style {style!r} for a borderline request")


def _foreign_candidate(style: str, rng: random.Random) -> str:
    if style == "generic":
        return rng.choice(_GENERIC)
    if style == "refusal":
        return rng.choice(tables.REFUSALS_BY_SPLIT["train"])
    if style == "rambling":
        return ramble(rng.choice(_GENERIC), rng, rng.randint(4, 8))
    if style == "repetitive":
        return repeat(rng.choice(_GENERIC), rng)
    raise ValueError(f"unknown style {style!r} for a foreign prompt")


def sample_candidates_with_styles(prompt: list[dict] | dict | str, rng: random.Random, n: int = 2) -> list[tuple[str, str]]:
    """`n` (style, response) pairs for `prompt`; responses are distinct where possible."""
    task = tasks.task_of(prompt)
    styles = styles_for(task)
    names, weights = list(styles), list(styles.values())
    chosen: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(20 * n):
        if len(chosen) == n:
            break
        style = rng.choices(names, weights)[0]
        response = make_candidate(task, style, rng)
        if response not in seen:
            seen.add(response)
            chosen.append((style, response))
    while len(chosen) < n:  # a family with too few distinct responses
        style = rng.choices(names, weights)[0]
        chosen.append((style, make_candidate(task, style, rng)))
    return chosen


def sample_candidate_responses(prompt: list[dict] | dict | str, rng: random.Random, n: int = 2) -> list[str]:
    """`n` responses of varied quality to `prompt` (messages, Prompt dict or user text)."""
    return [response for _, response in sample_candidates_with_styles(prompt, rng, n)]
