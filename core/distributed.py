"""How a hand-written stage (PPO, rejection sampling, GAtt) runs on several processes.

One key in each of those stages' configs, `distributed`, picks the engine:

    none   one process only (a multi-process launch is refused, naming the key)
    ddp    torch DDP through `accelerator.prepare`: every process holds the whole
           model; gradients are averaged by DDP's own hooks (the default; with one
           process it is a plain model)
    fsdp2  torch FSDP2 (`torch.distributed.fsdp.fully_shard`), one unit per decoder
           layer plus the root: each process holds 1/N of every trained (and frozen
           reference) model; all-gathers and reduce-scatters are FSDP's

The same code runs on CPU (gloo, under `torchrun` or `accelerate launch --cpu`) and
GPU (NCCL). Nothing here sums tensors by hand: the engines do every collective;
this module only wraps models, reads and writes their full weights, and gathers
them for generation.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Literal

import torch
from torch import nn

from core.errors import ConfigError

DistributedMode = Literal["none", "ddp", "fsdp2"]

# Main-process-only work (the held-out evaluations of SFT, rejection sampling and GAtt,
# writing the run folder) keeps the other processes at a barrier for as long as it
# takes, far beyond NCCL's default 10-minute collective timeout on a real model; every
# stage's process group is made with this one.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=6)


def process_state():
    """accelerate's `PartialState` of a stage: joins the launch's process group (gloo on a
    CPU-only machine, NCCL on GPUs) with COLLECTIVE_TIMEOUT. A PartialState, not an
    Accelerator: a TRL trainer made later builds its own Accelerator over this group."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=COLLECTIVE_TIMEOUT)


def make_accelerator(**kwargs):
    """An `accelerate.Accelerator` that sees every process of the launch.

    On a machine without a GPU, accelerate treats a `torchrun` launch as one process
    per rank unless ACCELERATE_USE_CPU is set (measured with accelerate 1.16), so it is
    set here when WORLD_SIZE > 1. Multi-process CPU launches that work:
    `torchrun --nproc_per_node 2 -m STAGE ...` and
    `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m STAGE ...`
    (plain `accelerate launch --cpu --num_processes 2` starts ONE process: its simple
    launcher needs mpirun for more).
    """
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    handlers = [*kwargs.pop("kwargs_handlers", []), InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)]
    return Accelerator(kwargs_handlers=handlers, **kwargs)


def check_launch(mode: str, num_processes: int, key: str = "distributed") -> None:
    """`distributed: none` is one process; anything else takes any process count."""
    if mode == "none" and num_processes > 1:
        raise ConfigError(
            f"{key}: none runs one process, but this launch started {num_processes}; "
            f"set {key}: ddp (each process holds the whole model) or {key}: fsdp2 (sharded)"
        )


def accelerate_fsdp_launch() -> bool:
    """Whether the launch enabled accelerate's FSDP (`accelerate launch` with an FSDP config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def check_trainer_engine(mode: str, num_processes: int, has_gpu: bool, fsdp_launch: bool, what: str, command: str) -> None:
    """What `distributed` can mean for a stage whose trained model goes through TRL's
    trainer (`what`: "GAtt's fine-tune", "the RS fine-tune"): DDP or FSDP is accelerate's
    choice, made by the launch. Refuse the combinations that would not do what the key
    says (`check_launch` first). `command`: the stage's module, for the launch line."""
    check_launch(mode, num_processes)
    if mode == "fsdp2" and not has_gpu:
        raise ConfigError(
            f"distributed: fsdp2: {what} is TRL's trainer, sharded by accelerate's FSDP plugin, which does not run on "
            "CPU (it falls back to one undistributed process per rank); on CPU use distributed: ddp (each process holds "
            "the whole model), or run on GPUs with an FSDP accelerate config (configs/accelerate/fsdp_8gpu.yaml)"
        )
    if mode == "fsdp2" and num_processes > 1 and not fsdp_launch:
        raise ConfigError(
            f"distributed: fsdp2: {what} is sharded by accelerate's FSDP plugin, but this launch did not enable it; "
            f"launch with an FSDP config (accelerate launch --config_file configs/accelerate/fsdp_8gpu.yaml {command} ...) "
            "or set distributed: ddp"
        )
    if mode == "ddp" and fsdp_launch:
        raise ConfigError(
            f"distributed: ddp, but this launch enables accelerate's FSDP ({what} would be sharded); "
            "set distributed: fsdp2, or launch with a DDP config (configs/accelerate/ddp_8gpu.yaml)"
        )


def can_shard(num_processes: int) -> bool:
    """Whether FSDP2 shards in this launch: one of several processes, or the one process of
    `torchrun --nproc_per_node 1` (its process group of one is made here if accelerate
    did not make it), which runs every sharded code path (DTensors, sharded checkpoints,
    generation on shards) on a single device, as the GPU check does. A plain one-process
    run has no process group and keeps whole models."""
    if num_processes > 1 or torch.distributed.is_initialized():
        return True
    if not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} <= os.environ.keys():
        return False
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return True


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM, its bare body, or a PEFT wrapper of either."""
    for path in ("model.layers", "layers", "base_model.model.model.layers", "body.layers"):
        module = model
        try:
            for name in path.split("."):
                module = getattr(module, name)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return list(module)
    raise ConfigError(f"distributed: fsdp2: cannot find the decoder layers of {type(model).__name__}")


def shard_fsdp2(model: nn.Module, device_type: str, param_dtype: torch.dtype | None = None) -> nn.Module:
    """`fully_shard` each decoder layer, then the whole model (the embeddings, the final
    norm, the LM or value head, and tied weights together in the root unit). In place.

    Every unit, the root included, reshards after its forward: FSDP2 would otherwise keep
    the root whole after a forward (it expects a backward), and a frozen model that only
    scores would then hold its embeddings whole on every process for good.

    `param_dtype`: FSDP2's mixed precision, for a unit whose parameters differ in dtype
    (float32 LoRA masters on a bfloat16 base): they are gathered in this dtype and their
    gradients reduced in float32 (FSDP2 refuses mixed dtypes otherwise)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (torch.distributed.get_world_size(),))
    options = {"mesh": mesh, "reshard_after_forward": True}
    if param_dtype is not None:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    try:
        layers = decoder_layers(model)
    except ConfigError:
        layers = []  # a module without decoder layers (a value head) is one unit
    for layer in layers:
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def local_fraction(model: nn.Module) -> float:
    """The share of `model`'s parameter elements this process stores (1.0 unsharded;
    about 1/N under FSDP2 on N processes)."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local / total if total else 1.0


@contextlib.contextmanager
def gathered(model: nn.Module):
    """Inside, a sharded model holds its full weights on every process and runs forwards
    with no collectives, so processes may generate different numbers of tokens (what
    verl and OpenRLHF do before a rollout). Unsharded models: nothing happens.

    Every process must enter and leave together (the gather is collective).
    """
    units = fsdp_units(model)
    if not units:
        yield model
        return
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for unit in units:
            unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()


def generates_on_shards(model: nn.Module) -> bool:
    """Whether `model` is FSDP2-sharded right now (outside `gathered`) in a multi-process
    run: its forwards all-gather, so every process must run the same number of them
    (`generate(synced_gpus=True)`: a process whose rows all finished keeps stepping)."""
    from torch.distributed.tensor import DTensor

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    return torch.distributed.get_world_size() > 1 and any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `model` as whole CPU tensors. Every process must call
    it (collective under FSDP2); with a process group only rank 0 receives the tensors
    (the others get an empty dict). Names are those of the unwrapped model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(unwrap(model), options=options)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
