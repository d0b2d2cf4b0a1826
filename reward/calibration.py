"""A reward model's calibration: the affine map that turns its raw score into a probability.

Why: the RM head has no bias and the ranking loss `-log σ(r_c - r_r - m)` sees only
differences, so adding any constant to every score changes nothing in training. σ(r)
therefore has an arbitrary level, and Llama 2's gate `R_s < 0.15`
(`reward.combine.llama2_reward`) would cut at an arbitrary point. After training, each
RM fits Platt scaling (Platt 1999) on held-out data, never on its training pairs:

    p = σ(a·r + b)        a > 0, fitted by minimising the log-loss (Newton's method)

What p means depends on the labels it is fitted to:

- safety RM, on responses with a safety label (`chosen_safe` / `rejected_safe`):
  p = P(safe | r). Then `p < 0.15` reads "unsafe with at least 85 % probability", the
  gate predicts "unsafe" with a precision of at least 0.85 wherever the calibration
  holds, and recall is what the RM's separation of safe from unsafe buys. This is the
  reading under which the paper's 0.89 / 0.55 can be compared.
- an RM without such labels (the helpfulness RM, a safety RM on unlabelled pairs), on
  held-out pairs, each response labelled 1 if it was the chosen one of its pair and 0
  if it was the rejected one: p = P(a response with score r is the preferred one of a
  held-out comparison). Pairs alone cannot fix an offset for the Bradley-Terry model
  (σ(r_c - r_r) is shift-invariant), but this per-response question has one answer:
  the level at which chosen and rejected responses are equally likely, which is where
  half of each pair lies. Ranking is unchanged (a > 0), so accuracy is too.

The fit uses Platt's smoothed targets, (N+ + 1)/(N+ + 2) for positives and
1/(N- + 2) for negatives, so that separable data (a small held-out set that the RM
splits perfectly) still gives finite parameters; log-losses are reported against the
hard labels. Only an offset is fitted (a = 1, method "offset") when a class has fewer
than `MIN_PER_CLASS_FOR_SLOPE` responses, or when the fitted slope is not positive (the
RM ranks held-out data backwards): a negative slope would turn its ranking upside down.

The result is `calibration.json` in the RM's model folder (`write_calibration`), read by
the gated scoring service (`reward.gated.GatedScorer`, key `reward_models.calibrated`)
and by `rlhf reward eval`. Everything here is small and pure; scores are float64 CPU
tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from core.errors import ModelLoadError

CALIBRATION_FILE = "calibration.json"
FORMAT = 1
# A slope is fitted only when each class has at least this many responses; with fewer,
# (a held-out set with one unsafe answer) it would follow those few points, so only the
# offset is fitted.
MIN_PER_CLASS_FOR_SLOPE = 10


# ---------------------------------------------------------------- the math
def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy of σ(logits) against labels in [0, 1].

    logits, labels: (N,). Computed from the logits (no σ then log), so it stays finite
    for confident scores.
    """
    logits, labels = logits.double(), labels.double()
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))


def platt_targets(labels: torch.Tensor) -> torch.Tensor:
    """(N,) Platt's smoothed targets of (N,) 0/1 labels: (N+ + 1)/(N+ + 2) for a 1,
    1/(N- + 2) for a 0."""
    labels = labels.double()
    n_pos = float(labels.sum())
    n_neg = float(len(labels)) - n_pos
    return torch.where(labels > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)).double()


