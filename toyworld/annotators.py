"""Simulated annotators: two responses to one prompt -> a rated preference pair.

The annotator scores both responses by its guideline (below), adds Gaussian noise
(each annotator sees quality a little differently), picks the higher as
*chosen*, and rates the noisy gap on Llama 2's 4-level scale:

    gap > 0.6    significantly_better
    gap > 0.35   better
    gap > 0.15   slightly_better
    otherwise    negligibly_better

At small true gaps the noise can flip which response is chosen, which is what
makes "negligibly better" pairs hard to rank, as in the paper's Table 8.
`gold_agreement` measures how hard: whether the noise-free score agrees with the
annotator's choice. Averaged over pairs it is the best accuracy any reward model can
expect on them (the noise is independent of the text, so beyond the noise-free
ordering nothing predicts it).

A pair's `category` is the guideline its annotator followed, as Llama 2 collected
Meta Helpfulness and Meta Safety data under two protocols. The score an annotator
compares (`annotator_score`):
    helpfulness guideline: `judges.fulfilment`, how well the response does what was
    asked, blind to safety (on a harmful request, toy compliance beats a refusal);
    safety guideline: safety x (0.5 + 0.5 x gold helpfulness): safety decides, and
    among equally safe responses the more helpful one wins (so a false refusal on a
    borderline prompt loses to real help, and a refusal that offers an alternative
    beats a curt one).
Helpfulness annotators see prompts of every kind, a few of them risky
(`HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS`), and there they prefer the
compliant answer that safety annotators reject: the tension between the two
objectives that made Llama 2 train two reward models instead of one.
"""

from __future__ import annotations

import random

from toyworld import judges, tasks

RATING_THRESHOLDS = (
    (0.6, "significantly_better"),
    (0.35, "better"),
    (0.15, "slightly_better"),
)
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
DEFAULT_NOISE = 0.08
# Of the pairs on safety prompts (harmful and borderline requests), the share rated
# under the helpfulness guideline (the rest under the safety guideline).
HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS = 0.25


def annotator_score(prompt: list[dict] | dict | str, response: str, category: str) -> float:
    """The gold score an annotator following the `category` guideline compares (see
    the module docstring)."""
    if category == "safety":
        return judges.safety(prompt, response) * (0.5 + 0.5 * judges.helpfulness(prompt, response))
    return judges.fulfilment(prompt, response)


def guideline_for(prompt_category: str, rng: random.Random, share: float = HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS) -> str:
    """The guideline a pair on a prompt of `prompt_category` is rated under: the
    helpfulness guideline for helpfulness prompts and for `share` of the safety ones
    (one draw of `rng` per safety prompt)."""
    if prompt_category == "safety" and rng.random() >= share:
        return "safety"
    return "helpfulness"


def gold_agreement(pair: dict) -> float:
    """1.0 where the noise-free annotator score prefers the pair's chosen response,
    0.0 where it prefers the rejected one, 0.5 where it ties (then the noise alone
    chose, and any ranking is right half the time)."""
    category = pair.get("category") or category_of(pair["prompt"])
    gap = annotator_score(pair["prompt"], pair["chosen"], category) - annotator_score(pair["prompt"], pair["rejected"], category)
    if abs(gap) <= 1e-9:
        return 0.5
    return 1.0 if gap > 0 else 0.0


def rating_for_gap(gap: float) -> str:
    for threshold, rating in RATING_THRESHOLDS:
        if gap > threshold:
            return rating
    return "negligibly_better"


def category_of(prompt: list[dict] | dict | str) -> str:
    """A Prompt dict's own category, else the world's (foreign prompts that look
    harmful count as safety prompts)."""
    if isinstance(prompt, dict) and prompt.get("category"):
        return prompt["category"]
    task = tasks.task_of(prompt)
    if task is not None:
        return task.category
    return "safety" if judges.looks_harmful(tasks.last_user_text(prompt)) else "helpfulness"


def annotate(
    prompt: list[dict] | dict,
    response_a: str,
    response_b: str,
    rng: random.Random,
    noise: float = DEFAULT_NOISE,
    category: str | None = None,
    source: str = "toyworld",
) -> dict:
    """A Preference pair for two responses to `prompt` (messages or a Prompt dict),
    rated under the `category` guideline. Without one, the prompt's own category is
    used (the safety guideline on every safety prompt, no protocol draw): datasets
    draw it with `guideline_for`."""
    category = category or category_of(prompt)
    messages = prompt["messages"] if isinstance(prompt, dict) else prompt
    noisy_a = annotator_score(messages, response_a, category) + rng.gauss(0.0, noise)
    noisy_b = annotator_score(messages, response_b, category) + rng.gauss(0.0, noise)
    chosen, rejected = (response_a, response_b) if noisy_a >= noisy_b else (response_b, response_a)
    return {
        "prompt": [dict(m) for m in messages],
        "chosen": chosen,
        "rejected": rejected,
        "rating": rating_for_gap(abs(noisy_a - noisy_b)),
        "category": category,
        "chosen_safe": judges.is_safe(messages, chosen),
        "rejected_safe": judges.is_safe(messages, rejected),
        "source": source,
    }
