"""The SFT stage's one typed config (strict: unknown keys and wrong types are errors).

Presets live in `configs/sft/` (smoke, quickstart, llama2-7b). Every field can be
overridden from the command line, dotted for nested keys:

    python -m sft --config configs/sft/quickstart.yaml training.epochs=1 data.train=my.jsonl
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from core.config import StrictModel
from core.data.sources import SFTSourceKeys
from core.evaluation import HeldoutEval, check_heldout_source
from core.generation import SamplingConfig
from core.models import LoraSettings
from core.tracking import ReportTo
from reward.gated import RewardModelsSection


def check_family_weights(weights: dict[str, float] | None) -> dict[str, float] | None:
    """`weights` unchanged; raises on an unknown toyworld family, naming the known ones."""
    from core.sources import check_toyworld_family_weights

    check_toyworld_family_weights(weights)
    return weights


# Re-weighted toyworld families, e.g. {borderline: 32, harmful: 12}; None: the default mix.
FamilyWeights = Annotated[dict[str, float] | None, AfterValidator(check_family_weights)]


class ModelSection(StrictModel):
    name: str = "embedded:smollm2-135m"  # embedded name, local folder or hub id
    chat_template: Literal["auto", "llama2", "require"] = "auto"  # see core.chat.ensure_chat_template
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False


class DataSection(SFTSourceKeys):
    # `toyworld` builds toyworld's train-split demonstrations; otherwise a local
    # JSONL/JSON/Parquet/CSV file (or a folder, or a hub dataset name) in any format
    # core.data reads: chat `messages`, prompt/completion, HH-RLHF transcripts (the
    # chosen one), TRL implicit-prompt pairs (the chosen conversation).
    # The source keys every stage shares (core.data.sources), inherited:
    #   adapter  the format, detected from the first row when unset
    #   split    of a folder or hub dataset
    #   on_bad   a row that cannot be read as a conversation (broken JSON, a bad
    #            role, a wrong type): `error` names its file, line and field;
    #            `skip` leaves it out, counted and listed in data_report.json
    #   limit    read only the first N rows (max_examples below counts usable ones)
    train: str = "toyworld"
    toyworld_n: int = 300  # demonstrations built when train == "toyworld"
    toyworld_seed: int = 0
    # Re-weighted toyworld families, e.g. {borderline: 30}: more borderline
    # demonstrations (real help on prompts that only look harmful) against the
    # over-refusal that refusal demonstrations teach a small model.
    toyworld_family_weights: FamilyWeights = None
    # `all`: every assistant turn is learned (plain SFT); `last`: only the last one
    # (Ghost Attention zeroes the loss on all earlier turns).
    learn: Literal["all", "last"] = "all"
    # What to do with a conversation that cannot be learned (no assistant turn,
    # an empty answer, longer than training.max_length): `skip` drops it but counts
    # it and names the first offending row in the log, data_report.json, the
    # manifest and metrics.jsonl; `error` stops before anything is trained.
    on_bad_example: Literal["skip", "error"] = "skip"
    max_examples: int | None = None  # keep the first N usable rows (None: all)


class TrainingSection(StrictModel):
    learning_rate: float = 2e-5
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.03  # fraction of the optimizer steps
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8  # per device, in examples (in packed rows when packing)
    gradient_accumulation_steps: int = 1
    max_length: int = 4096  # tokens; longer conversations are bad examples (never truncated)
    # Pack several conversations into rows of max_length tokens (the paper concatenated
    # prompts and answers to fill its 4096-token sequences). Each conversation keeps its
    # end-of-turn token as the separator; position ids restart per conversation so
    # attention stays inside each one, and prompt tokens keep label -100.
    packing: bool = False
    # Without packing: batch conversations of similar length together (the
    # Trainer's LengthGroupedSampler, still shuffled), so a batch pads far less.
    # Multi-turn GAtt data (contexts of 1 to 4 turns) trains ~1.5x faster this way.
    group_by_length: bool = False
    # float32, or bfloat16 mixed precision (fp32 master weights, bf16 autocast; the
    # 2-core CPU box does bf16 matmuls ~2.8x faster than fp32).
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 50  # checkpoints in OUT/checkpoints, resumed after a kill
    save_total_limit: int = 2


class EvalSection(HeldoutEval):
    """The shared before/after evaluation (core.evaluation) on held-out prompts."""

    n_prompts: int | None = Field(default=80, ge=1)
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=48, temperature=0.0, batch_size=8)


class SFTConfig(StrictModel):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    training: TrainingSection = TrainingSection()
    lora: LoraSettings = LoraSettings()
    merge_lora: bool = True  # save OUT/model merged; false keeps a PEFT adapter folder
    eval: EvalSection = EvalSection()
    # Optional: with both RMs the evaluation also reports the gated RM reward and win rate.
    reward_models: RewardModelsSection = RewardModelsSection()
    output_dir: str = "runs/sft"
    report_to: ReportTo = ()  # tensorboard, wandb, mlflow besides metrics.jsonl (core.tracking)
    push_to_hub: str | None = None  # a hub repo id: OUT/model and its card are uploaded when the stage completes
    progress: bool = True  # tqdm bars

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        check_heldout_source(self.eval, self.data.train, "data.train")
        return self
