"""`rlhf rs` / `python -m rejection_sampling`: one rejection-sampling iteration.

    python -m rejection_sampling --config configs/rs/quickstart.yaml
    rlhf rs --config configs/rs/quickstart.yaml iteration=2 temperature=1.1 pool_dirs='[runs/x/v1/rs]'
"""

from __future__ import annotations

from collections.abc import Sequence

from core.cli import stage_main
from rejection_sampling.config import RSConfig


def main(argv: Sequence[str] | None = None) -> int:
    from rejection_sampling.sample import run

    return stage_main(
        argv,
        prog="rlhf rs",
        description="Rejection-sampling fine-tuning: K samples per prompt, best by Llama 2's gated reward, "
        "pooled over every iteration so far, then SFT on the pooled best answers.",
        config_cls=RSConfig,
        run=run,
    )
