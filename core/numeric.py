"""Numeric guards for the Hugging Face Trainer loops (SFT, reward models).

A NaN or inf in a loss or a gradient must stop training before the optimizer
applies it and before the Trainer saves a checkpoint: otherwise the poisoned
weights overwrite the last good checkpoint and a resumed run starts from them.
The Trainer calls `on_pre_optimizer_step` after the backward passes and the
gradient clipping of a step and before `optimizer.step()`; checkpoints are saved
only after the step, so raising here leaves every checkpoint on disk as it was.
A NaN or inf loss always gives NaN gradients, so this one check covers both.
(PPO, a hand-written loop, checks its rewards, losses and gradients itself:
`ppo.rollout.check_finite`.)
"""

from __future__ import annotations

import torch

from core.errors import NumericError


def first_non_finite_gradient(model) -> tuple[str | None, int]:
    """The name of the first parameter whose gradient holds a NaN or inf, and how many do.

    Called every optimizer step: the common all-finite case costs one device sync,
    not one per parameter; only a bad step walks the parameters to name one.
    """
    named = [(name, param.grad) for name, param in model.named_parameters() if param.grad is not None]
    if not named:
        return None, 0
    device = named[0][1].device  # a model split over devices has its gradients on several
    finite = torch.stack([torch.isfinite(grad).all().to(device) for _, grad in named])
    if bool(finite.all()):
        return None, 0
    bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
    return bad[0], len(bad)


def finite_gradients_callback(stage: str):
    """A `TrainerCallback` that raises `NumericError` on a non-finite gradient, before the step."""
    from transformers import TrainerCallback

    class FiniteGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if model is None:
                return
            name, count = first_non_finite_gradient(model)
            if name is not None:
                raise NumericError(
                    f"{stage}: non-finite gradient (NaN or inf) at step {state.global_step + 1} "
                    f"in {name} ({count} tensors): the loss or the gradients overflowed; training stopped "
                    "before the optimizer step, the last checkpoint is left as it was (lower the learning rate, "
                    "check the data, or disable bf16)"
                )

    return FiniteGradients()
