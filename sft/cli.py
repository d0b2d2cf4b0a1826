"""`python -m sft --config configs/sft/quickstart.yaml key=value ...` (also `rlhf sft`, `accelerate launch -m sft`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from core.cli import stage_main
from sft.config import SFTConfig


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from sft.train import run

    return stage_main(
        argv,
        prog="sft",
        description="Stage 1: supervised fine-tuning with the loss on answer tokens only (Llama 2 SFT).",
        config_cls=SFTConfig,
        run=run,
    )
