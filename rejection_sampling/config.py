"""The rejection-sampling stage's one typed config (strict: unknown keys and wrong types are errors).

Presets live in `configs/rs/` (smoke, quickstart, gpu-demo, paper-like). Every
field can be overridden from the command line, dotted for nested keys:

    python -m rejection_sampling --config configs/rs/quickstart.yaml k=16 temperature=1.2 \\
        pool_dirs='[runs/x/v1/rs, runs/x/v2/rs]' finetune.epochs=1
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from core.config import StrictModel
from core.data.sources import PromptSourceKeys
from core.evaluation import HeldoutEval, check_heldout_source
from core.models import LoraSettings
from core.sources import is_toyworld
from core.tracking import ReportTo
from reward.gated import RS_RENAMED, RewardModelsSection
from sft.config import FamilyWeights, TrainingSection


class PromptsSection(PromptSourceKeys):
    """The prompts to sample from: `toyworld` (its train-split prompts), or a file, a
    folder or a hub dataset in any prompt format core.data reads (prompt records
    `{"messages", "category", "id"}`, HH-RLHF transcripts, PKU-SafeRLHF, UltraFeedback,
    prompt/chosen/rejected pairs: their prompts). The source keys every stage shares
    (core.data.sources) are inherited: adapter, split, data_dir, subset, category
    (IS_SAFETY(p) for rows that carry none), on_bad, limit (rows read)."""

    source: str = "toyworld"
    n: int | None = 80  # toyworld prompts built, or the first N prompts of the source (None: all)
    seed: int = 0  # toyworld's draw

    @model_validator(mode="after")
    def _toyworld_takes_no_file_keys(self) -> PromptsSection:
        if is_toyworld(self.source):
            file_keys = sorted(set(self.model_fields_set) & set(PromptSourceKeys.model_fields))
            set_keys = [key for key in file_keys if getattr(self, key) != PromptSourceKeys.model_fields[key].default]
            if set_keys:
                raise ValueError(f"source toyworld takes only 'n' and 'seed' (the other keys are for files and hub datasets), got: {', '.join(set_keys)}")
        return self


class RSConfig(StrictModel):
    renamed_keys: ClassVar[dict[str, str]] = RS_RENAMED
    # The policy that samples (the latest model), and the checkpoint that is fine-tuned
    # on the pooled best answers. Llama 2 restarted each version's fine-tune from the
    # SFT / previous model rather than continuing from the sampler; None means the
    # policy itself.
    policy: str = "embedded:smollm2-135m"
    init_model: str | None = None
    # Both RMs and Llama 2's gate (R_s if IS_SAFETY(p) or R_s < threshold else R_h).
    reward_models: RewardModelsSection = RewardModelsSection()

    prompts: PromptsSection = PromptsSection()
    iteration: int = 1  # RLHF version V<iteration>; in every sample's provenance and its seed
    k: int = 8  # samples per prompt
    temperature: float = 1.0  # per iteration (the paper's best T drifts up, ~1.2-1.3 late)
    top_p: float = 1.0
    max_new_tokens: int = 40
    batch_size: int = 16  # sequences per generate() call
    shard_size: int = 10  # prompts per shard file (a killed run loses at most one shard)
    seed: int = 0
    max_shards: int | None = None  # stop sampling after this many shards (None: all); for tests/budgets

    # Sample folders of earlier iterations (a stage folder holding samples/, or the
    # samples/ folder itself); the best answer per prompt id is chosen over them all.
    pool_dirs: list[str] = []
    # Earlier samples were scored by earlier reward models; re-score them with this
    # iteration's RMs so that every candidate is ranked on the same scale (scores
    # are only re-computed for samples whose recorded RM hashes differ).
    rescore_pool: bool = True
    # Keep a pooled winner only if its reward is at least this (None: keep all).
    min_reward: float | None = None

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # policy weights while sampling
    device: str = "auto"  # cuda when there is a GPU, else cpu

    finetune_enabled: bool = True
    # Toyworld SFT demonstrations replayed beside the pooled best answers (0: none,
    # the paper). A fine-tune on a hundred sampled targets, a handful of them on
    # harmful prompts, erased the quickstart SFT model's refusals (72 % -> 0 %).
    replay_toyworld: int = 0
    replay_family_weights: FamilyWeights = None
    finetune: TrainingSection = TrainingSection(learning_rate=1e-5, epochs=2.0, batch_size=8, max_length=512, save_steps=1000)
    lora: LoraSettings = LoraSettings()

    eval: HeldoutEval = HeldoutEval()  # the shared before/after evaluation (core.evaluation)
    output_dir: str = "runs/rs"
    report_to: ReportTo = ()  # tensorboard, wandb, mlflow besides metrics.jsonl (core.tracking)
    push_to_hub: str | None = None  # a hub repo id: the fine-tuned model and its card are uploaded when the stage completes
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> RSConfig:
        self.reward_models.require("rejection sampling (ranking the K samples)")
        check_heldout_source(self.eval, self.prompts.source, "prompts.source")
        for name in ("k", "shard_size", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0: rejection sampling needs K different samples (greedy gives K copies)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {self.iteration}")
        return self

    @property
    def start_model(self) -> str:
        return self.init_model or self.policy