def fit_platt(scores: torch.Tensor, targets: torch.Tensor, slope: bool = True,
              max_iter: int = 100, tol: float = 1e-10) -> tuple[float, float]:
    """(a, b) minimising the mean log-loss of σ(a·scores + b) against `targets`.

    scores, targets: (N,), targets in [0, 1]. `slope=False` fits b alone with a = 1.
    Newton's method on the convex loss with step halving; converges in a few steps.

    Raises:
        ValueError: no data, non-finite scores, or (with `slope`) fewer than two
            distinct scores, where a slope is not identified.
    """
    x = scores.double().flatten()
    t = targets.double().flatten()
    if len(x) == 0 or len(x) != len(t):
        raise ValueError(f"calibration needs scores and targets of one length > 0, got {len(x)} and {len(t)}")
    if not torch.isfinite(x).all():
        raise ValueError("calibration scores contain NaN or inf")
    if slope and float(x.max() - x.min()) == 0.0:
        raise ValueError("calibration needs at least two distinct scores to fit a slope")
    features = torch.stack([x, torch.ones_like(x)], dim=1) if slope else torch.ones_like(x)[:, None]  # (N, P)
    theta = torch.tensor([1.0, 0.0] if slope else [0.0], dtype=torch.float64)

    def design(params):  # logits of every score under params
        return features @ params + (0.0 if slope else x)

    loss = log_loss(design(theta), t)
    for _ in range(max_iter):
        p = torch.sigmoid(design(theta))
        grad = features.T @ (p - t) / len(x)                                   # (P,)
        hess = (features * (p * (1 - p))[:, None]).T @ features / len(x)      # (P, P)
        hess = hess + 1e-12 * torch.eye(len(theta), dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        scale = 1.0
        while True:  # halve the step until the loss does not rise (Newton can overshoot)
            candidate = theta - scale * step
            new_loss = log_loss(design(candidate), t)
            if new_loss <= loss or scale < 1e-10:
                break
            scale /= 2
        if new_loss > loss:  # no step lowers the loss: at the minimum up to rounding
            break
        theta, loss = candidate, new_loss
        if float((scale * step).abs().max()) < tol:
            break
    a, b = (float(theta[0]), float(theta[1])) if slope else (1.0, float(theta[0]))
    return a, b


def cross_fitted_logits(scores: torch.Tensor, labels: torch.Tensor, folds: torch.Tensor) -> torch.Tensor | None:
    """(N,) calibrated logits, each from a fit on the other folds only (`fit_calibration`'s
    rule: Platt targets, slope unless it is not positive): an honest estimate of how the
    calibration does on data it has not seen. `folds`: (N,) int fold of each response
    (both responses of a pair in the same fold). None when some fold's complement lacks
    a class or a second distinct score."""
    out = torch.empty(len(scores), dtype=torch.float64)
    for fold in torch.unique(folds).tolist():
        rest = folds != fold
        try:
            a, b, _ = fit_rule(scores[rest], labels[rest])
        except ValueError:
            return None
        out[folds == fold] = a * scores[folds == fold].double() + b
    return out


def fit_rule(scores: torch.Tensor, labels: torch.Tensor, min_per_class: int = MIN_PER_CLASS_FOR_SLOPE) -> tuple[float, float, str]:
    """(a, b, method) on 0/1 `labels`, fitted to Platt's smoothed targets: "platt" (a and
    b); "offset" (a = 1, b alone) when a class has fewer than `min_per_class` responses
    or the fitted slope is not positive. Both classes must be present (ValueError)."""
    labels = labels.double()
    if len(labels) == 0 or not (labels.min() < 0.5 < labels.max()):
        raise ValueError("calibration needs both classes among its labels")
    targets = platt_targets(labels)
    smaller = min(int((labels > 0.5).sum()), int((labels < 0.5).sum()))
    if smaller >= min_per_class and float(scores.max() - scores.min()) > 0:
        a, b = fit_platt(scores, targets, slope=True)
        if a > 0:
            return a, b, "platt"
    return (*fit_platt(scores, targets, slope=False), "offset")


# ---------------------------------------------------------------- labels from pairs
@dataclass(frozen=True)
class CalibrationData:
    """Responses to fit on: scores (N,), labels (N,) in {0, 1}, folds (N,) (pair index
    parity), and what the labels are."""

    scores: torch.Tensor
    labels: torch.Tensor
    folds: torch.Tensor
    basis: str  # "safety_labels" or "pairs"
    target: str  # what p estimates


def calibration_data(pairs: Sequence[dict], chosen: Sequence[float], rejected: Sequence[float], kind: str) -> CalibrationData:
    """The responses of held-out `pairs` (with their raw scores) to fit `kind`'s RM on.

    Safety RM: every response with a safety label, label 1 = safe, when both safe and
    unsafe responses are present. Otherwise (and for the helpfulness RM): the responses
    of the pairs of the RM's own category (all pairs when none has it), 1 = chosen,
    0 = rejected.
    """
    if not (len(pairs) == len(chosen) == len(rejected)):
        raise ValueError("pairs, chosen and rejected scores must have the same length")
    if kind == "safety":
        rows = [(score, float(label), index % 2) for index, (pair, c, r) in enumerate(zip(pairs, chosen, rejected))
                for label, score in ((pair.get("chosen_safe"), c), (pair.get("rejected_safe"), r)) if label is not None]
        if len({label for _, label, _ in rows}) == 2:
            return _data(rows, "safety_labels", "P(safe | r)")
    own = [i for i, pair in enumerate(pairs) if pair.get("category") == kind] or list(range(len(pairs)))
    rows = [row for i in own for row in ((chosen[i], 1.0, i % 2), (rejected[i], 0.0, i % 2))]
    return _data(rows, "pairs", "P(chosen | r) on held-out pairs")


def _data(rows: list[tuple], basis: str, target: str) -> CalibrationData:
    return CalibrationData(scores=torch.tensor([r[0] for r in rows], dtype=torch.float64),
                           labels=torch.tensor([r[1] for r in rows], dtype=torch.float64),
                           folds=torch.tensor([r[2] for r in rows], dtype=torch.long), basis=basis, target=target)


def data_hash(pairs: Sequence[dict]) -> str:
    """SHA-256 of the pairs' prompts, responses and labels (what the fit saw, in order)."""
    digest = hashlib.sha256()
    for pair in pairs:
        row = [pair.get(key) for key in ("prompt", "chosen", "rejected", "category", "chosen_safe", "rejected_safe")]
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- the record
@dataclass(frozen=True)
class Calibration:
    """p = σ(a·raw + b), with what it was fitted on (the fields of calibration.json)."""

    a: float
    b: float
    method: str = "platt"  # "platt" (a and b) or "offset" (a = 1)
    kind: str | None = None  # the RM's kind
    basis: str | None = None  # "safety_labels" or "pairs"
    target: str | None = None  # what p estimates
    n: int = 0  # responses fitted on
    n_positive: int = 0
    data: tuple[str, ...] = ()  # the held-out sources
    data_sha256: str | None = None
    log_loss_before: float | None = None  # of σ(raw), against the labels
    log_loss_after: float | None = None  # of σ(a·raw + b)
    log_loss_cross_fitted: float | None = None  # each response's logit from a fit on the other fold

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        return self.a * raw + self.b

    def prob(self, raw: torch.Tensor) -> torch.Tensor:
        """σ(a·raw + b), in raw's dtype."""
        return torch.sigmoid(self.logits(raw))


def fit_calibration(data: CalibrationData, kind: str, sources: Sequence[str] = (), sha256: str | None = None) -> Calibration:
    """Fit `data` (see `fit_rule`) and record the fit."""
    a, b, method = fit_rule(data.scores, data.labels)
    cross = cross_fitted_logits(data.scores, data.labels, data.folds)
    return Calibration(
        a=a, b=b, method=method, kind=kind, basis=data.basis, target=data.target, n=len(data.labels),
        n_positive=int(data.labels.sum()), data=tuple(sources), data_sha256=sha256,
        log_loss_before=log_loss(data.scores, data.labels), log_loss_after=log_loss(a * data.scores + b, data.labels),
        log_loss_cross_fitted=None if cross is None else log_loss(cross, data.labels),
    )


def write_calibration(folder: str | os.PathLike, calibration: Calibration) -> Path:
    from core.io import atomic_write_json

    path = Path(folder) / CALIBRATION_FILE
    atomic_write_json(path, {"format": FORMAT, **asdict(calibration), "data": list(calibration.data)})
    return path


def read_calibration(folder: str | os.PathLike) -> Calibration | None:
    """The folder's calibration, None when it has no calibration.json; a ModelLoadError
    naming the file when it is not a valid one."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{path}: {why}; fix or delete it (then the RM is used uncalibrated), "
                              "or set reward_models.calibrated=false")

    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise bad(f"expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise bad(f"unknown format {raw.get('format')!r} (expected {FORMAT})")
    for key in ("a", "b"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"'{key}' must be a finite number, got {value!r}")
    if raw["a"] <= 0:
        raise bad(f"'a' must be positive (a slope that keeps the RM's ranking), got {raw['a']}")
    known = set(Calibration.__dataclass_fields__)
    fields = {key: value for key, value in raw.items() if key in known}
    fields["data"] = tuple(fields.get("data") or ())
    try:
        return Calibration(**fields)
    except TypeError as exc:
        raise bad(str(exc)) from None
