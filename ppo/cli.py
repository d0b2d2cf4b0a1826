"""`rlhf ppo` / `python -m ppo` / `accelerate launch -m ppo`: `--config FILE key=value ...`."""

from __future__ import annotations

from collections.abc import Sequence

from core.cli import stage_main


def main(argv: Sequence[str] | None = None) -> int:
    from ppo.config import PPOConfig
    from ppo.train import run

    return stage_main(argv, "rlhf ppo", "Stage 3b: PPO under Llama 2's safety-gated reward (KL penalty to the initial policy).", PPOConfig, run)
