"""The three networks of PPO in either memory mode, behind one small interface.

separate  policy, reference and critic are three models (the reference frozen).
lora      one frozen base model with two LoRA adapters, "policy" and "critic";
          the reference is the base with adapters disabled
          (`with model.disable_adapter():`), so it costs no memory.

The critic is a transformer body with a value head, `nn.Linear(hidden, 1)`, read at
every position. With `critic_init: helpfulness_rm` the body and head are the
helpfulness RM's (a Llama 2 choice: the value function starts from a model that
already scores responses); with `policy` the body is the initial policy's and the
head is new and zero-initialised (every value starts at 0).

`PPOModels` only runs forwards; the loop owns the optimizer and the steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import ConfigError, ModelLoadError
from core.models import load_causal_lm, load_tokenizer, resolve_model_path, torch_dtype

POLICY_ADAPTER = "policy"
CRITIC_ADAPTER = "critic"


class Critic(nn.Module):
    """Value model: `body` (a transformer without LM head) and `head` (hidden -> 1)."""

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        """(B, T) ids -> (B, T) float32 values, one per position."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()


def _critic_from_rm(path: str, dtype, device) -> Critic:
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(path), dtype=dtype, use_safetensors=True)
    if rm.config.num_labels != 1:
        raise ModelLoadError(f"reward_models.helpfulness: {path}: a reward model has one output, this one has {rm.config.num_labels}")
    body = rm.model if hasattr(rm, "model") else rm.base_model
    head = rm.score
    return Critic(body, head).to(device)


def _new_head(hidden: int, dtype, device) -> nn.Linear:
    head = nn.Linear(hidden, 1, bias=True, dtype=dtype, device=device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


@dataclass
class PPOModels:
    """Policy, reference and critic, and the parameters the optimizer trains.

    policy:          the module that generates (a PeftModel in lora mode)
    policy_params:   name -> trainable parameter of the policy (all weights, or the policy adapter)
    critic_params:   name -> trainable parameter of the critic (body and head, or adapter and head)
    """

    mode: str
    policy: nn.Module
    critic: Critic
    reference: nn.Module | None  # None in lora mode (the base with adapters disabled)
    policy_params: dict[str, nn.Parameter] = field(default_factory=dict)
    critic_params: dict[str, nn.Parameter] = field(default_factory=dict)

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
    def policy_logits(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        return self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits

    @torch.no_grad()
    def reference_logits(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        if self.mode == "lora":
            with self.policy.disable_adapter():
                return self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits
        return self.reference(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits

    def values(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        with self._adapter(CRITIC_ADAPTER):
            return self.critic(input_ids, attention_mask, position_ids)

    # -- weights -------------------------------------------------------------
    def trainable(self) -> list[nn.Parameter]:
        return [*self.policy_params.values(), *self.critic_params.values()]

    def merged_policy(self) -> nn.Module:
        """The policy as a plain causal LM (lora: critic adapter dropped, policy adapter merged)."""
        if self.mode != "lora":
            return self.policy
        self.policy.delete_adapter(CRITIC_ADAPTER)
        return self.policy.merge_and_unload()


def build_models(config, device) -> tuple[PPOModels, object]:
    """Load the policy, reference and critic for `config.model.memory`; returns (models, tokenizer)."""
    settings = config.model
    dtype = torch_dtype(settings.dtype)
    tokenizer = load_tokenizer(settings.policy)
    if settings.memory == "separate":
        policy = load_causal_lm(settings.policy, dtype=settings.dtype, device=str(device))
        reference = load_causal_lm(settings.policy, dtype=settings.dtype, device=str(device))
        reference.requires_grad_(False)
        if settings.critic_init == "helpfulness_rm":
            critic = _critic_from_rm(config.reward_models.helpfulness, dtype, device)
            rm_tokenizer = load_tokenizer(config.reward_models.helpfulness)
            if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
                raise ConfigError(
                    "model.critic_init: helpfulness_rm needs the RM to share the policy's tokenizer "
                    f"({config.reward_models.helpfulness} does not); set critic_init: policy"
                )
        else:
            body = load_causal_lm(settings.policy, dtype=settings.dtype, device=str(device)).model
            critic = Critic(body, _new_head(body.config.hidden_size, dtype, device))
        critic.requires_grad_(True)
        policy.requires_grad_(True)
        models = PPOModels(
            "separate", policy, critic, reference,
            policy_params=dict(policy.named_parameters()),
            critic_params=dict(critic.named_parameters()),
        )
    else:
        from peft import LoraConfig, get_peft_model

        lora = settings.lora
        base = load_causal_lm(settings.policy, dtype=settings.dtype, device=str(device))
        base.requires_grad_(False)

        def lora_config():
            return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM")

        model = get_peft_model(base, lora_config(), adapter_name=POLICY_ADAPTER)
        model.add_adapter(CRITIC_ADAPTER, lora_config())
        model.set_adapter(POLICY_ADAPTER)
        inner = model.get_base_model().model  # the LlamaModel under the LM head, LoRA layers injected
        critic = Critic(inner, _new_head(inner.config.hidden_size, dtype, device))
        policy_params = {n: p for n, p in model.named_parameters() if "lora_" in n and f".{POLICY_ADAPTER}." in n}
        critic_params = {n: p for n, p in model.named_parameters() if "lora_" in n and f".{CRITIC_ADAPTER}." in n}
        critic_params.update({f"head.{n}": p for n, p in critic.head.named_parameters()})
        for param in [*policy_params.values(), *critic_params.values()]:
            param.requires_grad_(True)
        model.eval()
        models = PPOModels("lora", model, critic, None, policy_params=policy_params, critic_params=critic_params)
    models.policy.eval()  # no dropout: rollouts and training forwards must agree
    models.critic.eval()
    if models.reference is not None:
        models.reference.eval()
    if models.policy_params and not models.critic_params:
        raise ConfigError("the critic has no trainable parameters")
    return models, tokenizer
