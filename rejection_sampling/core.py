"""Pure functions of rejection sampling: selection over the pool, the max/median curve, gold comparison and agreement.

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
(`max_median_curve`). The paper re-tunes the temperature every iteration
(section 3.2.3, Figure 8): `choose_temperature` picks, from a small grid, the
temperature whose K samples have the largest mean (max - median) gap.

A sample cut at `max_new_tokens` (no end-of-turn token, `finished: false`) or
with an empty answer is never a target (`is_eligible`): the fine-tune would
teach the model to stop mid-sentence. `target_counts` counts them.
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


def is_eligible(sample: dict) -> bool:
    """Whether a sample can be a fine-tuning target: a non-empty answer that ended with
    its end-of-turn token. `finished` missing (samples written before it was recorded)
    counts as finished: it cannot be told afterwards; `target_counts` counts them."""
    return bool(str(sample["response"]).strip()) and sample.get("finished", True) is not False


def select_best(samples: Iterable[dict]) -> dict[str, dict]:
    """The best sample per prompt id, over all the samples given (every iteration pooled).

    Args:
        samples: sample records with at least `prompt_id`, `iteration`,
            `sample_index`, `response` and `reward` (Llama 2's gated reward R_c,
            so helpfulness and safety prompts are ranked by the right model).
            Empty and truncated (`finished: false`) responses are never selected
            (`is_eligible`); a prompt with no eligible sample has no winner.

    Returns:
        {prompt_id: the winning sample record (the same dict object)}, with ids
        in sorted order.
    """
    best: dict[str, tuple[tuple, dict]] = {}
    for sample in samples:
        if not is_eligible(sample):
            continue
        key = _rank_key(sample)
        pid = str(sample["prompt_id"])
        if pid not in best or key < best[pid][0]:
            best[pid] = (key, sample)
    return {pid: best[pid][1] for pid in sorted(best)}


def target_counts(samples: Iterable[dict]) -> dict[str, int]:
    """How many samples and prompts the eligibility rule leaves out.

    Returns:
        `n_samples`, `n_truncated` (finished is False), `n_empty` (empty answer,
        finished or not), `n_finished_unknown` (no `finished` recorded), `n_prompts`,
        `n_prompts_all_truncated` (every sample of the prompt truncated: it gets
        no target), `n_prompts_without_target` (no eligible sample, for any reason).
    """
    counts = dict.fromkeys(("n_samples", "n_truncated", "n_empty", "n_finished_unknown"), 0)
    by_prompt: dict[str, list[dict]] = {}
    for sample in samples:
        counts["n_samples"] += 1
        counts["n_truncated"] += sample.get("finished", True) is False
        counts["n_empty"] += not str(sample["response"]).strip()
        counts["n_finished_unknown"] += "finished" not in sample
        by_prompt.setdefault(str(sample["prompt_id"]), []).append(sample)
    counts["n_prompts"] = len(by_prompt)
    counts["n_prompts_all_truncated"] = sum(all(s.get("finished", True) is False for s in group) for group in by_prompt.values())
    counts["n_prompts_without_target"] = sum(not any(is_eligible(s) for s in group) for group in by_prompt.values())
    return counts


def harvest_gap(rewards: torch.Tensor, eligible: torch.Tensor | None = None) -> float:
    """Mean over prompts of (max - median) reward among K samples: what best-of-K gains.

    Args:
        rewards: (P, K) gated reward of sample j of prompt i.
        eligible: (P, K) bool, True where the sample could be a target (`is_eligible`);
            None: all. The max runs over eligible samples only (a truncated sample is
            never harvested); the median over all K (the typical sample). A prompt
            with no eligible sample contributes 0 (it yields no target).

    Returns:
        mean_i (max_{j eligible} r_ij - median_j r_ij), the median as in
        `max_median_curve` (mean of the two middle values for even K).
    """
    if rewards.dim() != 2 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty (P, K) tensor, got shape {tuple(rewards.shape)}")
    rewards = rewards.double()
    eligible = torch.ones_like(rewards, dtype=torch.bool) if eligible is None else eligible.bool()
    if eligible.shape != rewards.shape:
        raise ValueError(f"eligible has shape {tuple(eligible.shape)}, rewards {tuple(rewards.shape)}")
    median = torch.quantile(rewards, 0.5, dim=1)
    best = torch.where(eligible, rewards, torch.full_like(rewards, -math.inf)).max(dim=1).values
    gap = torch.where(eligible.any(dim=1), best - median, torch.zeros_like(median))
    return gap.mean().item()


def choose_temperature(gaps: dict[float, float]) -> float:
    """The temperature with the largest harvest gap (`harvest_gap` per temperature);
    a tie goes to the lower temperature (closer to the policy's own distribution)."""
    if not gaps:
        raise ValueError("no temperatures")
    return min(gaps, key=lambda t: (-gaps[t], t))


def user_turns(messages: Sequence[dict]) -> tuple[str, ...]:
    """The user texts of a conversation: two demonstrations with the same ones answer the
    same request (a system prompt aside), so one seen in SFT is not held back."""
    return tuple(m["content"].strip() for m in messages if m["role"] == "user")


def last_turn_rows(messages: Sequence[dict]) -> list[list[dict]]:
    """A demonstration cut into one conversation per assistant turn, each ending with it.

    The RS fine-tune learns the last assistant turn of each row only (SFT's
    `data.learn: last`); a multi-turn replayed demonstration is split so that every
    one of its answers is still learned once, with the turns before it as context.
    """
    return [list(messages[:i + 1]) for i, m in enumerate(messages) if m["role"] == "assistant"]


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


def chosen_vs_median(groups: dict[str, list[dict]], gold: dict[tuple[str, int, int], float]) -> dict | None:
    """Gold score of the chosen (max-reward) answer against the median-reward answer of each prompt.

    This checks the reward models against ground truth on this iteration's own
    samples: if ranking by R_c works, the answer it picks is better by the gold
    judges than a typical (median) answer.

    Args:
        groups: {prompt_id: this iteration's samples of that prompt}.
        gold: {(prompt_id, iteration, sample_index): gold combined score}.

    Returns:
        `paired_comparison(chosen, median)` plus the mean gold score of all samples;
        None when no prompt has a chosen answer (every sample truncated or empty).
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
    if not chosen:
        return None  # no prompt has an eligible sample: nothing was chosen
    result = paired_comparison(chosen, median)
    result = {"n": result["n"], "chosen": result["after"], "chosen_stderr": result["after_stderr"],
              "median": result["before"], "median_stderr": result["before_stderr"],
              "diff": result["diff"], "diff_stderr": result["diff_stderr"],
              "wins": result["wins"], "losses": result["losses"]}
    result["all_samples"], result["all_samples_stderr"] = mean_stderr(every)
    return result


def chosen_vs_greedy(groups: dict[str, list[dict]], gold: dict[tuple[str, int, int], float],
                     greedy_gold: dict[str, float]) -> dict | None:
    """Gold score of the chosen answer against the policy's own greedy answer, per prompt.

    What decides whether the fine-tune can lift the policy's greedy answers: targets
    no better than greedy teach nothing a greedy evaluation can see (on the quickstart's
    SFT model, best of 6 at T 0.7 scored 0.512 against greedy's 0.529; README).

    Args:
        groups: {prompt_id: this iteration's samples of that prompt}.
        gold: {(prompt_id, iteration, sample_index): gold combined score}.
        greedy_gold: {prompt_id: gold combined score of the policy's greedy answer}.

    Returns:
        {"n", "chosen", "greedy", their stderrs, "diff", "diff_stderr", "wins", "losses",
        "significant", "by_kind": {kind: {"n", "diff", "diff_stderr"}}} over the prompts with a chosen
        answer (kind: the samples' `kind`, else `category`); None when none has one.
    """
    chosen, greedy, kinds = [], [], []
    for pid in sorted(groups):
        winner = select_best(groups[pid])
        if pid not in winner:
            continue  # every sample truncated or empty: nothing chosen
        best = winner[pid]
        chosen.append(gold[(pid, int(best["iteration"]), int(best["sample_index"]))])
        greedy.append(greedy_gold[pid])
        kinds.append(str(best.get("kind") or best.get("category") or "all"))
    if not chosen:
        return None
    overall = paired_comparison(chosen, greedy)
    by_kind = {}
    for kind in sorted(set(kinds)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        paired = paired_comparison([chosen[i] for i in rows], [greedy[i] for i in rows])
        by_kind[kind] = {"n": paired["n"], "diff": paired["diff"], "diff_stderr": paired["diff_stderr"]}
    return {"n": overall["n"], "chosen": overall["after"], "chosen_stderr": overall["after_stderr"],
            "greedy": overall["before"], "greedy_stderr": overall["before_stderr"],
            "diff": overall["diff"], "diff_stderr": overall["diff_stderr"],
            "wins": overall["wins"], "losses": overall["losses"], "significant": overall["significant"], "by_kind": by_kind}


def ranking_agreement(groups: dict[str, list[dict]], gold: dict[tuple[str, int, int], float]) -> dict[str, dict]:
    """How often the reward orders two samples of one prompt as the gold judge does, by prompt kind.

    Rejection sampling only ever compares samples *of the same prompt*, so this is the
    reward models' accuracy that matters to it (a held-out pair accuracy mixes in
    templated pairs the policy never writes). Below 0.5 for a kind, best of K picks
    worse answers than a random sample would there.

    Args:
        groups: {prompt_id: samples of that prompt}, each with `iteration`,
            `sample_index`, `reward` and optionally `kind` (else `category`).
        gold: {(prompt_id, iteration, sample_index): gold combined score}.

    Returns:
        {kind: {"pairs", "agree", "rate"}} and the same under "all", over every pair of
        samples of one prompt whose gold scores differ and whose rewards differ (a tie on
        either side orders nothing); a kind with no such pair is left out.
    """
    counts: dict[str, list[int]] = {}
    for pid, group in groups.items():
        scored = [(gold[(pid, int(s["iteration"]), int(s["sample_index"]))], float(s["reward"])) for s in group]
        kind = str(group[0].get("kind") or group[0].get("category") or "all")
        for i, (gold_i, reward_i) in enumerate(scored):
            for gold_j, reward_j in scored[i + 1:]:
                if gold_i == gold_j or reward_i == reward_j:
                    continue
                agrees = (gold_i > gold_j) == (reward_i > reward_j)
                for key in {kind, "all"}:
                    tally = counts.setdefault(key, [0, 0])
                    tally[0] += agrees
                    tally[1] += 1
    return {key: {"pairs": n, "agree": a, "rate": a / n} for key, (a, n) in sorted(counts.items())}
