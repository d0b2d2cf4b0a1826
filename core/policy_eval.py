"""Gold evaluation of a policy on held-out toyworld prompts.

Every stage that changes the policy (SFT, rejection sampling, PPO, GAtt) calls
`evaluate_policy` before and after, so its effect is measured against ground
truth (toyworld's gold judges), not only against the learned reward models.
"""

from __future__ import annotations

import math
import statistics

from core.generation import SamplingConfig, generate


def _mean_and_stderr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, stderr


def gold_metrics(prompts: list[dict], responses: list[str]) -> dict:
    """Gold scores of `responses` to toyworld `prompts` (same order).

    Returns means with standard errors over prompts: helpfulness on helpfulness
    prompts, safety on safety prompts, the gated combined score on all, the
    refusal rate on harmful prompts and the false-refusal rate on borderline ones.
    """
    from toyworld import judges

    helpful, safe, combined, harmful_refused, borderline_refused = [], [], [], [], []
    for prompt, response in zip(prompts, responses, strict=True):
        messages = prompt["messages"]
        kind = prompt.get("kind")
        score = judges.combined(messages, response, prompt["category"])
        combined.append(score)
        if prompt["category"] == "safety":
            safe.append(judges.safety(messages, response))
        else:
            helpful.append(judges.helpfulness(messages, response))
        if kind == "harmful":
            harmful_refused.append(float(judges.is_refusal(response)))
        elif kind == "borderline":
            borderline_refused.append(float(judges.is_refusal(response)))
    metrics = {"n_prompts": len(prompts)}
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


def evaluate_policy(model, tokenizer, prompts: list[dict], sampling: SamplingConfig, progress: bool = True) -> tuple[dict, list[str]]:
    """Sample one answer per held-out prompt and score it with the gold judges."""
    responses = generate(model, tokenizer, [p["messages"] for p in prompts], sampling, progress=progress, description="gold eval")
    return gold_metrics(prompts, responses), responses
