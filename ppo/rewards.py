"""The reward PPO maximises (`reward.kind`): the gated RMs, one RM, or a Python function.

Every kind gives one raw reward per response,

    gated        R_c, Llama 2's gated probability (both RMs, `reward.gated.GatedScorer`)
    helpfulness  σ(r_h), the helpfulness RM's probability
    safety       σ(r_s), the safety RM's probability
    function     f(prompts, responses) for `reward.function: "module:function"`

and the score the loop whitens is LOGIT of an RM probability (Llama 2) or a function's
value as it is. The RM scores come from the one shared scoring service, so an RM kind
scores with the same templates, gate and NaN checks as every other stage.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import ConfigError, NumericError, RLHFError
from ppo.core import logit

LOGIT_EPS = 1e-12  # LOGIT's clamp: scores up to ±27.6, beyond any calibrated RM logit seen (about 21)

RewardFunction = Callable[[list[dict], list[str]], object]


def load_reward_function(spec: str, key: str = "reward.function") -> RewardFunction:
    """The callable named by `module:function` (or `path/to/file.py:function`).

    A module is imported from the Python path, with the working directory added at
    its end; a `.py` path is loaded from that file. The function may be an attribute
    path (`module:Class.method`). Errors name `key`.
    """
    target, sep, attribute = spec.rpartition(":")
    if not sep or not target or not attribute:
        raise ConfigError(f"{key}: expected \"module:function\" or \"path/to/file.py:function\", got {spec!r}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"{key}: {path} is not a file")
        module_spec = importlib.util.spec_from_file_location(f"_ppo_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: report whatever it raised
            raise ConfigError(f"{key}: cannot load {path}: {type(exc).__name__}: {exc}") from None
    else:
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ConfigError(f"{key}: cannot import module {target!r}: {type(exc).__name__}: {exc}") from None
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"{key}: {target} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise ConfigError(f"{key}: {target}:{attribute} is not callable")
    return value


@dataclass(frozen=True)
class RewardBatch:
    """Rewards of B responses.

    raw:        (B,) float32, the reward before LOGIT and whitening (a probability for an RM kind)
    score:      (B,) float32, what is whitened: logit(raw) for an RM kind, raw for a function
    rm_reward:  (B,) float32 R_c (the gated probability) when the RMs scored the batch, else None
    from_safety: (B,) bool, True where the gated R_c is the safety RM's score (all False for
                the other kinds: one reward, one scale)
    """

    raw: torch.Tensor
    score: torch.Tensor
    rm_reward: torch.Tensor | None
    from_safety: torch.Tensor


class TrainingReward:
    """`reward(prompts, responses, where)` -> RewardBatch for the configured `reward.kind`.

    `scorer` is the stage's `GatedScorer` (RM kinds score through it; a function kind
    never calls it). `prompts` are prompt records, `responses` the decoded texts.
    """

    def __init__(self, section, scorer=None):
        self.kind = section.kind
        self.scorer = scorer
        self.function = load_reward_function(section.function) if self.kind == "function" else None
        if self.kind != "function" and scorer is None:
            raise RLHFError(f"reward.kind {self.kind} needs the reward models")

    def __call__(self, prompts: list[dict], responses: list[str], where: str) -> RewardBatch:
        if self.kind == "function":
            raw = self._call_function(prompts, responses, where)
            return RewardBatch(raw=raw, score=raw, rm_reward=None, from_safety=torch.zeros(len(raw), dtype=torch.bool))
        try:
            scores = self.scorer.score(prompts, responses, where=where)
        except NumericError as exc:
            raise NumericError(f"{exc}; the last checkpoint is left as it was") from None
        probability = {"gated": scores.reward, "helpfulness": scores.helpfulness_prob, "safety": scores.safety_prob}[self.kind]
        # LOGIT in float64 with a 1e-12 clamp: a calibrated RM puts clearly safe answers at
        # logits near 20, which float32 probabilities (and a 1e-6 clamp) would flatten to one value.
        score = logit(probability.double(), eps=LOGIT_EPS).float()
        from_safety = scores.from_safety if self.kind == "gated" else torch.zeros(len(score), dtype=torch.bool)
        return RewardBatch(raw=probability.float(), score=score, rm_reward=scores.reward.float(), from_safety=from_safety.cpu())

    def _call_function(self, prompts: list[dict], responses: list[str], where: str) -> torch.Tensor:
        values = self.function(prompts, responses)
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise RLHFError(f"reward.function must return one float per response; got {type(values).__name__} ({exc})") from None
        if len(floats) != len(responses):
            raise RLHFError(f"reward.function returned {len(floats)} values for {len(responses)} responses")
        if not all(math.isfinite(v) for v in floats):
            raise NumericError(f"non-finite reward from reward.function at {where}; the last checkpoint is left as it was")
        return torch.tensor(floats, dtype=torch.float32)
