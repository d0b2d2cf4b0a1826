"""Typed config of the reward-model stage: one config trains one RM (`kind`).

The pipeline calls the stage twice, once with `kind: helpfulness` and once with
`kind: safety`; the two models differ only in their data mix (`reward.data_mix`)
and their output folder. Defaults are Llama 2's (arXiv 2307.09288, section 3.2.2):
1 epoch, lr 1e-5 with cosine decay to 10 % of max, warm-up 3 % of the steps (at
least 5), 512 pairs per step, AdamW (0.9, 0.95), eps 1e-5, wd 0.1, clip 1.0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.config import StrictModel
from core.data.sources import PreferenceSourceKeys
from core.models import LoraSettings
from core.tracking import ReportTo

Kind = Literal["helpfulness", "safety"]
Rating = Literal["significantly_better", "better", "slightly_better", "negligibly_better"]


class DataSource(PreferenceSourceKeys):
    """One source of preference pairs: `toyworld`, a local file or folder, or a hub dataset name.

    The keys of how to read it are the ones every stage shares (`core.data.sources`):
    `adapter` (format, detected when unset: plain, hh-rlhf, pku-saferlhf, ultrafeedback,
    implicit-prompt, canonical), `split`, `data_dir` and `subset` (a hub dataset's folder
    and config), `category` (for pairs that carry none; beats HH-RLHF's file-name guess), `default_rating` (unrated pairs; unset: the config's
    `default_rating`), `rating_thresholds` (score gaps of scored data), `on_bad`
    (`error`, or `skip`: bad rows left out, counted and listed in the stage folder's
    `data_report.json`) and `limit` (at most this many pairs, the first ones).
    toyworld takes only `limit`.
    """

    source: str = "toyworld"

    @model_validator(mode="after")
    def _toyworld_takes_only_limit(self) -> DataSource:
        if self.source == "toyworld":
            file_keys = sorted(set(self.model_fields_set) - {"source", "limit"})
            set_keys = [key for key in file_keys if getattr(self, key) != PreferenceSourceKeys.model_fields[key].default]
            if set_keys:
                raise ValueError(f"source toyworld takes only 'limit' (the other keys are for files and hub datasets), got: {', '.join(set_keys)}")
        return self


class DataMix(StrictModel):
    """The paper's mixes (section 3.2.2, "Data Composition").

    helpfulness RM: all helpfulness pairs + `helpfulness_other_ratio` times as many
    drawn from the rest (safety and other data); safety RM: all safety pairs plus
    helpfulness pairs so that safety makes `safety_main_fraction` of the mix.
    """

    helpfulness_other_ratio: float = 1.0
    safety_main_fraction: float = 0.9


class RewardConfig(StrictModel):
    kind: Kind
    output_dir: str
    init_model: str = "embedded:smollm2-135m"  # the SFT checkpoint in a pipeline
    chat_template: Literal["auto", "llama2", "require"] = "auto"

    # -- data ----------------------------------------------------------------
    data: list[DataSource] = [DataSource()]
    toyworld_pairs: int = 800  # training pairs drawn from the toyworld `train` split
    default_rating: Rating = "better"  # for sources without a rating
    mix: DataMix = DataMix()
    max_length: int = 512  # longer pairs are counted, reported and left out
    # Held-out evaluation -> eval.json: accuracy per rating and per category (the paper's
    # Table 8) and the safety precision/recall at the Llama 2 gate threshold, on
    # `eval_data`: the user's held-out pairs, sources with the same keys as `data`
    # (eval.json's "heldout"). toyworld's held-out pairs are evaluated only when `data`
    # includes toyworld: `eval_pairs` of them (0: none), eval.json's "toyworld".
    eval_data: list[DataSource] = []
    eval_pairs: int = 300
    eval_seed: int = 1234

    # -- loss ----------------------------------------------------------------
    margin: Literal["none", "small", "large"] = "small"

    # -- optimisation ----------------------------------------------------------
    epochs: float = 1.0
    learning_rate: float = 1e-5
    min_lr_rate: float = 0.1  # cosine decay to 10 % of max (cosine_with_min_lr)
    warmup_ratio: float = 0.03
    min_warmup_steps: int = 5
    batch_size: int = 512  # pairs per optimizer step, over all processes
    per_device_batch_size: int = 8  # pairs per forward pass; the rest is accumulation
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-5
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool = False  # bf16 autocast (fp32 master weights); worth it on CPU too
    trainable_layers: int | None = Field(default=None, ge=1)  # train only the top N decoder layers + head (None: all)
    # Batch pairs of similar length together (the Trainer's LengthGroupedSampler, still
    # shuffled): a batch pads to its longest sequence, and the pipeline's mixes hold
    # short templated pairs beside the policy's longer samples.
    group_by_length: bool = False
    lora: LoraSettings = LoraSettings()
    gradient_checkpointing: bool = False

    # -- bookkeeping -----------------------------------------------------------
    logging_steps: int = 1
    save_steps: int = 200  # checkpoints for resume; removed once the model is saved
    report_to: ReportTo = ()  # tensorboard, wandb, mlflow besides metrics.jsonl (core.tracking)
    push_to_hub: str | None = None  # a hub repo id: OUT/model and its card are uploaded when the stage completes
    eval_batch_size: int = 16

    @model_validator(mode="after")
    def _eval_data_is_held_out_files(self) -> RewardConfig:
        for index, source in enumerate(self.eval_data):
            if source.source == "toyworld":
                raise ValueError(f"eval_data[{index}]: toyworld's held-out pairs are not a source here; "
                                 "they are evaluated when `data` includes toyworld (`eval_pairs` of them)")
        return self

    @property
    def trains_on_toyworld(self) -> bool:
        return any(source.source == "toyworld" for source in self.data)
