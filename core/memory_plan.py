"""How many bytes PPO needs per GPU at Llama-2 sizes: a small pure function and its table.

    python -m core.memory_plan            # the README's table: 7B and 70B on 8 x 80 GB

PPO holds five models: the policy and the critic (trained), the reference π0 and the
two reward models (frozen); in `model.memory: lora` one frozen base carries a policy
and a critic adapter and is the reference with its adapters off. Per GPU and per model
the plan counts, from the Llama-2 shapes (parameter counts are derived from them):

- weights: trained weights are float32 masters whatever `model.dtype` says (`ppo/models.py`),
  4 bytes a parameter; frozen ones are stored in the compute dtype (the reference, the
  lora base: `model.dtype`; the RMs: `reward_models.dtype`), 2 bytes in bfloat16;
- gradients: float32, 4 bytes per trained parameter (DDP adds a bucket copy of them);
  with `model.trainable_layers: N` (separate mode) the trained parameters are the top N
  decoder layers, the final norm and what sits outside the body (the policy's untied LM
  head, the critic's value head); the frozen ones keep their float32 weights
  (`core.models.freeze_lower_layers`) but have no gradient, no AdamW moments, no
  autocast copy and no activations kept (the backward stops at the lowest trained layer);
- optimizer: AdamW's two float32 moments, 8 bytes per trained parameter. The float32
  master IS the weight here (no separate copy): 16 bytes per trained parameter in all,
  the same total as the bf16-weights + fp32-master layout of DeepSpeed and Megatron;
- autocast copies: under `model.dtype: bfloat16` autocast casts each float32 weight to
  bfloat16 in the forward and autograd keeps that copy for the backward (checked on
  torch 2.13: `F.linear` under autocast saves the bf16 weight). The copies are new
  tensors, so FSDP2 does not shard or free them: 2 bytes x every parameter of the
  trained model being back-propagated (the policy and the critic run their backward
  one after the other), or one decoder layer's with gradient checkpointing. FSDP2's
  `MixedPrecisionPolicy(param_dtype=bfloat16)` instead of autocast would remove this term;
- FSDP2 working set: the unsharded parameters of two decoder layers (the current one
  and the prefetched one) and of the root (embeddings, final norm, LM head), in the
  stored dtype of the largest model;
- activations of one training forward and backward of `rows` = min(ppo.micro_batch_size,
  ppo.minibatch_size / n_gpus) sequences of `prompt_tokens + sampling.max_new_tokens`
  tokens (see `layer_activation_bytes`), plus the LM head's logits over the response;
  attention by a flash/memory-efficient kernel (no T x T scores kept);
- rollout KV cache: `ppo.chunk_size` sequences generated together per process, keys and
  values of every layer in the compute dtype;
- the policy gathered for generation: under `distributed: fsdp2` with
  `model.generation_weights: gathered` (the default) every process holds the WHOLE policy
  while it samples (`core.distributed.gathered`: no collective per token), on top of its
  shard: the float32 masters in separate mode, the base in its stored dtype and both
  adapters in the compute dtype in lora mode. `sharded` generates on the shards instead
  (FSDP2 gathers one layer at a time at every token, the working set above): no whole
  copy, one all-gather per layer per token.

Rollout and training do not overlap, and gradients are freed after each optimizer step
(`zero_grad(set_to_none=True)`), so the peak is the weights and optimizer state plus the
larger of the two phases. `distributed: fsdp2` divides every model's weights, gradients
and optimizer state by the number of GPUs (trained and frozen models are both sharded);
`none` and `ddp` keep a full copy in every process. `offload` (FSDP2's CPU offload) keeps
the sharded weights, gradients and optimizer state in CPU memory; the GPU holds the
working set only. A GPU of `gpu_gb` GB is taken as that many GiB of which 90 % is usable
(CUDA context, NCCL buffers, allocator fragmentation).

Left out, each well under a GiB at these sizes: the rollout record (ids, log-probs,
values, advantages: tens of bytes per token), the frozen models' no-grad forwards
(one layer's activations at a time), the value and score heads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

GiB = 1024**3
USABLE = 0.9  # of a GPU's memory: the rest is CUDA context, NCCL buffers, fragmentation
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: Llama-2 checkpoints are float16
MASTER_BYTES = 4  # trained weights: float32 masters (ppo/models.py MASTER_DTYPE)
GRAD_BYTES = 4  # gradients of float32 masters
ADAM_BYTES = 8  # AdamW: exp_avg and exp_avg_sq, float32
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LlamaShape:
    """A Llama decoder's shape; every parameter count is derived from it."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """Width of the key and value projections (grouped-query attention: kv_heads x head_dim)."""
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of one decoder layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        """One decoder layer: the seven projections (no biases) and two RMSNorm weights."""
        return sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden

    @property
    def root_params(self) -> int:
        """Outside the layers: token embeddings, the final norm, the LM head (unless tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    @property
    def params(self) -> int:
        """A causal LM (policy, reference)."""
        return self.layers * self.layer_params + self.root_params

    @property
    def scalar_params(self) -> int:
        """The body with a scalar head instead of the LM head (critic, reward model)."""
        body = self.params - (0 if self.tied_embeddings else self.vocab * self.hidden)
        return body + self.hidden + 1

    def trained_params(self, trainable_layers: int | None, scalar_head: bool = False) -> int:
        """What a full fine-tune trains (`params` or `scalar_params`) or, with the top
        `trainable_layers` only, those layers, the final norm and the head outside the
        body (an untied LM head; a scalar head's weight and bias)."""
        if trainable_layers is None:
            return self.scalar_params if scalar_head else self.params
        if not 1 <= trainable_layers <= self.layers:
            raise ValueError(f"trainable_layers: {trainable_layers}, but {self.name} has {self.layers} decoder layers")
        head = self.hidden + 1 if scalar_head else (0 if self.tied_embeddings else self.vocab * self.hidden)
        return trainable_layers * self.layer_params + self.hidden + head

    def lora_params(self, r: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
        """One LoRA adapter: A (r x in) and B (out x r) on each target projection of every layer."""
        shapes = self.linear_shapes()
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)

    def layer_activation_bytes(self, compute_bytes: int, residual_bytes: int) -> int:
        """Bytes one token keeps for the backward of one decoder layer.

        Compute dtype (what autocast hands the matmuls): the inputs of the q/k/v, o,
        gate/up and down projections (h, h, h, I), the rotated queries, keys and values
        the attention kernel keeps (h, kv, kv), the gate output, its SiLU and the up
        output (3 I): 4h + 2kv + 4I. Residual dtype (float32 when the masters are float32,
        whatever autocast does): two RMSNorms keep their input and normalised input (4h).
        """
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return (4 * h + 2 * kv + 4 * i) * compute_bytes + 4 * h * residual_bytes


# The published configs (config.json of meta-llama/Llama-2-{7,13,70}b-hf).
LLAMA2_7B = LlamaShape("Llama-2-7B", hidden=4096, layers=32, intermediate=11008, vocab=32000, heads=32, kv_heads=32)
LLAMA2_13B = LlamaShape("Llama-2-13B", hidden=5120, layers=40, intermediate=13824, vocab=32000, heads=40, kv_heads=40)
LLAMA2_70B = LlamaShape("Llama-2-70B", hidden=8192, layers=80, intermediate=28672, vocab=32000, heads=64, kv_heads=8)
LLAMA2 = {"7b": LLAMA2_7B, "13b": LLAMA2_13B, "70b": LLAMA2_70B}


def llama2_shape(name: str | None) -> LlamaShape | None:
    """The Llama-2 shape a model name names (`meta-llama/Llama-2-7b-hf`, `Llama-2-70b-chat-hf`,
    a folder `.../llama2-7b/...`); None for anything else."""
    if not name:
        return None
    match = re.search(r"llama-?2-(7|13|70)b(?![0-9])", str(name).lower())
    return LLAMA2[f"{match.group(1)}b"] if match else None


@dataclass(frozen=True)
class PPOMemorySettings:
    """The PPO settings the plan depends on (defaults: Llama 2's batch 512 / minibatch 64)."""

    memory: Literal["separate", "lora"] = "separate"
    dtype: str = "bfloat16"  # model.dtype: the compute dtype; also the reference's / lora base's storage
    rm_dtype: str = "bfloat16"  # reward_models.dtype
    distributed: Literal["none", "ddp", "fsdp2"] = "none"
    offload: bool = False  # FSDP2 CPU offload of weights, gradients and optimizer state
    gradient_checkpointing: bool = False
    n_gpus: int = 8
    batch_size: int = 512
    minibatch_size: int = 64
    micro_batch_size: int = 8
    chunk_size: int = 32
    prompt_tokens: int = 512  # longest prompt (the config has no key for it)
    response_tokens: int = 512  # sampling.max_new_tokens
    lora_r: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    generation_weights: Literal["gathered", "sharded"] = "gathered"  # model.generation_weights (fsdp2 only)
    trainable_layers: int | None = None  # model.trainable_layers: train the top N decoder layers (separate only)

    def __post_init__(self):
        if self.trainable_layers is not None and (self.memory != "separate" or self.trainable_layers < 1):
            raise ValueError("trainable_layers is a positive layer count for memory: separate")
        if self.offload and self.distributed != "fsdp2":
            raise ValueError("offload is FSDP2's CPU offload: it needs distributed: fsdp2")
        if self.dtype not in DTYPE_BYTES or self.rm_dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {self.dtype!r} / {self.rm_dtype!r} (expected one of {', '.join(DTYPE_BYTES)})")

    @property
    def seq_len(self) -> int:
        return self.prompt_tokens + self.response_tokens

    @property
    def shard(self) -> int:
        """How many processes share one model's weights, gradients and optimizer state."""
        return self.n_gpus if self.distributed == "fsdp2" else 1

    @property
    def rows_per_forward(self) -> int:
        """Sequences in one training forward on one process: the process's share of a
        minibatch, cut into micro-batches of ppo.micro_batch_size."""
        return max(1, min(self.micro_batch_size, self.minibatch_size // self.n_gpus))

    @property
    def compute_bytes(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4  # float32 and auto compute in float32

    def describe(self) -> str:
        parts = [f"memory={self.memory}", f"distributed={self.distributed}"]
        parts += ["offload"] if self.offload else []
        parts += ["checkpointing"] if self.gradient_checkpointing else []
        parts += ["sharded generation"] if self.distributed == "fsdp2" and self.generation_weights == "sharded" else []
        parts += [f"top {self.trainable_layers} layers trained"] if self.trainable_layers is not None else []
        return ", ".join(parts) + f", micro_batch={self.micro_batch_size}"


@dataclass(frozen=True)
class ModelMemory:
    """One model's share of one GPU (bytes), and of the host's memory when offloaded (per process)."""

    name: str
    params: int  # the whole model's (unsharded) parameter count
    trained: bool
    weights: int
    grads: int
    optimizer: int
    cpu: int = 0

    @property
    def gpu(self) -> int:
        return self.weights + self.grads + self.optimizer


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of one PPO configuration."""

    shape: LlamaShape
    settings: PPOMemorySettings
    models: tuple[ModelMemory, ...]
    autocast_copies: int
    fsdp_working: int
    activations: int
    logits: int
    rollout_kv: int
    gathered_policy: int = 0  # the whole policy on every process while it generates (fsdp2, gathered)

    @property
    def resident(self) -> int:
        """Weights and optimizer state: held through rollout and training."""
        return sum(m.weights + m.optimizer for m in self.models)

    @property
    def grads(self) -> int:
        return sum(m.grads for m in self.models)

    @property
    def rollout_peak(self) -> int:
        """Sampling (on the gathered policy, or one gathered layer at a time), then scoring
        with the frozen models (one gathered layer at a time): the larger of the two."""
        return self.resident + max(self.gathered_policy, self.fsdp_working) + self.rollout_kv

    @property
    def train_peak(self) -> int:
        return self.resident + self.grads + self.fsdp_working + self.autocast_copies + self.activations + self.logits

    @property
    def peak(self) -> int:
        return max(self.rollout_peak, self.train_peak)

    @property
    def cpu_per_node(self) -> int:
        """Host memory for the offloaded shards of every process on one node."""
        return sum(m.cpu for m in self.models) * self.settings.n_gpus

    def fits(self, gpu_gb: float) -> bool:
        return self.peak <= usable_bytes(gpu_gb)


def usable_bytes(gpu_gb: float) -> int:
    return int(gpu_gb * GiB * USABLE)


def _model(name: str, params: int, trained: bool, stored_bytes: int, s: PPOMemorySettings,
           trained_params: int | None = None) -> ModelMemory:
    """One model's bytes per GPU: its sharded weights (and gradients and AdamW moments of
    its `trained_params`, all `params` unless said, when trained)."""
    learning = (params if trained_params is None else trained_params) if trained else 0
    weights = math.ceil(params * stored_bytes / s.shard)
    grads = math.ceil(learning * GRAD_BYTES / s.shard)
    if trained and s.distributed == "ddp":
        grads *= 2  # DDP's gradient buckets: a second copy (gradient_as_bucket_view is off by default)
    optimizer = math.ceil(learning * ADAM_BYTES / s.shard)
    if s.offload:
        return ModelMemory(name, params, trained, 0, 0, 0, cpu=weights + grads + optimizer)
    return ModelMemory(name, params, trained, weights, grads, optimizer)


def ppo_memory_plan(shape: LlamaShape, settings: PPOMemorySettings) -> MemoryPlan:
    """Bytes per GPU for PPO on a model of `shape` (see the module docstring for what is counted)."""
    s = settings
    frozen, rm = DTYPE_BYTES[s.dtype], DTYPE_BYTES[s.rm_dtype]
    if s.memory == "separate":
        policy_trained = shape.trained_params(s.trainable_layers)
        models = [
            _model("policy", shape.params, True, MASTER_BYTES, s, policy_trained),
            _model("critic", shape.scalar_params, True, MASTER_BYTES, s, shape.trained_params(s.trainable_layers, scalar_head=True)),
            _model("reference", shape.params, False, frozen, s),
        ]
        largest_trained = policy_trained
        working_bytes = MASTER_BYTES  # the gathered layers of the float32 policy
    else:
        adapter = shape.lora_params(s.lora_r, s.lora_targets)
        models = [
            _model("LoRA base (= reference)", shape.params, False, frozen, s),
            _model("policy adapter", adapter, True, MASTER_BYTES, s),
            _model("critic adapter + head", adapter + shape.hidden + 1, True, MASTER_BYTES, s),
        ]
        largest_trained = adapter + shape.hidden + 1
        working_bytes = frozen  # the gathered layers are the base's
    models += [_model("helpfulness RM", shape.scalar_params, False, rm, s),
               _model("safety RM", shape.scalar_params, False, rm, s)]

    # autocast's bfloat16 weight copies, kept for the backward of the model being trained
    # (in lora mode the frozen base's weights are already in the compute dtype: no copy).
    copies = 0
    if s.compute_bytes == 2:
        casted = largest_trained if s.memory == "separate" else 0
        layer = shape.layer_params if s.memory == "separate" else 0
        copies = 2 * (layer if s.gradient_checkpointing else casted)

    fsdp_working = gathered_policy = 0
    if s.distributed == "fsdp2":
        fsdp_working = (2 * shape.layer_params + shape.root_params) * working_bytes
        if s.generation_weights == "gathered":
            if s.memory == "separate":
                gathered_policy = shape.params * MASTER_BYTES
            else:  # FSDP2's mixed precision gathers the adapters in the compute dtype
                gathered_policy = shape.params * frozen + 2 * adapter * s.compute_bytes

    rows, seq = s.rows_per_forward, s.seq_len
    residual = 4 if (s.memory == "separate" or s.dtype == "float32") else s.compute_bytes
    per_layer = shape.layer_activation_bytes(s.compute_bytes, residual)
    backward_layers = shape.layers if s.trainable_layers is None else s.trainable_layers
    if s.gradient_checkpointing:  # each layer's input kept, one layer recomputed at a time
        activations = rows * seq * (backward_layers * shape.hidden * residual + per_layer)
    else:
        activations = rows * seq * backward_layers * per_layer
    # The policy's logits over the response (and the token before it): the compute-dtype
    # output, its float32 copy and the float32 log-softmax kept for the backward.
    logits = rows * (s.response_tokens + 1) * shape.vocab * (s.compute_bytes + 8)
    rollout_kv = s.chunk_size * seq * shape.layers * 2 * shape.kv_dim * s.compute_bytes
    return MemoryPlan(shape, s, tuple(models), copies, fsdp_working, activations, logits, rollout_kv, gathered_policy)


def largest_micro_batch(shape: LlamaShape, settings: PPOMemorySettings, gpu_gb: float) -> int | None:
    """The largest ppo.micro_batch_size (a divisor of the process's minibatch share) that fits; None if even 1 does not."""
    share = max(1, settings.minibatch_size // settings.n_gpus)
    for micro in sorted((d for d in range(1, share + 1) if share % d == 0), reverse=True):
        if ppo_memory_plan(shape, replace(settings, micro_batch_size=micro)).fits(gpu_gb):
            return micro
    return None


# -- from a PPO config -------------------------------------------------------------------


def _lookup(config, *dotted: str, default=None):
    """The first of several dotted keys the config has (the distributed keys are new)."""
    for key in dotted:
        node = config
        for part in key.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if node is not None:
            return node
    return default


def settings_from_ppo_config(config, n_gpus: int, prompt_tokens: int = 512) -> PPOMemorySettings:
    """The plan's settings from a `ppo.config.PPOConfig` (read by attribute, so a config
    without the distributed keys yet counts as distributed: none)."""
    lora = config.model.lora
    return PPOMemorySettings(
        memory=config.model.memory,
        dtype=config.model.dtype,
        rm_dtype=_lookup(config, "reward_models.dtype", default="float32"),
        distributed=_lookup(config, "distributed", "model.distributed", default="none"),
        offload=bool(_lookup(config, "offload", "model.offload", "distributed_offload", default=False)),
        gradient_checkpointing=bool(_lookup(config, "gradient_checkpointing", "model.gradient_checkpointing",
                                            "ppo.gradient_checkpointing", default=False)),
        n_gpus=n_gpus,
        batch_size=config.ppo.batch_size,
        minibatch_size=config.ppo.minibatch_size,
        micro_batch_size=config.ppo.micro_batch_size,
        chunk_size=config.ppo.chunk_size,
        prompt_tokens=prompt_tokens,
        response_tokens=config.sampling.max_new_tokens,
        lora_r=lora.r,
        lora_targets=tuple(lora.target_modules),
        generation_weights=_lookup(config, "model.generation_weights", default="gathered"),
        trainable_layers=_lookup(config, "model.trainable_layers"),
    )


def candidates(base: PPOMemorySettings) -> list[PPOMemorySettings]:
    """The configurations a size may need, cheapest first: full fine-tuning sharded, then
    LoRA on a shared base (replicated, then sharded), then full fine-tuning offloaded;
    each with gradient checkpointing; the sharded ones generating on gathered weights
    (faster) before generating on the shards."""
    ckpt = replace(base, gradient_checkpointing=True, offload=False, generation_weights="gathered")
    sharded_generation = replace(ckpt, generation_weights="sharded")
    return [
        replace(ckpt, memory="separate", distributed="fsdp2"),
        replace(ckpt, memory="lora", distributed="ddp"),
        replace(ckpt, memory="lora", distributed="fsdp2"),
        replace(sharded_generation, memory="separate", distributed="fsdp2"),
        replace(sharded_generation, memory="lora", distributed="fsdp2"),
        replace(ckpt, memory="separate", distributed="fsdp2", offload=True),
        replace(sharded_generation, memory="separate", distributed="fsdp2", offload=True),
    ]


def suggestion(shape: LlamaShape, base: PPOMemorySettings, gpu_gb: float) -> str:
    """The first candidate configuration that fits, with the micro-batch it needs."""
    for option in candidates(base):
        micro = largest_micro_batch(shape, option, gpu_gb)
        if micro is not None:
            option = replace(option, micro_batch_size=micro)
            keys = [f"model.memory: {option.memory}", f"distributed: {option.distributed}"]
            keys += ["offload: true"] if option.offload else []
            keys += ["model.generation_weights: sharded"] if option.generation_weights == "sharded" else []
            keys += ["gradient checkpointing", f"ppo.micro_batch_size: {micro}"]
            plan = ppo_memory_plan(shape, option)
            extra = f"; {plan.cpu_per_node / GiB:.0f} GiB of host memory per node" if option.offload else ""
            return f"fits with {', '.join(keys)} ({plan.peak / GiB:.1f} GiB{extra})"
    return "no configuration of this repo fits; use more GPUs or a smaller model"


def ppo_memory_warning(ppo_config, n_gpus: int = 8, gpu_gb: float = 80, *, model_name: str | None = None,
                       prompt_tokens: int = 512) -> str | None:
    """One line when a PPO config on a known Llama-2 size cannot fit `n_gpus` GPUs of
    `gpu_gb` GB; None when it fits or the size is unknown. The size comes from
    `model_name` (e.g. the pipeline's base model) or else `model.policy`."""
    shape = llama2_shape(model_name) or llama2_shape(ppo_config.model.policy)
    if shape is None:
        return None
    settings = settings_from_ppo_config(ppo_config, n_gpus, prompt_tokens)
    plan = ppo_memory_plan(shape, settings)
    if plan.fits(gpu_gb):
        return None
    return (f"PPO at {shape.name} needs {plan.peak / GiB:.1f} GiB per GPU with {settings.describe()} "
            f"(usable {usable_bytes(gpu_gb) / GiB:.0f} of {gpu_gb:g} GiB on {n_gpus} GPUs; "
            f"python -m core.memory_plan); {suggestion(shape, settings, gpu_gb)}")


# -- the README's table ----------------------------------------------------------------


def table(shape: LlamaShape, options: list[tuple[str, PPOMemorySettings]], gpu_gb: float) -> str:
    """A markdown table, GiB per GPU: one column per configuration, one row per component."""
    plans = [(label, ppo_memory_plan(shape, s)) for label, s in options]

    def gib(value: int) -> str:
        return "-" if value == 0 else f"{value / GiB:.1f}"

    names = []
    for _, plan in plans:
        names += [m.name for m in plan.models if m.name not in names]
    rows: list[tuple[str, list[str]]] = []
    for name in names:
        found = [next((m for m in plan.models if m.name == name), None) for _, plan in plans]
        trained = any(m is not None and m.trained for m in found)
        for attr, label in (("weights", "weights"), ("grads", "gradients"), ("optimizer", "AdamW moments")):
            if attr == "weights" or trained:
                rows.append((f"{name}: {label}", [gib(getattr(m, attr)) if m is not None else "" for m in found]))
    rows += [
        ("autocast bf16 weight copies", [gib(p.autocast_copies) for _, p in plans]),
        ("FSDP2 gathered layers", [gib(p.fsdp_working) for _, p in plans]),
        ("activations (rows x tokens)", [f"{gib(p.activations)} ({p.settings.rows_per_forward} x {p.settings.seq_len})" for _, p in plans]),
        ("policy logits", [gib(p.logits) for _, p in plans]),
        ("rollout KV cache (chunk rows)", [f"{gib(p.rollout_kv)} ({p.settings.chunk_size})" for _, p in plans]),
        ("whole policy gathered for generation", [gib(p.gathered_policy) for _, p in plans]),
        ("**peak in rollout**", [gib(p.rollout_peak) for _, p in plans]),
        ("**peak in training**", [gib(p.train_peak) for _, p in plans]),
        (f"**fits {gpu_gb:g} GB ({USABLE:.0%} usable)?**", ["yes" if p.fits(gpu_gb) else "**no**" for _, p in plans]),
        ("host memory per node (offload)", [gib(p.cpu_per_node) for _, p in plans]),
    ]
    header = [f"{shape.name} ({shape.params / 1e9:.2f}B params), GiB per GPU", *(label for label, _ in plans)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return "\n".join(lines)


def readme_options(n_gpus: int = 8) -> list[tuple[str, PPOMemorySettings]]:
    """The configurations of the README's table: whole models on every process, then the
    ones a size may need; configs/ppo/paper.yaml is "separate, fsdp2, ckpt" (bfloat16,
    micro-batch 8, chunk 32, 512 new tokens; prompts of up to 512 tokens)."""
    base = PPOMemorySettings(n_gpus=n_gpus, rm_dtype="bfloat16")
    ckpt = replace(base, gradient_checkpointing=True)
    sharded = replace(ckpt, distributed="fsdp2", generation_weights="sharded")
    return [
        ("separate, none", base),
        ("separate, fsdp2", replace(base, distributed="fsdp2")),
        ("separate, fsdp2, ckpt (paper.yaml)", replace(ckpt, distributed="fsdp2")),
        ("lora, ddp, ckpt", replace(ckpt, memory="lora", distributed="ddp")),
        ("lora, fsdp2, ckpt", replace(ckpt, memory="lora", distributed="fsdp2")),
        ("lora, fsdp2, ckpt, sharded gen.", replace(sharded, memory="lora")),
        ("separate, fsdp2, offload, ckpt, sharded gen.", replace(sharded, offload=True)),
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.memory_plan", description=__doc__.split("\n")[0])
    parser.add_argument("--n-gpus", type=int, default=8)
    parser.add_argument("--gpu-gb", type=float, default=80)
    args = parser.parse_args(argv)
    options = readme_options(args.n_gpus)
    for shape in (LLAMA2_7B, LLAMA2_70B):
        print(f"### {shape.name} on {args.n_gpus} x {args.gpu_gb:g} GB\n")
        print(table(shape, options, args.gpu_gb))
        print()
        for label, settings in options:
            micro = largest_micro_batch(shape, settings, args.gpu_gb)
            print(f"- {label}: " + (f"largest ppo.micro_batch_size that fits: {micro}" if micro else "does not fit at any micro-batch"))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
