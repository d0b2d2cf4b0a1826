"""The three networks of PPO in either memory mode, behind one small interface.

separate  policy, reference and critic are three models (the reference frozen).
lora      one frozen base model with two LoRA adapters, "policy" and "critic";
          the reference is the base with adapters disabled
          (`with model.disable_adapter():`), so it costs no memory.

The critic is a transformer body with a value head, `nn.Linear(hidden, 1)`, read at
every position. With `critic_init: policy` (the default) the body is the initial
policy's and the head is new and zero-initialised: every value starts at 0, the mean
of its whitened targets. With `helpfulness_rm` the body and head are the helpfulness
RM's (the value function starts from a model that already scores responses), and the
loop re-scales the head at iteration 1 with the whitening statistics of the
helpfulness RM's scores (`Critic.rescale_`), so the first values are on the targets'
scale, not the RM's.

The re-scale divides by the batch's score std, so an RM whose scores barely vary
across responses (a random one: the tests' tiny RMs) gives large values on prefixes
it never learned to score; `policy` is the robust choice, `helpfulness_rm` the
InstructGPT one (OpenRLHF normalises its RM-initialised critic the same way).

Precision: the trainable weights (policy, critic, adapters, value head) are float32
masters whatever `model.dtype` says; `model.dtype: bfloat16` is the compute dtype,
applied by `PPOModels.autocast()` around every rollout and training forward. Frozen
weights (the reference, the lora base) are stored in the compute dtype, so in
separate mode the first KL is not exactly 0 (the policy's norms and embeddings run in
float32, the reference's in bf16: 5e-4 nats per 6-token answer on the tiny model). The
layers `model.trainable_layers` freezes in the policy and the critic stay float32 (the
policy's own copy; only their optimizer state is saved).

Distributed (`distributed` in the config, core/distributed.py): the policy and the
critic are trained through ONE module, `ActorCritic`, whose forward returns both the
policy's logits and the critic's values, so one backward trains both and the engine
synchronises their gradients in it. `ddp`: that module goes through
`accelerator.prepare` (torch DDP). `fsdp2`: the policy, the critic and the frozen
reference are each sharded per decoder layer with `fully_shard` (the loop shards the
two reward models the same way: all five models, as core/memory_plan.py counts them).
Generation runs inside
`core.distributed.gathered` (whole weights, no collectives per token), or on the shards
with `model.generation_weights: sharded` (one layer gathered at a time, every token).

`PPOModels` only runs forwards; the loop owns the optimizer and the steps.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from core.distributed import can_shard, decoder_layers, gathered, shard_fsdp2
from core.errors import ConfigError, ModelLoadError
from core.models import (
    freeze_lower_layers,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
    torch_dtype,
)

POLICY_ADAPTER = "policy"
CRITIC_ADAPTER = "critic"


class Critic(nn.Module):
    """Value model: `body` and `head` (hidden -> 1).

    `body` is a transformer without LM head, or (`through_lm`, lora mode) the whole causal
    LM, read through its last hidden state: the critic then enters the shared base by
    the same module as the policy and the reference, which FSDP2 needs (one root unit)."""

    def __init__(self, body: nn.Module, head: nn.Linear, through_lm: bool = False):
        super().__init__()
        self.body = body
        self.head = head
        self.through_lm = through_lm

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        """(B, T) ids -> (B, T) float32 values, one per position (the head in float32 even under autocast)."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
        if self.through_lm:  # the final norm's output; the LM head runs on one position only
            hidden = self.body(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        else:
            hidden = self.body(**inputs).last_hidden_state
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()

    @torch.no_grad()
    def rescale_(self, mean: float, std: float) -> None:
        """head(h) <- (head(h) - mean) / std: an RM head that predicts the raw score
        logit now predicts the whitened score (the value targets' scale)."""
        self.head.weight.div_(std)
        self.head.bias.sub_(mean).div_(std)


def _critic_from_rm(path: str, dtype, device) -> Critic:
    """The RM's body and its scalar head, the head given a bias (0 unless the RM has one)
    so that `Critic.rescale_` can shift it."""
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(path), dtype=dtype, use_safetensors=True)
    if rm.config.num_labels != 1:
        raise ModelLoadError(f"reward_models.helpfulness: {path}: a reward model has one output, this one has {rm.config.num_labels}")
    body = rm.model if hasattr(rm, "model") else rm.base_model
    head = _new_head(rm.score.in_features, torch.float32, "cpu")
    with torch.no_grad():
        head.weight.copy_(rm.score.weight.float())
        if rm.score.bias is not None:
            head.bias.copy_(rm.score.bias.float())
    return Critic(body, head).to(device)


