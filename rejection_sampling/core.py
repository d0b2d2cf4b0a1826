"""Pure functions of rejection sampling: selection over the pool, the max/median curve, gold comparison.

No model and no I/O here, so every rule is unit-tested against hand-computed values.

Llama 2 (arXiv 2307.09288, section 3.2.3, "Rejection Sampling") samples K answers
per prompt from the latest policy, scores them with the reward model and keeps the
best as a new fine-tuning target. Up to RLHF V3 the targets came only from the
last iteration's samples, which caused regressions (forgotten capabilities);
from then on the best answer per prompt is taken **over the samples of every
iteration so far**. `select_best` implements that pooled choice: its input is
the samples of every iteration (this one and `pool_dirs`), its output one
winner per prompt id. Figure 7 of the paper plots, against the number of samples
k, the mean over prompts of the maximum and of the median reward among k samples;
the gap between the two is what rejection sampling harvests
(`max_median_curve`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from core.evaluation import mean_stderr, paired_comparison  # noqa: F401 - one copy, shared

# Every sample record written by the sampler carries these keys (see sample.py).
SAMPLE_KEYS = ("prompt_id", "iteration", "shard", "sample_index", "response", "reward")


def _rank_key(sample: dict) -> tuple:
    """Sort key: the highest gated reward first; ties broken deterministically.

    A tie (same reward) goes to the earlier iteration, then the lower shard and
    sample index, then the response text, so the winner never depends on the
    order in which folders or shards were read.
    """
    reward = sample["reward"]
    if reward is None or (isinstance(reward, float) and math.isnan(reward)):
        raise ValueError(f"sample {sample.get('prompt_id')!r}/{sample.get('sample_index')!r} has no reward")
    return (
        -float(reward),
        int(sample["iteration"]),
        int(sample.get("shard", 0)),
        int(sample["sample_index"]),
        str(sample["response"]),
    )


def select_best(samples: Iterable[dict]) -> dict[str, dict]:
    """The best sample per prompt id, over all the samples given (every iteration pooled).

    Args:
        samples: sample records with at least `prompt_id`, `iteration`,
            `sample_index`, `response` and `reward` (Llama 2's gated reward R_c,
            so helpfulness and safety prompts are ranked by the right model).
            Empty responses are never selected (an empty answer is no target);
            a prompt whose every sample is empty has no winner.

    Returns:
        {prompt_id: the winning sample record (the same dict object)}, with ids
        in sorted order.
    """
    best: dict[str, tuple[tuple, dict]] = {}
    for sample in samples:
        if not str(sample["response"]).strip():
            continue
        key = _rank_key(sample)
        pid = str(sample["prompt_id"])
        if pid not in best or key < best[pid][0]:
            best[pid] = (key, sample)
    return {pid: best[pid][1] for pid in sorted(best)}


def sample_ks(k_max: int) -> list[int]:
    """1, 2, 4, ... up to k_max, with k_max itself always last (e.g. 10 -> 1, 2, 4, 8, 10)."""
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    ks, k = [], 1
    while k < k_max:
        ks.append(k)
        k *= 2
    ks.append(k_max)
    return ks


def max_median_curve(rewards: torch.Tensor) -> list[dict]:
    """The paper's Figure 7: mean over prompts of the max and the median reward among the first k samples.

    Args:
        rewards: (P, K) reward of sample j of prompt i, in sampling order.

    Returns:
        one dict per k in `sample_ks(K)`: `{"k", "max", "median", "gap"}`, where
        `max` is mean_i max_{j<k} rewards[i, j], `median` is mean_i median_{j<k}
        rewards[i, j] (the true median: for even k the mean of the two middle
        values, as `torch.quantile(q=0.5)` computes), `gap = max - median`.
    """
    if rewards.dim() != 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise ValueError(f"rewards must be a non-empty (P, K) tensor, got shape {tuple(rewards.shape)}")
    if torch.isnan(rewards).any():
        raise ValueError("rewards contain NaN")
    rewards = rewards.double()
    curve = []
    for k in sample_ks(rewards.shape[1]):
        first = rewards[:, :k]
        best = first.max(dim=1).values.mean().item()
        median = torch.quantile(first, 0.5, dim=1).mean().item()
        curve.append({"k": k, "max": best, "median": median, "gap": best - median})
    return curve


def median_index(rewards: Sequence[float]) -> int:
    """Index of the median-reward sample (the lower middle one for an even count; ties by index)."""
    if not rewards:
        raise ValueError("no rewards")
    order = sorted(range(len(rewards)), key=lambda j: (rewards[j], j))
    return order[(len(order) - 1) // 2]


def chosen_vs_median(groups: dict[str, list[dict]], gold: dict[tuple[str, int, int], float]) -> dict:
    """Gold score of the chosen (max-reward) answer against the median-reward answer of each prompt.

    This checks the reward models against ground truth on this iteration's own
    samples: if ranking by R_c works, the answer it picks is better by the gold
    judges than a typical (median) answer.

    Args:
        groups: {prompt_id: this iteration's samples of that prompt}.
        gold: {(prompt_id, iteration, sample_index): gold combined score}.

    Returns:
        `paired_comparison(chosen, median)` plus the mean gold score of all samples.
    """
    chosen, median, every = [], [], []
    for pid in sorted(groups):
        group = sorted(groups[pid], key=lambda s: int(s["sample_index"]))
        winner = select_best(group)
        if pid not in winner:
            continue  # every sample empty: no chosen answer to compare
        best = winner[pid]
        mid = group[median_index([float(s["reward"]) for s in group])]
        chosen.append(gold[(pid, int(best["iteration"]), int(best["sample_index"]))])
        median.append(gold[(pid, int(mid["iteration"]), int(mid["sample_index"]))])
        every.extend(gold[(pid, int(s["iteration"]), int(s["sample_index"]))] for s in group)
    result = paired_comparison(chosen, median)
    result = {"n": result["n"], "chosen": result["after"], "chosen_stderr": result["after_stderr"],
              "median": result["before"], "median_stderr": result["before_stderr"],
              "diff": result["diff"], "diff_stderr": result["diff_stderr"],
              "wins": result["wins"], "losses": result["losses"]}
    result["all_samples"], result["all_samples_stderr"] = mean_stderr(every)
    return result
