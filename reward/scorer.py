"""Score (prompt, response) pairs with a trained reward model, in its own format.

A reward model folder is an `AutoModelForSequenceClassification` with one output
and its tokenizer (chat template included) saved beside it. `RewardScorer` renders
each conversation with *that* tokenizer's chat template, exactly as training did
(`encode_conversation` is the one function both use), so a policy and its reward
models need not share a tokenizer: callers pass messages and response text, never
token ids.

    >>> scorer = RewardScorer("runs/quickstart/rm_safety/model")
    >>> batch = scorer.score([[{"role": "user", "content": "Hi"}]], ["Hello!"])
    >>> batch.raw, batch.prob        # (B,) raw RM outputs and sigma(raw)

With `calibrated=True` the folder's `calibration.json` (`reward.calibration`), when it
has one, turns raw scores into probabilities instead: prob = sigma(a * raw + b).

Padding: sequences are right-padded with the model's `pad_token_id`, and the
classification head reads the last token that is not the pad token (transformers'
rule). Chat templates end a turn with the end-of-turn token followed by a newline
(ChatML) or with the end-of-sequence token; either way training and scoring read
the same position, because both go through this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from core.chat import render
from core.errors import ModelLoadError


@dataclass(frozen=True)
class ScoreBatch:
    """Scores of B responses: `raw` (B,) float32 RM outputs, `prob` (B,) = sigma(raw), or
    sigma(a * raw + b) in float64 from a scorer's calibration."""

    raw: torch.Tensor
    prob: torch.Tensor


def conversation(prompt: list[dict], response: str) -> list[dict]:
    return list(prompt) + [{"role": "assistant", "content": response}]


def encode_conversation(tokenizer, prompt: list[dict], response: str) -> list[int]:
    """Token ids of prompt + response rendered with the RM's own chat template.

    The template adds the special tokens it needs (BOS for Llama 2's), so the
    tokenizer is told not to add its own.
    """
    text = render(tokenizer, conversation(prompt, response))
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) input ids right-padded with `pad_id`, and the (B, T) attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def check_reward_model_folder(path: str | os.PathLike) -> Path:
    """The folder, if it holds a one-output sequence-classification model with complete
    weights; else a one-line ModelLoadError naming it (and the right folder where there
    is one). The same check as `core.model_paths.check_reward_model_path`."""
    from core.model_paths import check_reward_model_path

    return check_reward_model_path(path)


class RewardScorer:
    """Scores batches of (prompt messages, response) with one reward model.

    Args:
        path: a reward-model folder (as written by `rlhf reward train` in `model/`).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "bfloat16" or "float16" for the weights.
        batch_size: responses per forward pass.
        calibrated: read the folder's calibration.json (None when it has none) and
            score probabilities with it; a malformed file is a ModelLoadError naming it.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", dtype: str = "float32", batch_size: int = 16,
                 calibrated: bool = False):
        from transformers import AutoModelForSequenceClassification

        from core.models import load_tokenizer, torch_dtype

        folder = check_reward_model_folder(path)
        from reward.calibration import read_calibration

        calibration = read_calibration(folder) if calibrated else None  # a bad file stops before the weights load
        try:
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch_dtype(dtype), use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the reward model in {folder}: {exc}") from None
        tokenizer = load_tokenizer(str(folder))
        self._init(model.to(device), tokenizer, batch_size)
        self.path = folder
        self.calibration = calibration

    @classmethod
    def from_model(cls, model, tokenizer, batch_size: int = 16, calibration=None) -> RewardScorer:
        """A scorer around an in-memory model (used right after training)."""
        scorer = cls.__new__(cls)
        scorer._init(model, tokenizer, batch_size)
        scorer.path = None
        scorer.calibration = calibration
        return scorer

    def _init(self, model, tokenizer, batch_size: int) -> None:
        if getattr(model.config, "num_labels", None) != 1:
            raise ModelLoadError(f"the reward model must have one output, got num_labels={model.config.num_labels}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        pad_id = model.config.pad_token_id
        self.pad_id = tokenizer.pad_token_id if pad_id is None else pad_id
        if self.pad_id is None:
            raise ModelLoadError("the reward model has no pad token id (config.pad_token_id) and its tokenizer none either")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.pad_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: list[list[dict]], responses: list[str]) -> list[list[int]]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [encode_conversation(self.tokenizer, p, r) for p, r in zip(prompts, responses)]

    @torch.no_grad()
    def score_ids(self, sequences: list[list[int]]) -> torch.Tensor:
        """(B,) float32 raw scores of already-encoded sequences (on CPU)."""
        out = torch.empty(len(sequences), dtype=torch.float32)
        # Similar lengths together: less padding, and the order is restored below.
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            ids, mask = pad_right([sequences[i] for i in chunk], self.pad_id)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False).logits
            out[chunk] = logits[:, 0].float().cpu()
        return out

    def score(self, prompts: list[list[dict]], responses: list[str]) -> ScoreBatch:
        """Raw scores and probabilities (sigma of the raw score, or of the calibrated one) of each response."""
        if not responses:
            empty = torch.empty(0)
            return ScoreBatch(raw=empty, prob=empty)
        raw = self.score_ids(self.encode(prompts, responses))
        if not torch.isfinite(raw).all():
            from core.errors import NumericError

            raise NumericError(f"reward model {self.path or '(in memory)'} produced a NaN or inf score")
        # float64 for a calibration: its offset can push safe answers to σ > 1 - 6e-8, where
        # float32 rounds every one of them to 1.0 and a best-of-K ranking would see ties
        prob = torch.sigmoid(raw) if self.calibration is None else self.calibration.prob(raw.double())
        return ScoreBatch(raw=raw, prob=prob)
