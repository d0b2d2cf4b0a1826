"""Which pairs each reward model trains on (Llama 2, section 3.2.2, "Data Composition").

Pure function, no I/O: the helpfulness RM sees all helpfulness pairs plus an equal
amount drawn from the rest (safety and other data); the safety RM sees all safety
pairs plus helpfulness pairs in a 90/10 proportion. A pair's group is its
`category` field, the guideline it was rated under (not its prompt's category); pairs
whose category is neither count as "other" data. So, as in Llama 2, the safety RM's
helpfulness share can hold a few risky prompts rated for helpfulness (where the
compliant answer won), and the helpfulness RM's safety share the opposite.
"""

from __future__ import annotations

import random
from collections import Counter


def mix_pairs(
    pairs: list[dict],
    kind: str,
    helpfulness_other_ratio: float = 1.0,
    safety_main_fraction: float = 0.9,
    seed: int = 0,
) -> list[dict]:
    """The training mix for one RM, shuffled with `seed`.

    Args:
        pairs: preference pairs with a `category` field.
        kind: "helpfulness" or "safety".
        helpfulness_other_ratio: the helpfulness RM adds `ratio * n_helpfulness`
            pairs drawn from non-helpfulness pairs (1.0 = "an equal amount").
        safety_main_fraction: the safety RM adds helpfulness pairs so that safety
            pairs are this fraction of the mix (0.9 = "90/10"); other non-safety
            pairs are not used by the safety RM.

    When fewer "other" pairs exist than asked for, all of them are taken.
    """
    if kind not in ("helpfulness", "safety"):
        raise ValueError(f"unknown reward-model kind {kind!r} (expected helpfulness or safety)")
    if helpfulness_other_ratio < 0:
        raise ValueError("helpfulness_other_ratio must be >= 0")
    if not 0 < safety_main_fraction <= 1:
        raise ValueError("safety_main_fraction must be in (0, 1]")
    rng = random.Random(seed)
    if kind == "helpfulness":
        main = [p for p in pairs if p.get("category") == "helpfulness"]
        rest = [p for p in pairs if p.get("category") != "helpfulness"]
        n_other = round(helpfulness_other_ratio * len(main))
    else:
        main = [p for p in pairs if p.get("category") == "safety"]
        rest = [p for p in pairs if p.get("category") == "helpfulness"]
        n_other = round(len(main) * (1 - safety_main_fraction) / safety_main_fraction)
    other = rng.sample(rest, min(n_other, len(rest)))
    mixed = main + other
    rng.shuffle(mixed)
    return mixed


def mix_summary(pairs: list[dict]) -> dict[str, int]:
    """Pair counts per category (for the manifest and the log line)."""
    return dict(sorted(Counter(p.get("category") or "other" for p in pairs).items()))
