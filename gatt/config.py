"""The GAtt stage's one typed config (strict: unknown keys and wrong types are errors).

Presets live in `configs/gatt/` (smoke, quickstart, gpu-demo). Overrides are
dotted: `rlhf gatt run --config configs/gatt/quickstart.yaml synthesis.k=8`.

Synthesis uses the `train` split of instructions and dialogues (toyworld's, or
a JSONL of `{"messages": [...]}`); evaluation uses the `heldout` split, whose
instructions are of the same kinds with different values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from core.config import StrictModel
from core.distributed import DistributedMode
from core.evaluation import HeldoutEval
from core.generation import SamplingConfig
from core.models import DType, LoraSettings
from core.sources import PromptSourceSpec
from core.tracking import ReportTo
from reward.gated import RewardModelsSection
from sft.config import FamilyWeights, TrainingSection

# An instruction kind: toyworld's seven (hobby, language, figure, upper, end_marker, prefix,
# max_words) or whatever a user's library names; checked against the library in use.
Kind = str
Position = Literal["first_user", "system"]


class InstructionsSection(StrictModel):
    """Which instruction library, and which of its instructions, to use.

    `source`: "toyworld" (the embedded library, `toyworld.gatt_instructions`) or a
    JSONL file, one instruction a line (`{"text", "kind", "short"?, "check"?,
    "split"?: train|heldout}`; see `gatt.instructions` and `gatt.checks`).
    Synthesis uses its `train` lines; evaluation uses `heldout_source` (every line
    of that file, or toyworld's held-out split), else `source`'s `heldout` lines.
    """

    source: str = "toyworld"
    heldout_source: str | None = None
    kinds: list[Kind] | None = None  # None: every kind; else only instructions made of these kinds
    n_combined: int = Field(default=8, ge=0)  # random two-kind combinations added to the single instructions
    seed: int = 0
    # How often a dialogue's instruction is the short form ("Figure: Napoleon"): the same
    # text is appended to every user turn while sampling and kept in turn 1 (the paper: half the time).
    short_probability: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("source", "heldout_source")
    @classmethod
    def _source_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected 'toyworld' or the path of a JSONL instruction library")
        return value

    @field_validator("kinds")
    @classmethod
    def _toyworld_kinds(cls, kinds: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """toyworld's kinds are known here; a file's are checked when it is read
        (`gatt.instructions.select_instructions`, before the run folder is touched)."""
        if kinds is not None and info.data.get("source") == "toyworld":
            from core.sources import toyworld_instruction_library

            known = toyworld_instruction_library().KINDS
            unknown = sorted(set(kinds) - set(known))
            if unknown:
                raise ValueError(f"unknown instruction kinds {unknown} (toyworld's: {', '.join(known)})")
        return kinds


class DialoguesSection(StrictModel):
    # toyworld, a file or hub dataset of {"messages": [...]} (assistant turns are re-sampled),
    # or {source: ..., split: ..., data_dir: ..., on_bad: ...} with the shared source keys
    source: PromptSourceSpec = "toyworld"
    n: int = 60
    n_turns: int = 4
    seed: int = 0


class RankingSection(StrictModel):
    """How the best adhering sample of K is chosen.

    reward_model: Llama 2's gated reward from the stage's `reward_models` (the
    gated scoring service); gold: toyworld's gold helpfulness judge (toyworld
    dialogues only); shortest: the shortest answer (a length heuristic); first:
    the first adhering sample.
    """

    by: Literal["reward_model", "gold", "shortest", "first"] = "gold"


class SynthesisSection(StrictModel):
    """Llama 2's GAtt sampling: the dialogue's instruction appended to every user turn,
    K answers a turn from the current model, the best of those that pass the checker
    by `ranking` (an unchecked instruction's samples all pass: the RMs alone rank
    them, and the stats count them), then the instruction kept in turn 1 only and
    every earlier turn's loss zeroed."""

    k: int = Field(default=4, ge=1)  # samples per assistant turn; a turn with no adhering sample drops the dialogue
    instruction_position: Position = "first_user"  # where the instruction stays in the trained data
    # `last`: one example per dialogue, the last turn learned (the paper); `every_turn`:
    # one example per prefix ending at every turn t (turn 1 included: the instruction
    # is then in the same user message), each learning only its own last turn.
    examples: Literal["last", "every_turn"] = "last"
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=32, temperature=0.8, batch_size=16)
    ranking: RankingSection = RankingSection()
    # An adhering sample must also score at least this (by `ranking`) to be kept:
    # small models often "adhere" by parroting the instruction ("You enjoy baking").
    min_score: float | None = None
    # `none` (default): a turn with no good adhering sample drops the dialogue (the paper).
    # `apply`: a template repair: the best-scoring sample is rewritten to obey the
    # instruction by the library's rewriter (`gatt.instructions.apply`), for models too
    # small to follow it even when it is repeated. Repairs are counted per turn, and the
    # stats give adherence with and without them (`synthesis.json`, `repairs`).
    repair: Literal["none", "apply"] = "none"
    # Dialogues per shard: the unit of work one process takes under a multi-process launch
    # (shard i goes to process i mod N). Each shard's seed depends on its index only, so
    # any number of processes synthesises the same data. None: sampling.batch_size // k
    # (one full batch a turn, and one shard, the whole run, when the dialogues fit in it).
    shard_size: int | None = Field(default=None, ge=1)

    def dialogues_per_shard(self) -> int:
        return self.shard_size or max(1, self.sampling.batch_size // self.k)


class FinetuneSection(StrictModel):
    """Passed to the SFT stage (sft.train.run) with data.learn=last; model and data are set by GAtt."""

    training: TrainingSection = TrainingSection(epochs=2.0, batch_size=8, learning_rate=2e-5, max_length=1024)
    lora: LoraSettings = LoraSettings()
    merge_lora: bool = True
    # Toyworld SFT demonstrations (train split) mixed into the GAtt data so that
    # fine-tuning on instruction dialogues alone does not erase the policy's
    # helpfulness and safety (Llama 2 merged GAtt data into its RLHF data).
    replay_toyworld: int = 0
    # Re-weighted toyworld families for the replay, as in the SFT stage's data section:
    # the default mix taught the quickstart's GAtt model to refuse 83 % of borderline
    # requests (the same over-refusal the SFT quickstart re-weights against).
    replay_family_weights: FamilyWeights = None


Extend = Literal["cycle", "follow_ups"]
FOLLOW_UPS = (
    "Tell me more.", "Can you give an example?", "Why is that?", "Can you say that more simply?",
    "What else should I know?", "Thanks. Anything to add?",
)
DEFAULT_TURNS = (1, 2, 4, 6, 10, 15, 20)


class EvalSection(StrictModel):
    """Adherence per turn on held-out instructions and dialogues (the paper's Table 30).

    Each held-out dialogue gets one held-out instruction (a single one or a two-kind
    combination, the short form `short_probability` of the time) and is played to the
    last of `turns` in three conditions: the instruction once in turn 1 with the model
    before GAtt (`before`) and after (`after`), and repeated in every user turn
    (`reminded`: what the model does when reminded, the ceiling). A dialogue with fewer
    user turns is extended (`extend`): `cycle` replays its own user turns in order,
    `follow_ups` appends generic follow-ups (`gatt.config.FOLLOW_UPS`). Unchecked
    instructions are reported apart, not counted as failures.
    """

    enabled: bool = True
    # held-out dialogues: toyworld's `heldout` split, or a file / hub dataset (a name or a
    # {source: ..., split: test, ...} section); never the same as dialogues.source
    dialogues_source: PromptSourceSpec = "toyworld"
    n_dialogues: int = Field(default=30, ge=1)
    # The turns reported (the table's columns); dialogues are played to the last one.
    turns: list[int] = Field(default_factory=lambda: list(DEFAULT_TURNS))
    extend: Extend = "cycle"
    seed: int = 1234
    n_combined: int = Field(default=4, ge=0)  # held-out two-kind combinations added to the single instructions
    short_probability: float = Field(default=0.5, ge=0.0, le=1.0)  # share of dialogues given the short form
    kinds: list[Kind] | None = None  # None: the same kinds as `instructions.kinds`
    instruction_position: Position | None = None  # None: the same as synthesis
    # Which models are also run with the instruction in every user turn: `after` (the
    # ceiling row `reminded`) or `both` (also `reminded_before`: the model before GAtt).
    reminded: Literal["after", "both"] = "after"
    # A kind whose adherence when reminded (mean over the turns played) is below this
    # is reported in eval.json as not followed even when reminded.
    min_reminded_adherence: float = Field(default=0.5, ge=0.0, le=1.0)
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=32, temperature=0.0, batch_size=16)
    # The shared before/after evaluation of the policy on held-out prompts (core.evaluation),
    # scored with `reward_models`; off by default (a pipeline evaluates every version itself).
    policy: HeldoutEval = HeldoutEval(enabled=False)

    @model_validator(mode="before")
    @classmethod
    def _n_turns_shorthand(cls, data):
        """`n_turns: N` is shorthand for `turns: [1, 2, 4, ..., N]` (the paper's columns)."""
        if isinstance(data, dict) and "n_turns" in data:
            data = dict(data)
            n_turns = data.pop("n_turns")
            if "turns" in data:
                raise ValueError("give eval.turns or eval.n_turns (shorthand for turns 1, 2, 4, ..., n_turns), not both")
            if not isinstance(n_turns, int) or isinstance(n_turns, bool) or n_turns < 1:
                raise ValueError(f"eval.n_turns: expected a positive integer, got {n_turns!r}")
            data["turns"] = [1] + list(range(2, n_turns + 1, 2)) + ([n_turns] if n_turns > 1 and n_turns % 2 else [])
        return data

    @field_validator("turns")
    @classmethod
    def _turns(cls, turns: list[int]) -> list[int]:
        if not turns or any(t < 1 for t in turns):
            raise ValueError("expected a non-empty list of turn numbers >= 1")
        return sorted(set(turns))

    @property
    def n_turns(self) -> int:
        """How many turns each dialogue is played for."""
        return max(self.turns)


