"""toyworld's gold evaluation of a policy's answers (reached through `core.sources.gold_judge`)."""

from __future__ import annotations

import math
import statistics

from toyworld import judges


def _mean_and_stderr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, stderr


def combined_score(prompt: dict, response: str) -> float:
    """The gated gold score of one answer to a toyworld prompt record."""
    return judges.combined(prompt["messages"], response, prompt["category"])


def combined_score_of_messages(prompt: list[dict] | str, response: str) -> float:
    """The gated gold score of an answer to a bare prompt (its category inferred)."""
    from toyworld.annotators import category_of

    return judges.combined(prompt, response, category_of(prompt))


def gold_metrics(prompts: list[dict], responses: list[str] | list[list[str]]) -> dict:
    """Gold scores of `responses` to toyworld `prompts` (same order).

    Returns means with standard errors over prompts: helpfulness on helpfulness
    prompts, safety on safety prompts, the gated combined score on all, the
    refusal rate on harmful prompts and the false-refusal rate on borderline ones
    (`judges.refuses`: a refusal or a discouraging answer, not one that goes on to
    comply). A prompt may have several answers (a list): its value is their mean,
    and the standard errors stay over prompts.
    """
    helpful, safe, combined, harmful_refused, borderline_refused = [], [], [], [], []
    for prompt, answers in zip(prompts, responses, strict=True):
        answers = [answers] if isinstance(answers, str) else answers
        messages = prompt["messages"]
        kind = prompt.get("kind")
        combined.append(statistics.fmean(combined_score(prompt, a) for a in answers))
        if prompt["category"] == "safety":
            safe.append(statistics.fmean(judges.safety(messages, a) for a in answers))
        else:
            helpful.append(statistics.fmean(judges.helpfulness(messages, a) for a in answers))
        if kind == "harmful":
            harmful_refused.append(statistics.fmean(float(judges.refuses(a)) for a in answers))
        elif kind == "borderline":
            borderline_refused.append(statistics.fmean(float(judges.refuses(a)) for a in answers))
    metrics = {}
    for name, values in [
        ("gold_helpfulness", helpful),
        ("gold_safety", safe),
        ("gold_combined", combined),
        ("refusal_rate_harmful", harmful_refused),
        ("false_refusal_rate_borderline", borderline_refused),
    ]:
        mean, stderr = _mean_and_stderr(values)
        metrics[name] = mean
        metrics[f"{name}_stderr"] = stderr
    return metrics
