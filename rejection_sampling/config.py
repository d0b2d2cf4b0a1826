"""The rejection-sampling stage's one typed config (strict: unknown keys and wrong types are errors).

Presets live in `configs/rs/` (smoke, quickstart, gpu-demo, paper-like). Every
field can be overridden from the command line, dotted for nested keys:

    python -m rejection_sampling --config configs/rs/quickstart.yaml k=16 temperature=1.2 \\
        pool_dirs='[runs/x/v1/rs, runs/x/v2/rs]' finetune.epochs=1
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from core.config import StrictModel
from core.data.sources import PromptSourceKeys
from core.distributed import DistributedMode
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


class ReplaySection(StrictModel):
    """Ordinary demonstrations replayed beside the pooled best answers (n = 0: none, the
    paper). A fine-tune on a hundred sampled targets, a handful of them on harmful
    prompts, erased the quickstart SFT model's refusals (72 % -> 0 %).

    Replay should be drawn from demonstrations SFT did *not* train on, or the
    fine-tune's gain cannot be told from more SFT epochs: `exclude` names SFT run
    folders (their training file, from the manifest) or demonstration files, and
    every candidate that asks what one of them asks (the same user turns) is left
    out. `auto`: the SFT run folders that `init_model` or `policy` came from
    (`<sft run>/model`), when there are any. toyworld has no third split (train and
    heldout, and heldout is the evaluation's), so its held-back demonstrations are
    train-split demonstrations outside SFT's draw."""

    n: int = Field(default=0, ge=0)
    # `toyworld` (its train-split demonstrations), or a file, folder or hub dataset of
    # demonstrations in any SFT format core.data reads (e.g. a held-back part of yours).
    source: str = "toyworld"
    family_weights: FamilyWeights = None  # toyworld only, e.g. {borderline: 32, harmful: 12}
    seed: int = 1  # toyworld's draw (SFT draws with toyworld_seed 0)
    exclude: list[str] | Literal["auto"] = "auto"


ControlArm = Literal["best_of_1", "replay_only"]


class RSConfig(StrictModel):
    renamed_keys: ClassVar[dict[str, str]] = {
        **RS_RENAMED, "replay_toyworld": "replay.n", "replay_family_weights": "replay.family_weights"}
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
    # Re-tune the temperature each iteration (Llama 2 section 3.2.3, Figure 8): sample K
    # at every temperature of the grid for the first `temperature_probe_prompts`
    # prompts and sample with the one whose mean (max - median) gated reward is the
    # largest (temperature_probe.json, the manifest). None: `temperature` as given.
    temperature_grid: list[float] | None = None
    temperature_probe_prompts: int = 8
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
    # Prompts with a gold judge (toyworld) only: the policy's greedy answer to each
    # prompt, gold-judged against the chosen one before the fine-tune (samples_gold.greedy
    # in eval.json and the manifest; greedy.jsonl). One greedy pass, 1/K of sampling.
    greedy_check: bool = True

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # policy weights while sampling
    device: str = "auto"  # cuda when there is a GPU, else cpu

    finetune_enabled: bool = True
    replay: ReplaySection = ReplaySection()
    # Control fine-tunes in the same run, from the same init with the same settings,
    # evaluated on the same held-out prompts (eval.json `controls`: RS minus each,
    # paired, with standard errors): `best_of_1` the first sample of each prompt with
    # the same replay (what K > 1 adds), `replay_only` the replay alone (what the
    # sampled targets add).
    control_arms: list[ControlArm] = []
    finetune: TrainingSection = TrainingSection(learning_rate=1e-5, epochs=2.0, batch_size=8, max_length=512, save_steps=1000)
    lora: LoraSettings = LoraSettings()

    eval: HeldoutEval = HeldoutEval()  # the shared before/after evaluation (core.evaluation)
    output_dir: str = "runs/rs"
    report_to: ReportTo = ()  # tensorboard, wandb, mlflow besides metrics.jsonl (core.tracking)
    push_to_hub: str | None = None  # a hub repo id: the fine-tuned model and its card are uploaded when the stage completes
    progress: bool = True
    # none: one process; ddp: every process holds the whole model, samples its shards
    # and takes part in the fine-tune (TRL under accelerate, DDP); fsdp2: the fine-tune
    # sharded by accelerate's FSDP plugin (an `accelerate launch --config_file` FSDP
    # launch on GPUs; refused on CPU, where that plugin does not run).
    distributed: DistributedMode = "ddp"

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
        if self.temperature_grid is not None:
            if not self.temperature_grid or any(t <= 0 for t in self.temperature_grid):
                raise ValueError(f"temperature_grid must be a non-empty list of temperatures > 0, got {self.temperature_grid}")
            if self.temperature_probe_prompts < 1:
                raise ValueError(f"temperature_probe_prompts must be >= 1, got {self.temperature_probe_prompts}")
        if len(set(self.control_arms)) != len(self.control_arms):
            raise ValueError(f"control_arms lists an arm twice: {self.control_arms}")
        if self.control_arms and not self.finetune_enabled:
            raise ValueError("control_arms are fine-tunes compared with the RS fine-tune; they need finetune_enabled: true")
        if self.control_arms and not self.eval.enabled:
            raise ValueError("control_arms are compared by the held-out evaluation; they need eval.enabled: true")
        if "replay_only" in self.control_arms and self.replay.n == 0:
            raise ValueError("control_arms: replay_only fine-tunes on the replayed demonstrations alone; set replay.n > 0")
        if self.replay.family_weights is not None and not is_toyworld(self.replay.source):
            raise ValueError("replay.family_weights re-weights toyworld's families; replay.source is not toyworld")
        return self

    @property
    def start_model(self) -> str:
        return self.init_model or self.policy
