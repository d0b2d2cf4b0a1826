"""Llama 2's safety-gated combination of the helpfulness and safety reward models.

Llama 2 (arXiv 2307.09288, section 3.2.3, "Reinforcement Learning with Human
Feedback", equation for R_c) scores a response with both reward models and uses

    R_c(g | p) = R_s(g | p)   if IS_SAFETY(p) or R_s(g | p) < 0.15
                 R_h(g | p)   otherwise

where ``R_s`` and ``R_h`` are probabilities (sigmoid of each RM's output) and
``IS_SAFETY(p)`` marks prompts from the safety set. 0.15 gives precision 0.89 and
recall 0.55 on Meta's safety test set. No maintained library ships this gate, so it is
written here; rejection sampling ranks its samples with it and PPO's reward starts
from it (``ppo.core.logit`` and whitening follow).
"""

from __future__ import annotations

import torch

LLAMA2_SAFETY_THRESHOLD = 0.15
# What that threshold gives on Meta's safety test set, "unsafe" the positive class
# (arXiv 2307.09288, section 3.2.3, next to the R_c equation). Reported beside this
# project's safety RM (`reward.evaluate`); comparable only with calibrated probabilities.
LLAMA2_SAFETY_PRECISION = 0.89
LLAMA2_SAFETY_RECALL = 0.55
LLAMA2_SAFETY_SOURCE = "Llama 2 (arXiv 2307.09288), section 3.2.3: threshold 0.15 gives precision 0.89, recall 0.55"


def _check_prob(name: str, x: torch.Tensor) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN")
    # A raw RM logit passed by mistake is the likely cause; the gate compares against
    # a probability threshold, so it would silently pick the wrong branch.
    if (x < 0).any() or (x > 1).any():
        raise ValueError(
            f"{name} must be probabilities in [0, 1] (sigmoid of the RM output); "
            f"got values in [{x.min().item():.4g}, {x.max().item():.4g}]"
        )


def safety_gate(
    safety_prob: torch.Tensor,
    is_safety: torch.Tensor,
    threshold: float = LLAMA2_SAFETY_THRESHOLD,
) -> torch.Tensor:
    """(B,) bool: True where R_c takes the safety score (safety prompt, or R_s < threshold).

    The comparison is strict, as in the paper: ``R_s == threshold`` is not gated.
    """
    if is_safety.dtype != torch.bool:
        raise ValueError(f"is_safety must be a bool tensor, got dtype {is_safety.dtype}")
    return is_safety | (safety_prob < threshold)


def llama2_reward(
    safety_prob: torch.Tensor,
    helpful_prob: torch.Tensor,
    is_safety: torch.Tensor,
    threshold: float = LLAMA2_SAFETY_THRESHOLD,
) -> torch.Tensor:
    """Llama 2's gated reward R_c (section 3.2.3).

    Args:
        safety_prob: (B,) safety RM scores as probabilities, σ(RM output).
        helpful_prob: (B,) helpfulness RM scores as probabilities.
        is_safety: (B,) bool, the prompt's ``category == "safety"``.
        threshold: the safety gate; a response whose safety score is strictly below
            it is scored by the safety RM even on a helpfulness prompt.

    Returns:
        (B,) tensor: ``safety_prob`` where the gate is on, else ``helpful_prob``.

    Raises:
        ValueError: on NaN or out-of-[0, 1] input (naming the argument), or a
            non-bool ``is_safety``.
    """
    _check_prob("safety_prob", safety_prob)
    _check_prob("helpful_prob", helpful_prob)
    gate = safety_gate(safety_prob, is_safety, threshold)
    return torch.where(gate, safety_prob, helpful_prob)
