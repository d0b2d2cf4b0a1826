"""The PPO stage's one typed config (strict: unknown keys and wrong types are errors).

Defaults are Llama 2's PPO numbers (arXiv 2307.09288, section 3.2.3): clip 0.2,
batch 512, minibatch 64, one gradient step per minibatch, constant lr 1e-6,
AdamW (0.9, 0.95), eps 1e-5, weight decay 0.1, grad clip 1.0, β 0.01.

Precision: `model.dtype` is the COMPUTE dtype. The weights the optimizer updates
(policy and critic) are always float32 masters; `bfloat16` runs every forward under
`torch.autocast` over those masters (the frozen reference, and the frozen base in lora
mode, are stored in bfloat16). Plain AdamW on bf16 weights would round steps of 1e-6
away (0.95 % of the weights changed over 8 steps in the paper config, 99.98 % in fp32).

Batch sizes are GLOBAL: on N processes (`torchrun --nproc_per_node N -m ppo ...` or
`accelerate launch --num_processes N -m ppo ...`) each process rolls out, scores and
trains on `batch_size / N` prompts and `minibatch_size / N` samples per minibatch (see
`ppo/rollout.py` for how the split keeps the N-process run equal to the one-process
run). `distributed` picks the engine: ddp (whole models, DDP averages gradients) or
fsdp2 (policy, critic and reference sharded per decoder layer); core/distributed.py.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from core.config import StrictModel
from core.distributed import DistributedMode
from core.evaluation import HeldoutEval, check_heldout_source
from core.generation import SamplingConfig
from core.models import DType, LoraSettings
from core.sources import PromptSourceSpec
from core.tracking import ReportTo
from reward.gated import RewardModelsSection

# Old spellings -> the keys every stage now shares (the error names the new one).
PPO_RENAMED = {
    "reward.helpfulness_model": "reward_models.helpfulness",
    "reward.safety_model": "reward_models.safety",
    "reward.safety_threshold": "reward_models.safety_threshold",
    "reward.batch_size": "reward_models.batch_size",
    "data.heldout_prompts": "eval.prompts",
    "data.n_heldout": "eval.n_prompts",
    "optim.lr": "optim.learning_rate",
    "optim.critic_lr": "optim.critic_learning_rate",
}


class ModelSection(StrictModel):
    policy: str  # the initial policy (SFT or rejection-sampling checkpoint); also the frozen reference π0
    # Compute dtype: float32, or bfloat16 (autocast over float32 master weights; the
    # frozen reference is stored in bfloat16). float16 is refused (it needs loss scaling);
    # auto: float32 compute, the reference in its checkpoint's dtype.
    dtype: DType = "float32"
    # separate: policy, reference and critic are three models.
    # lora: one frozen base; a "policy" and a "critic" LoRA adapter on it; the
    #       reference is the base with adapters disabled.
    memory: Literal["separate", "lora"] = "separate"
    lora: LoraSettings = LoraSettings(enabled=True)  # used when memory is lora (`enabled` is ignored)
    # The critic's first values must match its targets' scale (whitened scores, about
    # mean 0 and std 1). policy (default): the initial policy's body and a new
    # zero-initialised value head, so every value starts at 0, the targets' mean.
    # helpfulness_rm: the helpfulness RM's body and head, the head re-scaled at
    # iteration 1 by the whitening statistics of the helpfulness RM's scores
    # (value = (r - mean) / std), so it
    # predicts the whitened score rather than the raw RM logit. Only with
    # reward.kind gated or helpfulness (the RM head predicts nothing else), and not
    # in lora mode (the critic body is the policy's frozen base there).
    critic_init: Literal["helpfulness_rm", "policy"] = "policy"
    # Train only the top N decoder layers and the final norm (and an untied LM head) of
    # the policy and of the critic's body, as the reward stage's `trainable_layers`
    # does; the embeddings and the lower layers stay the initial policy's. The backward stops at layer N from the
    # top, which is most of a small model's PPO time on a CPU. separate mode only (lora
    # trains adapters instead). null: every weight.
    trainable_layers: int | None = Field(default=None, ge=1)
    # Recompute each decoder layer's activations in the backward instead of keeping them
    # (policy and critic; core/memory_plan.py's "ckpt": 49.5 -> 5.5 GiB per GPU at 7B,
    # and one layer's bf16 weight copies instead of all of them). Same step, more compute.
    gradient_checkpointing: bool = False
    # distributed: fsdp2 only. How the sharded policy generates (rollouts and held-out
    # evaluation). gathered: every process gathers the WHOLE policy first and samples with
    # no collective per token (fast; costs a whole copy of the policy per process, which
    # core/memory_plan.py counts: 25 GiB at 7B). sharded: sample on the shards, FSDP2
    # gathering one decoder layer at a time at every token (generate(synced_gpus=True)
    # keeps the processes' forwards in step): two layers' memory, one all-gather per
    # layer per token (what 70B needs on 8 x 80 GB).
    generation_weights: Literal["gathered", "sharded"] = "gathered"


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
    # The value clip: a value moves at most this far from its rollout value per
    # iteration (TRL's cliprange_value); null disables it (plain squared error).
    value_clip: float | None = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    beta: float = 0.01  # KL coefficient (0.005 for 34B/70B in the paper); the initial one when kl_target is set
    # Adaptive KL controller (Ziegler et al. 2019): after each iteration
    # β <- β (1 + clip(KL / kl_target - 1, -0.2, 0.2) · batch_size / kl_horizon), KL the
    # mean sequence KL of the batch. null: β stays fixed (Llama 2).
    kl_target: float | None = Field(default=None, gt=0)
    kl_horizon: int = Field(default=10000, ge=1)
    kl_estimator: Literal["k1", "abs", "mse", "k3"] = "k1"
    # WHITEN of the score (LOGIT of the RM probability, or reward.function's value):
    # running moments over all iterations (TRL's former use_score_norm), this batch's
    # statistics, or none.
    score_whitening: Literal["running", "batch", "none"] = "running"
    # Whiten the scores of each reward model apart (reward_model: R_c's helpfulness-RM
    # scores with their own statistics, its safety-RM scores with theirs) or all together
    # (all). Each RM's LOGIT lives on its own scale once calibrated: on the quickstart's
    # rejection-sampling samples the helpfulness logits have mean 0.4, std 0.7 (0.4 among
    # the answers to one prompt), the safety ones mean 9.0, std 3.0 (2.1 within a
    # prompt), so whitened together the helpfulness prompts' differences shrink to 0.11
    # standard deviations while 0.9999 vs 0.999994 safety probabilities dominate the
    # advantages. Only the gated reward has two groups.
    score_whitening_groups: Literal["reward_model", "all"] = "reward_model"
    whiten_advantages: bool = True
    # A response cut at sampling.max_new_tokens without an end-of-turn token:
    # subtract: its whitened score minus this penalty (TRL's missing_eos_penalty);
    # replace: its whitened score set to -penalty (lm-human-preferences' penalty_reward_value).
    # In whitened units (one standard deviation of the score), so independent of the
    # reward's scale; the whitening statistics are those of the unpenalised scores.
    # null: truncated responses are scored as if finished.
    missing_eos_penalty: float | None = Field(default=1.0, ge=0)
    missing_eos_mode: Literal["subtract", "replace"] = "subtract"


class OptimSection(StrictModel):
    learning_rate: float = 1e-6  # constant (no schedule), as in the paper
    critic_learning_rate: float | None = None  # the critic's own constant lr; None: same as learning_rate
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0  # applied to the policy and the critic separately


class RewardSection(StrictModel):
    """What PPO maximises (the RMs themselves are the shared `reward_models` section).

    gated        Llama 2's R_c: both RMs and the safety gate (default)
    helpfulness  the helpfulness RM's probability σ(r_h)
    safety       the safety RM's probability σ(r_s)
    function     `function: "module:function"` (or "path/to/file.py:function"), called
                 as f(prompts, responses) with prompt records and response strings,
                 returning one float per response

    The RM probabilities go through LOGIT, a function's values are used as they
    are; then both are whitened (`ppo.score_whitening`). `reward_mean` in the
    metrics is the batch mean of this raw reward (probability or function value).
    """

    kind: Literal["gated", "helpfulness", "safety", "function"] = "gated"
    function: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _function_implies_kind(cls, data):
        if isinstance(data, dict) and data.get("function") and "kind" not in data:
            data = {**data, "kind": "function"}
        return data

    @model_validator(mode="after")
    def _check(self) -> RewardSection:
        if self.kind == "function" and not self.function:
            raise ValueError("reward.kind: function needs reward.function: \"module:function\"")
        if self.kind != "function" and self.function:
            raise ValueError(f"reward.function is set but reward.kind is {self.kind}; set reward.kind: function or drop reward.function")
        if self.function and (":" not in self.function or self.function.endswith(":") or self.function.startswith(":")):
            raise ValueError(f"reward.function: expected \"module:function\" or \"path/to/file.py:function\", got {self.function!r}")
        return self


class EvalSection(HeldoutEval):
    """The shared held-out evaluation (prompts, n_prompts, sampling), run before, every
    `every` iterations for keep-best and early stopping, and after."""

    n_prompts: int | None = Field(default=64, ge=1)
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=64, batch_size=16)
    every: int = Field(default=10, ge=0)  # held-out evaluation every N iterations (0: only before and after)
    patience: int | None = Field(default=None, ge=1)  # stop after this many evaluations without a better reward
    keep_best: bool = True  # OUT/model is the policy with the best held-out reward (rm_reward for the gated reward, else the training reward)


class PPOConfig(StrictModel):
    renamed_keys: ClassVar[dict[str, str]] = PPO_RENAMED
    output_dir: str
    model: ModelSection
    reward_models: RewardModelsSection  # both RMs and Llama 2's gate, as in every stage (the held-out evaluation uses them)
    reward: RewardSection = RewardSection()  # what PPO maximises
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
    # none: one process; ddp: torch DDP through accelerate (whole models on every
    # process); fsdp2: policy, critic and reference sharded with fully_shard.
    distributed: DistributedMode = "ddp"
    report_to: ReportTo = ()  # tensorboard, wandb, mlflow besides metrics.jsonl (core.tracking)
    push_to_hub: str | None = None  # a hub repo id: OUT/model and its card are uploaded when the stage completes
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        self.reward_models.require("PPO's reward")
        if not self.eval.enabled:
            raise ValueError("eval.enabled: PPO always evaluates its held-out prompts (before, for keep-best, after); "
                             "set eval.every: 0 to evaluate only before and after")
        check_heldout_source(self.eval, self.data.prompts, "data.prompts")  # keep-best judges on your held-out prompts
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
        if self.model.critic_init == "helpfulness_rm" and self.reward.kind not in ("gated", "helpfulness"):
            raise ValueError(
                f"model.critic_init: helpfulness_rm starts the critic from the helpfulness RM's score, "
                f"which does not predict reward.kind {self.reward.kind}; set critic_init: policy"
            )
        if self.model.memory == "lora" and self.model.gradient_checkpointing:
            raise ValueError("model.gradient_checkpointing with model.memory: lora is refused: the backward recomputes "
                             "the critic's layers with the adapter active then (the policy's), so the critic's LoRA "
                             "gradients would be wrong; use memory: separate or gradient_checkpointing: false")
        if self.model.memory == "lora" and self.model.trainable_layers is not None:
            raise ValueError("model.trainable_layers is for memory: separate (lora trains adapters on every layer); "
                             "set trainable_layers: null or memory: separate")
        if self.model.dtype == "float16":
            raise ValueError(
                "model.dtype: float16 compute needs loss scaling, which the PPO loop does not do; "
                "use bfloat16 (autocast over float32 master weights) or float32"
            )
        if self.model.generation_weights == "sharded" and self.distributed != "fsdp2":
            raise ValueError(f"model.generation_weights: sharded generates on FSDP2 shards, but distributed is "
                             f"{self.distributed} (whole models on every process); set distributed: fsdp2 or "
                             "generation_weights: gathered")
        if self.eval.sampled_on is not None:
            raise ValueError("eval.sampled: PPO's held-out evaluation (keep-best, early stopping) is greedy only; "
                             "remove eval.sampled here and evaluate sampled answers after the stage with "
                             "`rlhf eval prompts --samples-per-prompt N` or the pipeline's eval stage")
        return self
