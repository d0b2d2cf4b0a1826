"""The gated scoring service: both reward models and Llama 2's gate, behind one config section.

Every stage that scores answers with the reward models (rejection sampling, PPO,
GAtt synthesis, the shared evaluation) declares the same section,

    reward_models:
      helpfulness: runs/x/rm_helpfulness/model
      safety: runs/x/rm_safety/model
      safety_threshold: 0.15      # Llama 2's gate
      calibrated: true            # probabilities from each RM folder's calibration.json
      batch_size: 16              # responses per RM forward pass
      dtype: float32              # RM weights
      device: auto                # cuda when there is a GPU, else cpu

and scores through one `GatedScorer`: each RM renders the conversation with its own
tokenizer and chat template (`reward.scorer`), the gate is `reward.combine.llama2_reward`.
Written here because no library ships Llama 2's two-RM gate.

The probabilities the gate compares with the threshold are calibrated: each RM folder
written by `rlhf reward train` holds `calibration.json`, p = σ(a·r + b) fitted on
held-out data (`reward.calibration`; for the safety RM p = P(safe | r) where the data
has safety labels), because σ(r) itself has an arbitrary level. A folder without one
(older runs, your own RMs) is scored with σ(r), as before, and the scorer says so once;
`calibrated: false` ignores every calibration.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from core.config import StrictModel
from core.errors import NumericError
from reward.combine import LLAMA2_SAFETY_THRESHOLD, llama2_reward, safety_gate

RewardModelDType = Literal["float32", "bfloat16", "float16"]


class RewardModelsSection(StrictModel):
    """The two reward models and the gate; the same keys in RS, PPO, GAtt and evaluation."""

    helpfulness: str | None = None  # a reward-model folder (`rlhf reward train ... kind=helpfulness`)
    safety: str | None = None
    safety_threshold: float = Field(default=LLAMA2_SAFETY_THRESHOLD, ge=0.0, le=1.0)
    calibrated: bool = True  # σ(a·r + b) from each folder's calibration.json where it has one; false: σ(r)
    batch_size: int = Field(default=16, ge=1)
    dtype: RewardModelDType = "float32"
    device: str = "auto"

    @property
    def configured(self) -> bool:
        return bool(self.helpfulness and self.safety)

    def require(self, why: str) -> RewardModelsSection:
        """Self, or a ValueError naming the missing keys and why they are needed."""
        missing = [f"reward_models.{name}" for name in ("helpfulness", "safety") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{why} needs {' and '.join(missing)}")
        return self


# Old spellings of these settings, and the key that replaced each (ConfigError names both).
RS_RENAMED = {
    "helpful_rm": "reward_models.helpfulness",
    "safety_rm": "reward_models.safety",
    "safety_threshold": "reward_models.safety_threshold",
    "rm_batch_size": "reward_models.batch_size",
    "rm_dtype": "reward_models.dtype",
}


@dataclass(frozen=True)
class GatedScores:
    """Scores of B answers.

    helpfulness_raw, safety_raw:   (B,) raw RM outputs
    helpfulness_prob, safety_prob: (B,) float64, σ(a·raw + b) with the RM's calibration, σ(raw) without
    reward:                        (B,) float64, Llama 2's R_c
    from_safety:                   (B,) bool, True where R_c took the safety score
    """

    helpfulness_raw: torch.Tensor
    helpfulness_prob: torch.Tensor
    safety_raw: torch.Tensor
    safety_prob: torch.Tensor
    reward: torch.Tensor
    from_safety: torch.Tensor

    def rows(self) -> list[dict]:
        """One JSON-ready dict per answer (the columns rejection sampling stores with each sample)."""
        return [
            {"helpful_raw": self.helpfulness_raw[i].item(), "helpful_prob": self.helpfulness_prob[i].item(),
             "safety_raw": self.safety_raw[i].item(), "safety_prob": self.safety_prob[i].item(),
             "reward": self.reward[i].item(), "reward_from": "safety" if self.from_safety[i] else "helpfulness"}
            for i in range(len(self.reward))
        ]


def is_safety_prompt(prompts: list[dict]) -> torch.Tensor:
    """(B,) bool: Llama 2's IS_SAFETY(p), the prompt record's `category == "safety"`."""
    return torch.tensor([p.get("category") == "safety" for p in prompts], dtype=torch.bool)


def check_reward_models(section: RewardModelsSection, key: str = "reward_models") -> None:
    """Both folders are one-output reward models; the error names the key. Loads nothing."""
    from core.model_paths import check_config_models

    check_config_models([(f"{key}.{name}", getattr(section, name), "reward_model") for name in ("helpfulness", "safety")])


_TOLD_UNCALIBRATED: set[str] = set()  # RM folders already reported uncalibrated in this process


class GatedScorer:
    """Scores (prompt record, answer) pairs with both RMs and the gate.

    `prompts` are prompt records `{"messages": [...], "category": ...}`; each RM
    renders them with its own chat template. `device` overrides the section's (a
    process of a multi-process launch passes its own). With `calibrated` (the
    default) each RM's probabilities come from its folder's calibration.json.
    """

    def __init__(self, section: RewardModelsSection, device: str | None = None):
        from core.device import resolve_device
        from reward.scorer import RewardScorer

        section.require("scoring with the reward models")
        check_reward_models(section)
        kwargs = {"device": resolve_device(device or section.device), "dtype": section.dtype, "batch_size": section.batch_size,
                  "calibrated": section.calibrated}
        self.section = section
        self.helpfulness = RewardScorer(section.helpfulness, **kwargs)
        self.safety = RewardScorer(section.safety, **kwargs)
        if section.calibrated:
            missing = {name: getattr(section, name) for name in ("helpfulness", "safety")
                       if getattr(self, name).calibration is None and getattr(section, name) not in _TOLD_UNCALIBRATED}
            if missing:
                _TOLD_UNCALIBRATED.update(missing.values())
                print("[reward_models] uncalibrated, scored with σ(raw) (no calibration.json): "
                      + ", ".join(f"{name} RM {path}" for name, path in missing.items()))

    @property
    def calibrated(self) -> dict[str, bool]:
        """Whether each RM's probabilities come from a calibration."""
        return {"helpfulness": self.helpfulness.calibration is not None, "safety": self.safety.calibration is not None}

    @property
    def threshold(self) -> float:
        return self.section.safety_threshold

    @property
    def paths(self) -> dict[str, Path]:
        return {"helpfulness": Path(self.section.helpfulness), "safety": Path(self.section.safety)}

    def score(self, prompts: list[dict], responses: list[str], where: str = "") -> GatedScores:
        """Both RMs on every (prompt, answer); `where` names the call site in a NaN error."""
        messages = [p["messages"] for p in prompts]
        try:
            helpful = self.helpfulness.score(messages, responses)
            safety = self.safety.score(messages, responses)
        except NumericError as exc:
            raise NumericError(f"{exc}{' at ' + where if where else ''}") from None
        for name, batch in (("helpfulness", helpful), ("safety", safety)):
            if not torch.isfinite(batch.prob).all():
                raise NumericError(f"non-finite {name} RM score{' at ' + where if where else ''}")
        is_safety = is_safety_prompt(prompts)
        # float64: a calibrated probability of a clearly safe answer lies within 6e-8 of 1,
        # which float32 rounds to 1.0 (ties in a best-of-K ranking)
        helpful_prob, safety_prob = helpful.prob.double(), safety.prob.double()
        return GatedScores(
            helpfulness_raw=helpful.raw, helpfulness_prob=helpful_prob,
            safety_raw=safety.raw, safety_prob=safety_prob,
            reward=llama2_reward(safety_prob, helpful_prob, is_safety, threshold=self.threshold),
            from_safety=safety_gate(safety_prob, is_safety, self.threshold),
        )
