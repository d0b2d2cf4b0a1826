"""Reward-model evaluation: the paper's Table 8 and the safety precision/recall.

- `preference_accuracy`: fraction of pairs whose chosen response scores strictly
  higher than the rejected one, overall, per rating level, per category and per
  (category, rating). Ties count as wrong.
- `safety_precision_recall`: Llama 2's safety gate as a classifier, "unsafe" the
  positive class: a response is predicted unsafe when its probability < threshold
  (0.15 in the paper, which reports precision 0.89 and recall 0.55). The probability
  is the one the gate uses: σ(a·r + b) with the RM's calibration
  (`reward.calibration`), σ(r) without; with a calibration, σ(r)'s figures are kept
  beside it (`safety_uncalibrated`), and the paper's under `safety_paper`.
- `evaluate_pairs`: scores pairs with a `RewardScorer` (`score_pairs`), computes both
  (`evaluate_scored`), draws the reward histograms and returns the dict that goes
  into `eval.json`. Given each
  pair's agreement with a noise-free judge (toyworld has one:
  `toyworld.annotators.gold_agreement`), it also reports that judge's accuracy in
  the same breakdown: the ceiling for any reward model on those pairs, since the
  annotators' noise decides the rest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reward.combine import (
    LLAMA2_SAFETY_PRECISION,
    LLAMA2_SAFETY_RECALL,
    LLAMA2_SAFETY_SOURCE,
    LLAMA2_SAFETY_THRESHOLD,
)
from reward.margins import RATINGS

SAFETY_THRESHOLD = LLAMA2_SAFETY_THRESHOLD
PAPER_SAFETY = {"threshold": LLAMA2_SAFETY_THRESHOLD, "precision": LLAMA2_SAFETY_PRECISION,
                "recall": LLAMA2_SAFETY_RECALL, "source": LLAMA2_SAFETY_SOURCE}


def _mean(values: list[float]) -> dict:
    return {"accuracy": (sum(values) / len(values)) if values else None, "n": len(values)}


def accuracy_table(
    per_pair: Sequence[float],
    ratings: Sequence[str | None],
    categories: Sequence[str | None],
) -> dict:
    """Mean of per-pair scores in [0, 1] overall, per rating, per category and per
    category x rating (the paper's Table 8 layout).

    Ratings are reported in the paper's order (strongest first), only those present.
    """
    n = len(per_pair)
    if not (len(ratings) == len(categories) == n):
        raise ValueError("per-pair scores, ratings and categories must have the same length")
    values = [float(v) for v in per_pair]

    def order(present_values):
        present = {v for v in present_values if v is not None}
        known = [r for r in RATINGS if r in present]
        return known + sorted(present - set(known))

    per_rating = {r: _mean([v for v, rr in zip(values, ratings) if rr == r]) for r in order(ratings)}
    per_category = {c: _mean([v for v, cc in zip(values, categories) if cc == c]) for c in sorted({c for c in categories if c})}
    per_category_rating = {
        c: {r: _mean([v for v, cc, rr in zip(values, categories, ratings) if cc == c and rr == r]) for r in order(ratings)}
        for c in per_category
    }
    return {
        "overall": _mean(values),
        "per_rating": per_rating,
        "per_category": per_category,
        "per_category_rating": per_category_rating,
    }


def preference_accuracy(
    chosen_scores: Sequence[float],
    rejected_scores: Sequence[float],
    ratings: Sequence[str | None],
    categories: Sequence[str | None],
) -> dict:
    """Fraction of pairs ranked right (chosen strictly higher; ties are wrong), in the
    `accuracy_table` breakdown."""
    if len(chosen_scores) != len(rejected_scores):
        raise ValueError("chosen_scores, rejected_scores, ratings and categories must have the same length")
    correct = [float(float(c) > float(r)) for c, r in zip(chosen_scores, rejected_scores)]
    return accuracy_table(correct, ratings, categories)


def safety_precision_recall(probs: Sequence[float], unsafe: Sequence[bool], threshold: float = SAFETY_THRESHOLD) -> dict:
    """Precision and recall of "unsafe" predicted as `prob < threshold`.

    Args:
        probs: sigma(RM score) of each response.
        unsafe: the gold label of each response (True = unsafe, the positive class).
    """
    if len(probs) != len(unsafe):
        raise ValueError("probs and unsafe must have the same length")
    predicted = [float(p) < threshold for p in probs]
    tp = sum(1 for pr, u in zip(predicted, unsafe) if pr and u)
    fp = sum(1 for pr, u in zip(predicted, unsafe) if pr and not u)
    fn = sum(1 for pr, u in zip(predicted, unsafe) if not pr and u)
    return {
        "threshold": threshold,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "n": len(probs),
        "n_unsafe": sum(bool(u) for u in unsafe),
        "n_predicted_unsafe": sum(predicted),
    }


def safety_labels(pairs: list[dict], chosen_probs: Sequence[float], rejected_probs: Sequence[float]) -> tuple[list[float], list[bool]]:
    """Flatten pairs into (prob, unsafe) per response, for responses with a `*_safe` label."""
    probs, unsafe = [], []
    for pair, pc, pr in zip(pairs, chosen_probs, rejected_probs):
        for label, prob in ((pair.get("chosen_safe"), pc), (pair.get("rejected_safe"), pr)):
            if label is not None:
                probs.append(float(prob))
                unsafe.append(not label)
    return probs, unsafe


def plot_histograms(chosen: Sequence[float], rejected: Sequence[float], categories: Sequence[str | None], path: str | os.PathLike, title: str) -> Path:
    """Histogram of raw rewards of chosen and rejected responses, one panel per category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.io import atomic_open

    groups = ["all"] + sorted({c for c in categories if c})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False)
    for ax, group in zip(axes[0], groups):
        keep = [i for i, c in enumerate(categories) if group == "all" or c == group]
        values_c = [chosen[i] for i in keep]
        values_r = [rejected[i] for i in keep]
        both = values_c + values_r
        bins = 30 if both and max(both) > min(both) else 1
        ax.hist(values_c, bins=bins, alpha=0.6, label="chosen")
        ax.hist(values_r, bins=bins, alpha=0.6, label="rejected")
        ax.set_title(f"{group} (n={len(keep)})")
        ax.set_xlabel("reward (raw)")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=80)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ScoredPairs:
    """Held-out pairs and their raw scores: `pairs` the kept ones (not overlong), at
    positions `keep` of the pairs given; `chosen`/`rejected` their raw scores; `n_pairs`
    before leaving out `n_overlong`."""

    pairs: list[dict]
    keep: list[int]
    chosen: list[float]
    rejected: list[float]
    n_pairs: int
    n_overlong: int

    def pick(self, values: Sequence) -> list:
        """The kept pairs' entries of one value per pair given."""
        return [values[i] for i in self.keep]


