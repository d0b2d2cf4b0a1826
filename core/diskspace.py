"""Free-space checks before a checkpoint or a model folder is written.

A disk that fills up in the middle of `torch.save` fails with a bare
"RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos" that names
neither the cause nor the folder, after a half-written checkpoint has been left
behind. These checks run before anything is written: too little free space raises
`DiskSpaceError` naming the folder, the space it has and the space the write needs,
and the last complete checkpoint stays as it was, so freeing space and rerunning the
same command resumes from it.

Sizes are estimates from the tensors themselves: weights at their own precision,
plus AdamW's two float32 moments per trainable parameter for a checkpoint (the
optimizers of every stage are AdamW). A margin of 10 % + 64 MiB covers tokenizer
files, RNG and scheduler states and file-system overhead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from core.errors import DiskSpaceError

ADAM_MOMENTS = 2
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 64 * 2**20


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the tensors at their own precision."""
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_bytes(weights: Iterable[torch.Tensor], trainable: Iterable[torch.Tensor]) -> int:
    """Bytes of a training checkpoint: `weights` as stored, plus AdamW's float32 moments
    for every `trainable` parameter."""
    return tensor_bytes(weights) + ADAM_MOMENTS * 4 * sum(t.numel() for t in trainable)


def model_checkpoint_bytes(model) -> int:
    """`checkpoint_bytes` for a whole `torch.nn.Module` (every parameter saved, the
    trainable ones with optimizer state)."""
    params = list(model.parameters())
    return checkpoint_bytes(params, [p for p in params if p.requires_grad])


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the file system that holds `folder` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def folder_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the files under `folder` (0 if it does not exist)."""
    path = Path(folder)
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def ensure_free_space(folder: str | os.PathLike, needed: int, what: str, replaced: int = 0) -> None:
    """Raise `DiskSpaceError` unless `folder` has room for `needed` bytes (+ the margin).

    `replaced`: bytes of an older copy that the write deletes first (they count as free).
    """
    required = int(needed * (1 + MARGIN_FRACTION)) + MARGIN_BYTES
    available = free_bytes(folder) + replaced
    if available < required:
        raise DiskSpaceError(
            f"{what}: {folder} has {_human(available)} free, the write needs about {_human(required)}; "
            "nothing was written and the last complete checkpoint is kept (free some space, then rerun "
            "the same command to resume)"
        )


def free_space_callback(stage: str):
    """A `TrainerCallback` that checks the free space before each checkpoint the Trainer saves.

    `DefaultFlowCallback.on_step_end` sets `control.should_save` before the callbacks
    given to the Trainer run, and the Trainer saves right after them.
    """
    from transformers import TrainerCallback

    class FreeSpace(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if control.should_save and model is not None:
                ensure_free_space(args.output_dir, model_checkpoint_bytes(model),
                                  f"{stage}: checkpoint at step {state.global_step}")

    return FreeSpace()
