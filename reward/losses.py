"""Reward-model loss: Llama 2's binary ranking loss with a rating-dependent margin.

Llama 2 (arXiv 2307.09288, section 3.2.2, equations 1 and 2) trains each reward model
on preference pairs with

    L = -log(sigmoid(r(x, y_c) - r(x, y_r) - m(rating)))

where ``m`` is a discrete function of the 4-level preference rating
(``reward.margins``). With ``m = 0`` this is the InstructGPT loss. TRL's
``RewardTrainer.compute_loss`` uses the same expression; it is written here as a pure
function so that it can be unit-tested without a trainer and reused by our own loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Mean binary ranking loss ``-log σ(r_c - r_r - m)`` over a batch of pairs.

    Args:
        r_chosen: (B,) scalar rewards of the preferred responses.
        r_rejected: (B,) scalar rewards of the rejected responses.
        margin: None (no margin), a float, or a (B,) tensor of per-pair margins
            (``reward.margins.margin_for`` of each pair's rating).

    Returns:
        0-d tensor, the mean loss over the B pairs.
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(
            f"r_chosen and r_rejected must have the same shape, got "
            f"{tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}"
        )
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    # logsigmoid, not log(sigmoid(.)): the latter underflows to log(0) = -inf for a
    # confidently wrong pair (diff << 0), which would make the loss inf.
    return -F.logsigmoid(diff).mean()
