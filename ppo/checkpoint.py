"""PPO checkpoints: everything a killed run needs to resume to the same result.

OUT/checkpoints/iter-000040/
    policy.safetensors     trainable policy weights (all weights, or the policy adapter)
    critic.safetensors     trainable critic weights (body and head, or adapter and head)
    optimizer.pt           AdamW state (whole tensors: gathered from the shards under FSDP2)
    rng-rank{r}.pt         torch, python `random` and numpy RNG states of process r
    state.json             iteration, score RunningMoments, data position, eval history,
                           early-stopping counters; written last

A checkpoint is built in a hidden temporary folder and renamed into place when
complete; only then are older checkpoints deleted, so there is always one whole
checkpoint on disk. Folders without state.json or with a leading dot are ignored.

OUT/checkpoints/best/ holds the best policy so far (held-out RM reward), written the
same way (a new one is renamed into place before the old one is removed).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor, distribute_tensor

from core.diskspace import checkpoint_bytes, ensure_free_space
from core.io import atomic_write_json

STATE = "state.json"


def _tensors(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Whole CPU copies of `params`; an FSDP2 shard is gathered first, so every process
    must call this together."""
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().contiguous().cpu() for name, p in params.items()}


def load_params(params: dict[str, torch.nn.Parameter], path: Path) -> None:
    """Copy whole saved tensors into `params`; an FSDP2 parameter keeps only its own shard
    (every process reads the file, nothing is sent)."""
    saved = load_file(str(path))
    if set(saved) != set(params):
        missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        raise RuntimeError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            value = saved[name].to(p.device, p.dtype)
            if isinstance(p, DTensor):
                p.to_local().copy_(distribute_tensor(value, p.device_mesh, p.placements, src_data_rank=None).to_local())
            else:
                p.copy_(value)


def optimizer_state(models, optimizer) -> dict:
    """The optimizer's state with whole tensors (collective under FSDP2, keyed by
    parameter name there; by position otherwise)."""
    if not models.sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(models.actor_critic, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(models, optimizer, state: dict) -> None:
    if not models.sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(models.actor_critic, optimizer, state, options=StateDictOptions(full_state_dict=True))


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])




def checkpoint_name(iteration: int) -> str:
    return f"iter-{iteration:06d}"


def latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    complete = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("iter-") and (p / STATE).is_file()]
    return max(complete, key=lambda p: p.name) if complete else None


def save_checkpoint(accelerator, folder: Path, iteration: int, models, optimizer, state: dict) -> Path:
    """Write checkpoint `iteration` atomically (every process calls this)."""
    final = folder / checkpoint_name(iteration)
    tmp = folder / f".tmp-{final.name}"
    # every process checks (one file system in a single-node run), so none waits for a failed writer
    trainable = [*models.policy_params.values(), *models.critic_params.values()]
    ensure_free_space(folder, checkpoint_bytes(trainable, trainable), f"PPO checkpoint of iteration {iteration}")
    policy, critic = _tensors(models.policy_params), _tensors(models.critic_params)  # every process: gathers
    optim_state = optimizer_state(models, optimizer)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(policy, str(tmp / "policy.safetensors"))
        save_file(critic, str(tmp / "critic.safetensors"))
        torch.save(optim_state, tmp / "optimizer.pt")
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-rank{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE, {**state, "iteration": iteration, "num_processes": accelerator.num_processes})
        shutil.rmtree(final, ignore_errors=True)  # a checkpoint of this iteration from a run that was killed later
        tmp.rename(final)
        for old in folder.iterdir():
            if old != final and old.is_dir() and (old.name.startswith("iter-") or old.name.startswith(".tmp-iter-")):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, models, optimizer) -> dict:
    """Restore weights, optimizer and this process's RNG; returns state.json."""
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    load_params(models.policy_params, path / "policy.safetensors")
    load_params(models.critic_params, path / "critic.safetensors")
    load_optimizer_state(models, optimizer, torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))  # the optimizer moves it to its parameters
    rng_file = path / f"rng-rank{accelerator.process_index}.pt"
    if rng_file.is_file():  # absent when resuming with more processes than the checkpoint had
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state


def save_best(accelerator, folder: Path, iteration: int, models) -> None:
    """Write the policy as the best so far: new folder complete first, then swap."""
    policy = _tensors(models.policy_params)  # every process: gathers
    if accelerator.is_main_process:
        best, tmp, old = folder / "best", folder / ".tmp-best", folder / ".old-best"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(policy, str(tmp / "policy.safetensors"))
        atomic_write_json(tmp / "best.json", {"iteration": iteration})
        shutil.rmtree(old, ignore_errors=True)
        if best.exists():
            best.rename(old)
        tmp.rename(best)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_best(folder: Path, iteration: int, models) -> None:
    best = folder / "best"
    if not (best / "best.json").is_file() and (folder / ".old-best" / "best.json").is_file():
        best = folder / ".old-best"  # killed between the two renames
    recorded = json.loads((best / "best.json").read_text(encoding="utf-8"))["iteration"]
    if recorded != iteration:
        raise RuntimeError(f"{best} holds the policy of iteration {recorded}, but the run's best is iteration {iteration}")
    load_params(models.policy_params, best / "policy.safetensors")