# Old spellings -> the keys every stage now shares (the error names the new one).
GATT_RENAMED = {
    "synthesis.ranking.helpfulness_rm": "reward_models.helpfulness",
    "synthesis.ranking.safety_rm": "reward_models.safety",
    "synthesis.ranking.batch_size": "reward_models.batch_size",
}


class GattConfig(StrictModel):
    renamed_keys: ClassVar[dict[str, str]] = GATT_RENAMED
    model: str = "embedded:smollm2-135m"  # the current policy (the latest RLHF model in a pipeline)
    output_dir: str = "runs/gatt"
    dtype: DType = "float32"  # for sampling; training precision is finetune.training.dtype
    device: str = "auto"  # cuda when there is a GPU, else cpu
    # Both RMs and Llama 2's gate: rank samples (synthesis.ranking.by=reward_model) and
    # score the shared before/after evaluation (eval.policy).
    reward_models: RewardModelsSection = RewardModelsSection()
    chat_template: Literal["auto", "llama2", "require"] = "auto"
    instructions: InstructionsSection = InstructionsSection()
    dialogues: DialoguesSection = DialoguesSection()
    synthesis: SynthesisSection = SynthesisSection()
    finetune: FinetuneSection = FinetuneSection()
    eval: EvalSection = EvalSection()
    seed: int = 0
    # Under a multi-process launch (`accelerate launch -m gatt`, `torchrun -m gatt`):
    # `ddp` (default): the dialogues' shards are synthesised across the processes and the
    # fine-tune is TRL's trainer under accelerate's DDP; `fsdp2`: the same, with the
    # fine-tune sharded by accelerate's FSDP2 (a GPU launch with an FSDP accelerate config,
    # e.g. configs/accelerate/fsdp_8gpu.yaml; sampling still holds a whole model per
    # process); `none`: one process only.
    distributed: DistributedMode = "ddp"
    report_to: ReportTo = ()  # tensorboard, wandb, mlflow besides metrics.jsonl (core.tracking)
    push_to_hub: str | None = None  # a hub repo id: the fine-tuned model and its card are uploaded when the stage completes
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> GattConfig:
        from core.sources import is_toyworld

        if self.synthesis.ranking.by == "reward_model":
            self.reward_models.require("synthesis.ranking.by=reward_model")
        if self.eval.enabled and not is_toyworld(self.dialogues.source) and "dialogues_source" not in self.eval.model_fields_set:
            raise ValueError("eval.dialogues_source: dialogues.source is your own file, but the evaluation would use "
                             "toyworld's dialogues (the default); set eval.dialogues_source to your held-out dialogues")
        if self.eval.enabled and not is_toyworld(self.dialogues.source) and self.eval.dialogues_source == self.dialogues.source:
            raise ValueError("eval.dialogues_source is dialogues.source: the evaluation would replay the training dialogues; "
                             "give held-out dialogues (another file, or the same hub dataset with another split)")
        if self.synthesis.ranking.by == "gold" and not is_toyworld(self.dialogues.source):
            raise ValueError("synthesis.ranking.by=gold: gold judges exist only for toyworld dialogues; "
                             "rank your own dialogues with by=reward_model (and reward_models) or shortest/first")
        return self

    @property
    def eval_kinds(self) -> list[str] | None:
        return self.eval.kinds if self.eval.kinds is not None else self.instructions.kinds

    @property
    def eval_position(self) -> str:
        return self.eval.instruction_position or self.synthesis.instruction_position