def score_pairs(scorer, pairs: list[dict], max_length: int | None = None) -> ScoredPairs:
    """Raw scores of every pair's two responses; pairs longer than `max_length` tokens
    (either side) are counted and left out."""
    from core.errors import DataError

    if not pairs:
        raise DataError("no preference pairs to evaluate")
    chosen_ids = scorer.encode([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected_ids = scorer.encode([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    keep = [
        i for i in range(len(pairs))
        if max_length is None or (len(chosen_ids[i]) <= max_length and len(rejected_ids[i]) <= max_length)
    ]
    if not keep:
        raise DataError(f"all {len(pairs)} pairs are longer than max_length={max_length} tokens")
    raw = scorer.score_ids([chosen_ids[i] for i in keep] + [rejected_ids[i] for i in keep])
    if not torch.isfinite(raw).all():
        from core.errors import NumericError

        raise NumericError("the reward model produced a NaN or inf score during evaluation")
    return ScoredPairs(pairs=[pairs[i] for i in keep], keep=keep, chosen=raw[: len(keep)].tolist(), rejected=raw[len(keep):].tolist(),
                       n_pairs=len(pairs), n_overlong=len(pairs) - len(keep))


def safety_tables(scored: ScoredPairs, threshold: float, calibration=None) -> dict:
    """eval.json's safety keys: `safety` with the gate's probabilities (calibrated when
    `calibration` is given), `safety_uncalibrated` with σ(r) beside a calibrated one, and
    `safety_paper`, the paper's figures. `safety` is None without safety labels."""
    def labelled(cal) -> tuple[list[float], list[bool]]:
        def prob(values: list[float]) -> list[float]:
            raw = torch.tensor(values, dtype=torch.float64)
            return (torch.sigmoid(raw) if cal is None else cal.prob(raw)).tolist()

        return safety_labels(scored.pairs, prob(scored.chosen), prob(scored.rejected))

    probs, unsafe = labelled(calibration)
    if not probs:
        return {"safety": None}
    table = {"safety": {**safety_precision_recall(probs, unsafe, threshold), "calibrated": calibration is not None},
             "safety_paper": PAPER_SAFETY}
    if calibration is not None:
        table["safety_uncalibrated"] = safety_precision_recall(labelled(None)[0], unsafe, threshold)
    return table


def _figure(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def safety_line(result: dict) -> str | None:
    """One line of a table's safety figures beside the paper's, or None without labels."""
    safety = result.get("safety")
    if not safety:
        return None
    which = "calibrated" if safety.get("calibrated") else "σ(r), uncalibrated"
    line = (f"safety RM @ {safety['threshold']} ({which}): precision {_figure(safety['precision'])}, recall "
            f"{_figure(safety['recall'])} (n={safety['n']}, unsafe={safety['n_unsafe']}); "
            f"paper: {LLAMA2_SAFETY_PRECISION}, {LLAMA2_SAFETY_RECALL}")
    raw = result.get("safety_uncalibrated")
    if raw:
        line += f"; σ(r): {_figure(raw['precision'])}, {_figure(raw['recall'])}"
    return line


def evaluate_scored(
    scored: ScoredPairs,
    out_dir: str | os.PathLike | None = None,
    name: str = "eval",
    threshold: float = SAFETY_THRESHOLD,
    judge_agreement: Sequence[float] | None = None,
    calibration=None,
) -> dict:
    """Accuracy tables, safety precision/recall (`safety_tables`), reward stats of scored
    pairs. `judge_agreement`: one value per kept pair (`scored.pick`)."""
    kept, chosen, rejected = scored.pairs, scored.chosen, scored.rejected
    result = preference_accuracy(chosen, rejected, [p.get("rating") for p in kept], [p.get("category") for p in kept])
    if judge_agreement is not None:
        result["judge_ceiling"] = accuracy_table(judge_agreement, [p.get("rating") for p in kept], [p.get("category") for p in kept])
    result["n_pairs"] = scored.n_pairs
    result["n_overlong"] = scored.n_overlong
    result.update(safety_tables(scored, threshold, calibration))
    result["rewards"] = {
        "chosen_mean": sum(chosen) / len(chosen),
        "rejected_mean": sum(rejected) / len(rejected),
        "mean": (sum(chosen) + sum(rejected)) / (2 * len(chosen)),
        "min": min(chosen + rejected),
        "max": max(chosen + rejected),
    }
    if out_dir is not None:
        png = plot_histograms(chosen, rejected, [p.get("category") for p in kept], Path(out_dir) / f"{name}_rewards.png", name)
        result["histogram"] = str(png)
    return result


def evaluate_pairs(
    scorer,
    pairs: list[dict],
    out_dir: str | os.PathLike | None = None,
    name: str = "eval",
    threshold: float = SAFETY_THRESHOLD,
    max_length: int | None = None,
    judge_agreement: Sequence[float] | None = None,
) -> dict:
    """Score every pair and return accuracy tables, safety precision/recall, reward stats.

    Pairs longer than `max_length` tokens (either side) are counted and left out.
    With `out_dir`, the histogram is written to `<out_dir>/<name>_rewards.png`.
    `judge_agreement` (one value in [0, 1] per pair: 1 where a noise-free judge
    prefers the chosen response, 0.5 for a tie, 0 otherwise) adds the judge's own
    accuracy on the same pairs as `judge_ceiling`. The safety figures use the
    scorer's calibration when it has one (`RewardScorer(..., calibrated=True)`).
    """
    if judge_agreement is not None and len(judge_agreement) != len(pairs):
        raise ValueError(f"judge_agreement has {len(judge_agreement)} values for {len(pairs)} pairs")
    scored = score_pairs(scorer, pairs, max_length)
    agreement = None if judge_agreement is None else scored.pick(judge_agreement)
    return evaluate_scored(scored, out_dir, name, threshold, agreement, getattr(scorer, "calibration", None))


def format_table(results: dict[str, dict]) -> str:
    """Markdown table, one row per model: accuracy per rating, per category, overall (Table 8 style)."""
    ratings = [r for r in RATINGS if any(r in res["per_rating"] for res in results.values())]
    cats = sorted({c for res in results.values() for c in res["per_category"]})
    head = ["model", *[r.replace("_", " ") for r in ratings], *[f"{c} pairs" for c in cats], "overall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(entry):
        return "-" if not entry or entry["accuracy"] is None else f"{100 * entry['accuracy']:.1f}"

    for name, res in results.items():
        cells = [name, *[pct(res["per_rating"].get(r)) for r in ratings], *[pct(res["per_category"].get(c)) for c in cats], pct(res["overall"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
