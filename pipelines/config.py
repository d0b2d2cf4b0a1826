"""The pipeline's typed config: which stage presets to run, in which versions.

A pipeline YAML names a preset file per stage and, optionally, overrides for it;
the pipeline itself fills in what connects the stages (which model a stage
starts from, which reward models score, where outputs go), so a stage preset
stays usable on its own. See `configs/pipelines/quickstart.yaml`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from core.config import StrictModel
from core.evaluation import SampledEval
from core.generation import SamplingConfig
from core.models import DType
from core.sources import PromptSourceSpec, is_toyworld
from core.tracking import ReportTo


class StageRef(StrictModel):
    preset: str  # a stage YAML under configs/<stage>/
    overrides: dict[str, Any] = {}  # nested keys, or dotted keys ("training.epochs": 1)


class VersionSpec(StrictModel):
    """One RLHF version V<i>: rejection sampling, then (optionally) PPO on top of it."""

    name: str
    rejection_sampling: StageRef | None = None
    ppo: StageRef | None = None
    # Llama 2 refreshed its reward models with new preference data every version:
    # a new batch of pairs per version (`refresh`: a file of human labels, or the
    # latest policy's samples labelled by a judge), then both RMs retrained on the
    # original data plus every batch collected so far.
    refresh_reward_models: bool = False


class RewardRef(StageRef):
    """The reward preset, trained once per kind; `kind_overrides` apply to one kind only."""

    kind_overrides: dict[str, dict[str, Any]] = {}  # {"safety": {"epochs": 3}}

    @model_validator(mode="after")
    def _known_kinds(self) -> RewardRef:
        unknown = set(self.kind_overrides) - {"helpfulness", "safety"}
        if unknown:
            raise ValueError(f"kind_overrides: unknown reward-model kind(s) {sorted(unknown)} (expected helpfulness, safety)")
        return self


class GattRef(StageRef):
    after: str  # the version after which GAtt runs; later versions start from its model


class RefreshSpec(StrictModel):
    """Where each version's new preference pairs come from (in this order):

    pairs_files[version]: a file of pairs the user had labelled for that version
        (any preference format `core.data` reads), used as it is;
    judge: `module:function(prompts, responses_a, responses_b) -> list[dict | None]`,
        called on two samples of the latest policy per prompt of `prompts`; each dict
        is `{"chosen": "a"|"b", "rating": <4 levels>, "category": ...}` (None: no pair);
    toyworld's simulated annotators, only when `prompts` is toyworld.
    """

    prompts: PromptSourceSpec = "toyworld"  # a prompt source for the sampled pairs (a name, or {source: ..., <source keys>})
    pairs_files: dict[str, str] = {}  # {version name: pairs file}
    judge: str | None = None  # "module:function"
    n_prompts: int | None = Field(default=200, ge=1)
    temperatures: tuple[float, float] = (0.7, 1.2)  # two temperatures, as in the paper
    max_new_tokens: int = 40
    noise: float = 0.08  # toyworld's annotators only
    batch_size: int = 16
    # Weights of the sampled model. The quickstart's collection (400 prompts x 2) took
    # 166 s in float32 at batch 16 and 70 s in bfloat16 at batch 64.
    dtype: DType = "float32"


class EvaluationSpec(StrictModel):
    """The per-version table: the shared evaluation (core.evaluation) of every version's
    model on the same held-out prompts, scored by the latest reward models, with paired
    differences and the RM win rate against the SFT model; XSTest when given; toyworld's
    gold scores only when the prompts are toyworld's."""

    prompts: PromptSourceSpec = "toyworld"  # held-out prompts: a name (file, hub id, toyworld) or {source: ..., <source keys>}
    n_prompts: int | None = Field(default=240, ge=1)  # at least 200 for a standard error near 0.02 (issue 22)
    xstest_data: str | None = "../shared/data/xstest/xstest_prompts.csv"  # None: skip XSTest
    xstest_limit: int | None = 90  # stratified subset (None: all 450)
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=48, temperature=0.0, batch_size=16)
    # Besides the greedy answer, N answers per prompt at the training temperature, with
    # the same seeds for every version (core.evaluation.SampledEval; `sampled_*` metrics,
    # paired per prompt). Off by default: each sample costs one more greedy evaluation.
    sampled: SampledEval | None = None
    # Weights of the evaluated model. Every row of the table is sampled the same way,
    # but a bfloat16 copy rounds away updates of a few 1e-4 of a weight (PPO's), which
    # float32 keeps: `python -m benchmarks eval_precision`.
    dtype: DType = "float32"
    evaluate_base: bool = True


class PipelineConfig(StrictModel):
    renamed_keys: ClassVar[dict[str, str]] = {"evaluation.toyworld_prompts": "evaluation.n_prompts (with evaluation.prompts: toyworld)"}

    run_dir: str
    base_model: str = "embedded:smollm2-135m"
    sft: StageRef
    reward: RewardRef  # trained twice: kind=helpfulness and kind=safety
    versions: list[VersionSpec]
    gatt: GattRef | None = None
    # Train the first reward models also on pairs of the SFT model's own samples,
    # labelled as `refresh` says (toyworld's annotators, a judge, or pairs_files["sft"]): RMs trained only
    # on the world's templated candidates score the policy's own off-template
    # answers badly (measured: best-of-8 by such RMs picked non-refusals on harmful prompts).
    reward_pairs_from_sft: bool = False
    refresh: RefreshSpec = RefreshSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    seed: int = 0
    report: bool = True
    # Every stage's `report_to` (tensorboard, wandb, mlflow; core.tracking) when set;
    # empty (the default): each stage preset's own.
    report_to: ReportTo = ()

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        names = [version.name for version in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"versions: names must be unique, got {names}")
        if self.gatt is not None and self.gatt.after not in names:
            raise ValueError(f"gatt.after: '{self.gatt.after}' is not one of the versions {names}")
        unknown = sorted(set(self.refresh.pairs_files) - {*names, "sft"})
        if unknown:
            raise ValueError(f"refresh.pairs_files: {unknown} are not versions ({['sft', *names]})")
        wanted = [v.name for v in self.versions if v.refresh_reward_models] + (["sft"] if self.reward_pairs_from_sft else [])
        unlabelled = [name for name in wanted if name not in self.refresh.pairs_files]
        if unlabelled and self.refresh.judge is None and not is_toyworld(self.refresh.prompts):
            raise ValueError(
                f"refresh: {', '.join(unlabelled)} need new pairs but refresh.prompts is not toyworld (whose simulated "
                "annotators label pairs): give refresh.pairs_files for them or a refresh.judge callable")
        return self
