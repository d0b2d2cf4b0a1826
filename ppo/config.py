"""The PPO stage's one typed config (strict: unknown keys and wrong types are errors).

Defaults are Llama 2's PPO numbers (arXiv 2307.09288, section 3.2.3): clip 0.2,
batch 512, minibatch 64, one gradient step per minibatch, constant lr 1e-6,
AdamW (0.9, 0.95), eps 1e-5, weight decay 0.1, grad clip 1.0, β 0.01.

Batch sizes are GLOBAL: under `accelerate launch --num_processes N` each process
rolls out, scores and trains on `batch_size / N` prompts and `minibatch_size / N`
samples per minibatch (see `ppo/train.py` for how the split keeps the N-process run
equal to the one-process run).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from core.config import StrictModel
from core.evaluation import HeldoutEval
from core.generation import SamplingConfig
from core.models import DType, LoraSettings
from core.sources import PromptSourceSpec
from reward.gated import RewardModelsSection

# Old spellings -> the keys every stage now shares (the error names the new one).
PPO_RENAMED = {
    "reward.helpfulness_model": "reward_models.helpfulness",
    "reward.safety_model": "reward_models.safety",
    "reward.safety_threshold": "reward_models.safety_threshold",
    "reward.batch_size": "reward_models.batch_size",
    "reward": "reward_models",
    "data.heldout_prompts": "eval.prompts",
    "data.n_heldout": "eval.n_prompts",
    "optim.lr": "optim.learning_rate",
    "optim.critic_lr": "optim.critic_learning_rate",
}


class ModelSection(StrictModel):
    policy: str  # the initial policy (SFT or rejection-sampling checkpoint); also the frozen reference π0
    dtype: DType = "float32"
    # separate: policy, reference and critic are three models.
    # lora: one frozen base; a "policy" and a "critic" LoRA adapter on it; the
    #       reference is the base with adapters disabled.
    memory: Literal["separate", "lora"] = "separate"
    lora: LoraSettings = LoraSettings(enabled=True)  # used when memory is lora (`enabled` is ignored)
    # The critic body: the helpfulness RM (LM head replaced by its scalar head, as in
    # Llama 2's RMs) or the initial policy with a new zero-initialised value head.
    # In lora mode the critic body is the shared base, so only `policy` is possible.
    critic_init: Literal["helpfulness_rm", "policy"] = "helpfulness_rm"


class DataSection(StrictModel):
    prompts: PromptSourceSpec = "toyworld"  # a prompt source: a name (file, hub id, toyworld) or {source: ..., <source keys>}
    n_prompts: int | None = Field(default=400, ge=1)  # the first N (toyworld: N drawn); None: all
    seed: int = 0


class PPOSection(StrictModel):
    batch_size: int = Field(default=512, ge=2)  # prompts per iteration, global
    minibatch_size: int = Field(default=64, ge=1)  # samples per optimizer step, global
    ppo_epochs: int = Field(default=1, ge=1)  # passes over the batch; each minibatch is one step
    # Rollout chunk: prompts generated (and scored) together with seed = base + global
    # chunk index; the unit in which the batch is sharded over processes.
    chunk_size: int = Field(default=8, ge=1)
    micro_batch_size: int = Field(default=8, ge=1)  # rows per forward pass (memory only; no effect on the step)
    clip: float = 0.2
    value_clip: float | None = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    beta: float = 0.01  # KL coefficient (0.005 for 34B/70B in the paper)
    kl_estimator: Literal["k1", "abs", "mse", "k3"] = "k1"
    # WHITEN of the logit score: running moments over all iterations (TRL's former
    # use_score_norm), this batch's statistics, or none.
    score_whitening: Literal["running", "batch", "none"] = "running"
    whiten_advantages: bool = True


class OptimSection(StrictModel):
    learning_rate: float = 1e-6  # constant (no schedule), as in the paper
    critic_learning_rate: float | None = None  # None: same as learning_rate
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0  # applied to the policy and the critic separately


class EvalSection(HeldoutEval):
    """The shared held-out evaluation (prompts, n_prompts, sampling), run before, every
    `every` iterations for keep-best and early stopping, and after."""

    n_prompts: int | None = Field(default=64, ge=1)
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=64, batch_size=16)
    every: int = Field(default=10, ge=0)  # held-out evaluation every N iterations (0: only before and after)
    patience: int | None = Field(default=None, ge=1)  # stop after this many evaluations without a better reward
    keep_best: bool = True  # OUT/model is the policy with the best held-out RM reward


class PPOConfig(StrictModel):
    renamed_keys: ClassVar[dict[str, str]] = PPO_RENAMED
    output_dir: str
    model: ModelSection
    reward_models: RewardModelsSection  # both RMs and Llama 2's gate, as in every stage
    data: DataSection = DataSection()
    sampling: SamplingConfig = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=128)  # batch_size unused: see ppo.chunk_size
    ppo: PPOSection = PPOSection()
    optim: OptimSection = OptimSection()
    eval: EvalSection = EvalSection()
    iterations: int = Field(default=200, ge=1)
    checkpoint_every: int = Field(default=10, ge=1)
    # Stop this invocation (as if killed, status "failed") after that iteration's
    # checkpoint; the next run resumes. For tests of resumption.
    stop_after_iteration: int | None = None
    seed: int = 0
    tensorboard: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        self.reward_models.require("PPO's reward")
        ppo = self.ppo
        if ppo.batch_size % ppo.minibatch_size:
            raise ValueError(f"ppo.batch_size ({ppo.batch_size}) must be a multiple of ppo.minibatch_size ({ppo.minibatch_size})")
        if ppo.batch_size % ppo.chunk_size:
            raise ValueError(f"ppo.batch_size ({ppo.batch_size}) must be a multiple of ppo.chunk_size ({ppo.chunk_size})")
        n_minibatches = ppo.batch_size // ppo.minibatch_size
        if ppo.chunk_size % n_minibatches:
            raise ValueError(
                f"ppo.chunk_size ({ppo.chunk_size}) must be a multiple of the number of minibatches "
                f"({n_minibatches}): every minibatch takes the same share of every chunk"
            )
        if self.model.memory == "lora" and self.model.critic_init != "policy":
            raise ValueError("model.critic_init: in lora mode the critic's body is the policy's frozen base; set critic_init: policy")
        return self
