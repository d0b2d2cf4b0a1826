"""`device: auto` everywhere: the accelerator when there is one, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; any other name unchanged.

    Under a multi-process launch each process should pass its own device
    (`accelerate.PartialState().device`) instead of "auto".
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