def _new_head(hidden: int, dtype, device) -> nn.Linear:
    head = nn.Linear(hidden, 1, bias=True, dtype=dtype, device=device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class ActorCritic(nn.Module):
    """The trained networks as one module: forward -> (policy logits, critic values).

    DDP and FSDP2 synchronise gradients in the backward of the module they wrap, and DDP
    allows one forward per backward; the loop runs policy and critic together here.
    In lora mode both are adapters of one base, switched inside the forward.
    """

    def __init__(self, models: PPOModels):
        super().__init__()
        self.policy = models.policy
        self.critic = models.critic
        self._models = [models]  # a list: not registered as a submodule twice

    def forward(self, input_ids, attention_mask, position_ids, keep: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> ((B, T or keep, V) logits, (B, T) values)."""
        models = self._models[0]
        logits = models.policy_logits(input_ids, attention_mask, position_ids, keep=keep)
        return logits, models.values(input_ids, attention_mask, position_ids)


@dataclass
class PPOModels:
    """Policy, reference and critic, and the parameters the optimizer trains.

    policy:          the module that generates (a PeftModel in lora mode)
    policy_params:   name -> trainable parameter of the policy (its weights, or those of its top
                     `model.trainable_layers`; or the policy adapter)
    critic_params:   name -> trainable parameter of the critic (body or its top layers, and
                     head; or adapter and head)
    """

    mode: str
    policy: nn.Module
    critic: Critic
    reference: nn.Module | None  # None in lora mode (the base with adapters disabled)
    policy_params: dict[str, nn.Parameter] = field(default_factory=dict)
    critic_params: dict[str, nn.Parameter] = field(default_factory=dict)
    compute_dtype: torch.dtype | None = None  # autocast dtype (None: float32, no autocast)
    keeps_logits: bool = False  # the causal LM takes `logits_to_keep` (then only response logits are computed)
    actor_critic: ActorCritic | None = None  # policy and critic as one module (set by `prepare_distributed`)
    trainer: nn.Module | None = None  # what the training forward calls: actor_critic, or its DDP wrapper
    sharded: bool = False  # FSDP2: each process holds a shard of policy, critic and reference
    checkpointed_layers: list[nn.Module] = field(default_factory=list)  # decoder layers under gradient checkpointing
    gather_for_generation: bool = True  # model.generation_weights: gathered (False: generate on the shards)

    def autocast(self):
        """The context every rollout and training forward runs in: autocast to the
        compute dtype over the float32 masters, or nothing in float32.

        The weight-cast cache is off: with it, every float32 weight's bf16 cast stays
        cached until the context exits, even under no_grad (measured on CPU: +264 MiB for
        8 float32 4096 x 4096 layers, +8 without), so a rollout would hold a bf16 copy of
        the policy and the critic and gradient checkpointing would keep every layer's
        copy (core/memory_plan.py counts neither). The price: generation casts the weights
        again at every new token."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        device_type = next(self.policy.parameters()).device.type
        return torch.autocast(device_type=device_type, dtype=self.compute_dtype, cache_enabled=False)

    # -- adapters ------------------------------------------------------------
    @contextlib.contextmanager
    def _adapter(self, name: str):
        if self.mode != "lora":
            yield
            return
        self.policy.set_adapter(name)
        try:
            yield
        finally:
            self.policy.set_adapter(POLICY_ADAPTER)
            # set_adapter marks only the active adapter trainable; both must stay so
            # for the one optimizer (and for the graph built before the switch).
            for param in [*self.policy_params.values(), *self.critic_params.values()]:
                param.requires_grad_(True)

    def for_generation(self) -> nn.Module:
        return self.policy  # in lora mode the policy adapter is the active one between calls

    # -- forwards ------------------------------------------------------------
    def _keep(self, keep: int) -> dict:
        return {"logits_to_keep": keep} if keep and self.keeps_logits else {}

    def policy_logits(self, input_ids, attention_mask, position_ids, keep: int = 0) -> torch.Tensor:
        """(B, T, V) logits, or at least the last `keep` positions' (the LM head over the
        prompt would cost a (B, P, V) tensor that PPO never reads)."""
        return self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                           **self._keep(keep)).logits

    @torch.no_grad()
    def reference_logits(self, input_ids, attention_mask, position_ids, keep: int = 0) -> torch.Tensor:
        model = self.reference if self.mode != "lora" else self.policy
        with self.policy.disable_adapter() if self.mode == "lora" else contextlib.nullcontext():
            return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                         **self._keep(keep)).logits

    def values(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        with self._adapter(CRITIC_ADAPTER):
            return self.critic(input_ids, attention_mask, position_ids)

    def train_forward(self, input_ids, attention_mask, position_ids, keep: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits and critic values in one forward of the (wrapped) trained module.

        Under `model.gradient_checkpointing` the decoder layers recompute their activations
        in the backward. transformers checkpoints a layer only while its own `training`
        flag is set; only that flag is raised here (not recursively), so attention and
        LoRA dropout stay off and the step equals the one without checkpointing."""
        for layer in self.checkpointed_layers:
            layer.training = True
        try:
            return self.trainer(input_ids, attention_mask, position_ids, keep=keep)
        finally:
            for layer in self.checkpointed_layers:
                layer.training = False

    def generating_policy(self):
        """A context inside which the policy generates: with whole weights
        (`core.distributed.gathered`), or on its shards under `model.generation_weights:
        sharded` (`core.generation.generate_batch` then keeps the processes in step)."""
        if not self.gather_for_generation:
            return contextlib.nullcontext(self.policy)
        return gathered(self.policy)

    # -- weights -------------------------------------------------------------
    def trainable(self) -> list[nn.Parameter]:
        return [*self.policy_params.values(), *self.critic_params.values()]

    def merged_policy(self) -> nn.Module:
        """The policy as a plain causal LM (lora: critic adapter dropped, policy adapter merged)."""
        if self.mode != "lora":
            return self.policy
        self.policy.delete_adapter(CRITIC_ADAPTER)
        # Merged in float32: the adapter's small update would round away in a bf16 base.
        return self.policy.to(torch.float32).merge_and_unload()


def prepare_distributed(models: PPOModels, accelerator, mode: str, generation_weights: str = "gathered") -> PPOModels:
    """Put the trained networks on `mode`'s engine (see the module docstring); the
    optimizer must be built afterwards, over `models.trainable()` (FSDP2 replaces every
    parameter by its shard). In place; returns `models`. (`run` checked the launch
    against `mode` before the run folder was touched.)"""
    if mode == "fsdp2" and can_shard(accelerator.num_processes):
        device_type = accelerator.device.type
        models.gather_for_generation = generation_weights == "gathered"
        if models.mode == "lora":
            # One sharded base carries both adapters (and is the reference); the value
            # head is its own unit. A bf16 base with float32 adapters needs FSDP2's
            # mixed precision (gathered in bf16, the compute dtype anyway).
            mixed = models.compute_dtype
            base_dtypes = {p.dtype for p in models.policy.get_base_model().parameters()}
            if mixed is None and base_dtypes != {torch.float32}:
                raise ConfigError(
                    f"model.memory: lora with distributed: fsdp2 and model.dtype {models.policy.get_base_model().dtype}: "
                    "the frozen base is stored in its checkpoint's dtype but the adapters in float32, and one FSDP2 "
                    "unit cannot hold both without a compute dtype to gather them in; set model.dtype: bfloat16 "
                    "(or float32)"
                )
            # The root unit is the causal LM under the adapters: generation, the policy,
            # the reference and the critic all enter the base through its forward.
            shard_fsdp2(models.policy.get_base_model(), device_type, param_dtype=mixed)
            shard_fsdp2(models.critic.head, device_type)
            registered = dict(models.policy.named_parameters())
            models.policy_params = {name: registered[name] for name in models.policy_params}
            models.critic_params = {name: (registered[name] if not name.startswith("head.") else
                                           models.critic.head.get_parameter(name.removeprefix("head.")))
                                    for name in models.critic_params}
        else:
            for module in (models.policy, models.critic, models.reference):  # the critic's root unit holds its value head
                shard_fsdp2(module, device_type)
            models.policy_params = trainable_parameters(models.policy)
            models.critic_params = trainable_parameters(models.critic)
        models.sharded = True
    models.actor_critic = ActorCritic(models)
    engine = str(getattr(accelerator, "distributed_type", "")).rsplit(".", 1)[-1]
    if mode == "ddp" and engine in ("FSDP", "DEEPSPEED"):
        raise ConfigError(f"distributed: ddp, but accelerate was launched with a {engine} config, which would wrap "
                          "PPO's models its own way; set distributed: fsdp2 (PPO shards with FSDP2 itself) or launch "
                          "with a DDP config (configs/accelerate/ddp_8gpu.yaml) or torchrun")
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched != "no":
        raise ConfigError(f"accelerate was launched with mixed_precision {launched}, which would autocast only PPO's "
                          "training forward; launch with --mixed_precision no and set model.dtype instead")
    wrapped = mode == "ddp" and accelerator.num_processes > 1
    if wrapped and str(accelerator.mixed_precision) != "no":
        # The process's accelerate state is shared: an earlier stage in this process (a TRL
        # fine-tune in bf16, in a pipeline) left it in bf16, and accelerator.prepare would
        # then autocast the training forward. One process never goes through prepare.
        raise ConfigError(f"accelerate's state in this process is mixed_precision {accelerator.mixed_precision} "
                          "(set by an earlier stage of this process), which would autocast PPO's training forward "
                          "under DDP; run PPO in its own launch (torchrun ... -m ppo) and set model.dtype")
    if wrapped:
        models.trainer = accelerator.prepare_model(models.actor_critic)
    else:
        models.trainer = models.actor_critic
    return models


def enable_gradient_checkpointing(models: PPOModels) -> None:
    """transformers' per-layer checkpointing (non-reentrant, which FSDP2 and DDP support)
    on the policy's and the critic's decoder layers (in lora mode one base serves both)."""
    bodies = [models.policy] if models.mode == "lora" else [models.policy, models.critic.body]
    layers = []
    for body in bodies:
        lm = body.get_base_model() if hasattr(body, "get_base_model") else body
        if getattr(lm.config, "attention_dropout", 0.0):
            raise ConfigError(f"model.gradient_checkpointing: {lm.config.name_or_path} has attention_dropout "
                              f"{lm.config.attention_dropout}; PPO runs without dropout (rollouts and updates must agree)")
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        layers.extend(decoder_layers(lm))
    models.checkpointed_layers = layers


MASTER_DTYPE = "float32"  # every weight an optimizer updates


def compute_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of `model.dtype` (None: compute in float32)."""
    if dtype in ("float32", "auto"):
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    raise ConfigError(f"model.dtype: {dtype} is not a PPO compute dtype (float32, bfloat16 or auto)")


def lora_model(settings, dtype: str, device) -> nn.Module:
    """The lora mode's one model: the frozen base in `dtype` with the "policy" (active)
    and "critic" LoRA adapters."""
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    base = load_causal_lm(settings.policy, dtype=dtype, device=str(device))
    base.requires_grad_(False)

    def lora_config():
        return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM")

    model = get_peft_model(base, lora_config(), adapter_name=POLICY_ADAPTER)
    model.add_adapter(CRITIC_ADAPTER, lora_config())
    model.set_adapter(POLICY_ADAPTER)
    return model


def whole_policy(settings, state: dict[str, torch.Tensor]) -> nn.Module:
    """A plain float32 causal LM on the CPU holding `state`, the gathered weights of a
    sharded policy (lora mode: the base with both adapters, merged to the policy's)."""
    if settings.memory == "lora":
        model = lora_model(settings, "float32", "cpu")
    else:
        model = load_causal_lm(settings.policy, dtype="float32", device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {name for name in missing if name.endswith("lm_head.weight") and model.config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise ModelLoadError(f"the gathered policy does not match {settings.policy}: "
                             f"missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]}")
    if settings.memory == "lora":
        model.delete_adapter(CRITIC_ADAPTER)
        return model.merge_and_unload()
    return model


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter of `module` that trains (not frozen by `model.trainable_layers`)."""
    return {name: param for name, param in module.named_parameters() if param.requires_grad}


def build_models(config, device) -> tuple[PPOModels, object]:
    """Load the policy, reference and critic for `config.model.memory`; returns (models, tokenizer).

    Trainable weights are loaded in float32 (the masters); frozen ones in `model.dtype`.
    """
    settings = config.model
    frozen_dtype = settings.dtype
    master = torch_dtype(MASTER_DTYPE)
    tokenizer = load_tokenizer(settings.policy)
    if settings.memory == "separate":
        policy = load_causal_lm(settings.policy, dtype=MASTER_DTYPE, device=str(device))
        reference = load_causal_lm(settings.policy, dtype=frozen_dtype, device=str(device))
        reference.requires_grad_(False)
        if settings.critic_init == "helpfulness_rm":
            critic = _critic_from_rm(config.reward_models.helpfulness, master, device)
            rm_tokenizer = load_tokenizer(config.reward_models.helpfulness)
            if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
                raise ConfigError(
                    "model.critic_init: helpfulness_rm needs the RM to share the policy's tokenizer "
                    f"({config.reward_models.helpfulness} does not); set critic_init: policy"
                )
        else:
            body = load_causal_lm(settings.policy, dtype=MASTER_DTYPE, device=str(device)).model
            critic = Critic(body, _new_head(body.config.hidden_size, master, device))
        critic.requires_grad_(True)
        policy.requires_grad_(True)
        if settings.trainable_layers is not None:
            freeze_lower_layers(policy, settings.trainable_layers, "model.trainable_layers")
            freeze_lower_layers(critic.body, settings.trainable_layers, "model.trainable_layers")
        models = PPOModels(
            "separate", policy, critic, reference,
            policy_params=trainable_parameters(policy),
            critic_params=trainable_parameters(critic),
        )
    else:
        model = lora_model(settings, frozen_dtype, device)
        lm = model.get_base_model()  # the causal LM under the adapters, LoRA layers injected
        critic = Critic(lm, _new_head(lm.config.hidden_size, master, device), through_lm=True)
        policy_params = {n: p for n, p in model.named_parameters() if "lora_" in n and f".{POLICY_ADAPTER}." in n}
        critic_params = {n: p for n, p in model.named_parameters() if "lora_" in n and f".{CRITIC_ADAPTER}." in n}
        critic_params.update({f"head.{n}": p for n, p in critic.head.named_parameters()})
        for param in [*policy_params.values(), *critic_params.values()]:
            param.data = param.data.to(master)  # adapters on a bf16 base: float32 masters (PEFT's LoRA casts its input)
            param.requires_grad_(True)
        model.eval()
        models = PPOModels("lora", model, critic, None, policy_params=policy_params, critic_params=critic_params)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(models)
    models.compute_dtype = compute_dtype(settings.dtype)
    lm = models.policy.get_base_model() if settings.memory == "lora" else models.policy
    models.keeps_logits = "logits_to_keep" in inspect.signature(lm.forward).parameters
    not_master = sorted(n for n, p in [*models.policy_params.items(), *models.critic_params.items()] if p.dtype != master)
    if not_master:  # a guard: plain AdamW on bf16 weights rounds PPO's steps away
        raise ConfigError(f"trainable weights not in float32: {', '.join(not_master[:3])}; the optimizer needs float32 masters")
    models.policy.eval()  # no dropout: rollouts and training forwards must agree
    models.critic.eval()
    if models.reference is not None:
        models.reference.eval()
    if models.policy_params and not models.critic_params:
        raise ConfigError("the critic has no trainable parameters")
    return models, tokenizer
