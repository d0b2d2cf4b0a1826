"""PPO checkpoints: everything a killed run needs to resume to the same result.

OUT/checkpoints/iter-000040/
    policy.safetensors     trainable policy weights (all weights, those of the top
                           `model.trainable_layers`, or the policy adapter)
    critic.safetensors     trainable critic weights (body or its top layers, and head; or
                           adapter and head)
    optimizer.pt           AdamW state
    shards/                instead of the three above under `distributed: fsdp2`: torch
                           Distributed Checkpoint (DCP) of the policy, the critic and AdamW,
                           each process writing and reading only its own shards (no
                           process ever holds whole weights or whole optimizer state;
                           DCP reshards when the run resumes on another process count)
    rng-rank{r}.pt         torch, python `random` and numpy RNG states of process r
    state.json             iteration, score RunningMoments, data position, eval history,
                           early-stopping counters; written last

A checkpoint is built in a hidden temporary folder and renamed into place when
complete; only then are older checkpoints deleted, so there is always one whole
checkpoint on disk. Folders without state.json or with a leading dot are ignored.

OUT/checkpoints/best/ holds the best policy so far (held-out RM reward), written the
same way (a new one is renamed into place before the old one is removed): policy.safetensors,
or shards/ under fsdp2.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.diskspace import checkpoint_bytes, ensure_free_space
from core.errors import ConfigError
from core.io import atomic_write_json

STATE = "state.json"
SHARDS = "shards"  # the DCP folder of a sharded (fsdp2) checkpoint


def _tensors(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """CPU copies of unsharded `params`."""
    return {name: p.detach().contiguous().cpu() for name, p in params.items()}


def load_params(params: dict[str, torch.nn.Parameter], path: Path) -> None:
    """Copy saved tensors into unsharded `params` (every process reads the file)."""
    saved = load_file(str(path))
    if set(saved) != set(params):
        missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        raise RuntimeError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name].to(p.device, p.dtype))


def _sharded_state(models, optimizer=None) -> dict:
    """What a sharded checkpoint holds, as this process's shards (DTensors): the trainable
    parameters (detached views: DCP loads into them in place) and, with `optimizer`,
    AdamW's state keyed by parameter name (torch's get_optimizer_state_dict creates the
    moments of a fresh optimizer, so a resumed run has tensors to load into)."""
    state = {"policy": {n: p.detach() for n, p in models.policy_params.items()},
             "critic": {n: p.detach() for n, p in models.critic_params.items()}}
    if optimizer is not None:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state["optimizer"] = get_optimizer_state_dict(models.actor_critic, optimizer)
    return state


def save_shards(folder: Path, state: dict) -> None:
    """Every process writes its own shards of `state` into `folder` (DCP; collective)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=str(folder))


def load_shards(folder: Path, state: dict) -> None:
    """Every process reads its own shards of `state` from `folder`, in place (collective)."""
    import torch.distributed.checkpoint as dcp

    with torch.no_grad():
        dcp.load(state, checkpoint_id=str(folder))


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
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    if models.sharded:
        save_shards(tmp / SHARDS, _sharded_state(models, optimizer))
    elif accelerator.is_main_process:  # ddp and one process: every process holds the same whole tensors
        save_file(_tensors(models.policy_params), str(tmp / "policy.safetensors"))
        save_file(_tensors(models.critic_params), str(tmp / "critic.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
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
    """Restore weights, optimizer and this process's RNG; returns state.json.

    A sharded checkpoint (written by a sharded launch: distributed: fsdp2 under torchrun or
    on several processes) resumes under such a launch on any number of processes (DCP
    reshards); a whole one in an unsharded run."""
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    if (path / SHARDS).is_dir():
        if not models.sharded:
            raise ConfigError(f"{path} is a sharded checkpoint (written by a distributed: fsdp2 launch of "
                              f"{state.get('num_processes', '?')} process(es)); this run is not sharded: relaunch the "
                              "same config under torchrun (any number of processes) to resume it")
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        shards = _sharded_state(models, optimizer)
        load_shards(path / SHARDS, shards)
        set_optimizer_state_dict(models.actor_critic, optimizer, shards["optimizer"])
    else:
        if models.sharded:
            raise ConfigError(f"{path} holds whole weights (written by an unsharded run); this launch shards "
                              "(distributed: fsdp2 under torchrun): relaunch the same config as a plain process or with "
                              "distributed: ddp to resume it, or start a fresh output_dir")
        load_params(models.policy_params, path / "policy.safetensors")
        load_params(models.critic_params, path / "critic.safetensors")
        # the optimizer moves the state to its parameters' device
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    rng_file = path / f"rng-rank{accelerator.process_index}.pt"
    if rng_file.is_file():  # absent when resuming with more processes than the checkpoint had
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state


def save_best(accelerator, folder: Path, iteration: int, models) -> None:
    """Write the policy as the best so far: new folder complete first, then swap."""
    best, tmp, old = folder / "best", folder / ".tmp-best", folder / ".old-best"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    if models.sharded:
        save_shards(tmp / SHARDS, {"policy": _sharded_state(models)["policy"]})
    elif accelerator.is_main_process:
        save_file(_tensors(models.policy_params), str(tmp / "policy.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
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
    if (best / SHARDS).is_dir():
        load_shards(best / SHARDS, {"policy": _sharded_state(models)["policy"]})
    else:
        load_params(models.policy_params, best / "policy.safetensors")
