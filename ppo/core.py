"""Pure PPO math for the Llama 2 RLHF loop: no model, no I/O, shapes in docstrings.

Written by hand because TRL removed its PPO trainer (TRL 1.16 ships neither
``PPOTrainer`` nor helpers such as ``masked_whiten``); the formulas follow
lm-human-preferences, TRL's former ``PPOTrainer`` and cleanrl, and Llama 2 (arXiv 2307.09288, section 3.2.3) for the reward:

    R(g | p) = WHITEN(LOGIT(R_c(g | p))) - β · KL(π_θ(g | p) ‖ π_0(g | p))

Conventions used by every function here:

* Token tensors are (B, T) over the *response* positions (or over prompt+response;
  either works as long as the mask marks the response tokens).
* ``mask`` is a float (0./1.) or bool tensor of shape (B, T); non-zero = a real
  response token that the loss and the statistics count. Each row's real tokens must
  be one contiguous run (leading zeros for a prompt or left padding and trailing zeros
  for right padding are fine; holes are not). The EOS token, if generated, should be
  marked real: it is the action that ended the episode.
* Masked-out positions are ignored even if they hold inf or NaN (``torch.where``, not
  multiplication by the mask, so neither the value nor the gradient of a loss is
  poisoned by padding), and every (B, T) output is 0 there.
* Per-token outputs computed from rollouts (``per_token_rewards``, ``gae``) run under
  ``torch.no_grad``: they are targets, never differentiated through.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

_WHITEN_EPS = 1e-8


# --------------------------------------------------------------------------- masks


def _bool_mask(x: torch.Tensor, mask: torch.Tensor, name: str = "x") -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match {name} shape {tuple(x.shape)}"
        )
    return mask if mask.dtype == torch.bool else mask != 0


def _check_contiguous(mask: torch.Tensor) -> None:
    """Each row of a (B, T) bool mask must be a single run of real tokens."""
    rises = mask[:, 1:] & ~mask[:, :-1]
    runs = mask[:, 0].long() + rises.long().sum(dim=1)
    if (runs > 1).any():
        rows = torch.nonzero(runs > 1).flatten().tolist()
        raise ValueError(f"mask rows {rows} have holes; each row's real tokens must be contiguous")


Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over every process of a launch (``accelerator.reduce(t, "sum")``). The
whole-batch statistics below take one: with it, ``x`` is this process's share and the
statistic is the one of all shares together; without it, of ``x`` alone."""


def _sum_counts(total: torch.Tensor, count: torch.Tensor, reduce: Reduce | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count), summed over processes in float64 when ``reduce`` is given."""
    if reduce is None:
        return total, count
    summed = reduce(torch.stack([total.double(), count.double()]))
    return summed[0].to(total.dtype), summed[1]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None, reduce: Reduce | None = None) -> torch.Tensor:
    """Mean of ``x`` over the real (mask != 0) entries.

    Args:
        x: any shape, e.g. (B, T).
        mask: same shape as ``x``, float or bool.
        dim: None for one mean over all real entries (0-d result), or the dimension to
            reduce (e.g. ``dim=1`` gives a (B,) per-sequence mean).
        reduce: with ``dim=None``, sums over processes: the mean of every process's real entries.

    Returns:
        0-d tensor (dim=None) or ``x`` reduced over ``dim``. With ``dim`` given, a row
        without real entries gets 0; with dim=None an all-zero mask raises ValueError
        (a loss over no tokens is a bug upstream, not a number).
    """
    m = _bool_mask(x, mask)
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        total, count = _sum_counts(total.sum(), m.sum(), reduce)
        if count == 0:
            raise ValueError("masked_mean: the mask has no real entries")
        return total / count
    count = m.sum(dim=dim)
    return total.sum(dim=dim) / count.clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, reduce: Reduce | None = None) -> torch.Tensor:
    """Variance of ``x`` over the real entries, as TRL / lm-human-preferences compute it.

    ``unbiased=True`` applies Bessel's correction n / (n - 1) with n = number of real
    entries, so it equals ``torch.var(x[mask])``.

    Args:
        x: any shape, e.g. (B, T).
        mask: same shape, float or bool.
        reduce: sums over processes: the variance of every process's real entries.

    Returns:
        0-d tensor.

    Raises:
        ValueError: with no real entry, or exactly one when ``unbiased``.
    """
    m = _bool_mask(x, mask)
    mean = masked_mean(x, m, reduce=reduce)
    var = masked_mean((x - mean) ** 2, m, reduce=reduce)
    if unbiased:
        _, n = _sum_counts(torch.zeros((), dtype=x.dtype), m.sum(), reduce)
        if n == 1:
            raise ValueError("masked_var: one real entry, the unbiased variance is undefined")
        var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = _WHITEN_EPS, reduce: Reduce | None = None
) -> torch.Tensor:
    """Whiten ``x`` with the mean and unbiased variance of its real entries only.

    ``(x - mean) / sqrt(var + eps)``; with ``shift_mean=False`` the mean is added back
    (only the scale is normalised, as TRL does for rewards). Used on GAE advantages.

    Args:
        x: (B, T) (any shape works).
        mask: same shape, float or bool.
        reduce: sums over processes: whiten with the statistics of the whole batch.

    Returns:
        Same shape as ``x``; masked-out entries are 0 (unlike TRL, which leaves them
        with whitened garbage), so they cannot leak into a later unmasked sum.
    """
    m = _bool_mask(x, mask)
    mean = masked_mean(x, m, reduce=reduce)
    var = masked_var(x, m, unbiased=True, reduce=reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))


# ------------------------------------------------------------------ reward shaping


def logit(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Inverse sigmoid ``log(p / (1 - p))``, Llama 2's LOGIT of the gated reward.

    ``p`` is clamped to [eps, 1 - eps] first so that a saturated RM (p = 0 or 1) gives
    a large finite score instead of ±inf. Half-precision input is computed in float32
    (in bf16, 1 - 1e-6 rounds to 1 and the clamp would not help).

    Args:
        p: any shape, probabilities.

    Returns:
        Same shape; float32 for half input, else ``p``'s dtype.
    """
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def whiten(x: torch.Tensor, shift_mean: bool = True, eps: float = _WHITEN_EPS) -> torch.Tensor:
    """Whiten a 1-D batch of sequence scores with the batch's own statistics.

    ``(x - mean(x)) / sqrt(var(x) + eps)`` with the unbiased variance; this is Llama 2's
    WHITEN applied per rollout batch. See ``RunningMoments`` for the alternative with
    running statistics, and the note there on which to use.

    Args:
        x: (B,) scores, B >= 2.

    Returns:
        (B,) whitened scores.
    """
    if x.dim() != 1:
        raise ValueError(f"whiten expects a 1-D batch of scores, got shape {tuple(x.shape)}")
    if x.numel() < 2:
        raise ValueError("whiten needs at least 2 scores; use RunningMoments for batch size 1")
    return masked_whiten(x, torch.ones_like(x, dtype=torch.bool), shift_mean=shift_mean, eps=eps)


class RunningMoments:
    """Running count, mean and variance of every score seen, for WHITEN across batches.

    Why two ways to whiten. Llama 2 says only that the logit of R_c is whitened "to
    increase stability and balance properly with the KL penalty term". Whitening each
    batch by its own statistics (``whiten``) is exact but noisy for the small batches a
    CPU run uses, and it re-centres every batch to zero, hiding the reward's progress
    from the critic. Running statistics (TRL's former ``use_score_norm``, OpenRLHF's
    reward normalisation) keep one scale across iterations. Call ``update(scores)``
    first, then ``whiten(scores)`` (TRL's order), so the first batch is whitened by its
    own statistics. In multi-process runs, gather the scores of all processes before
    ``update`` so every rank holds the same statistics.

    ``update`` merges batches with Chan et al.'s parallel algorithm, so ``var`` equals
    ``torch.var`` (unbiased) of all the data seen, concatenated. Statistics are Python
    floats (float64), so they checkpoint exactly via ``state_dict``.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean

    @property
    def var(self) -> float:
        """Unbiased variance of all data seen (NaN before 2 values)."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch of any shape (all its elements) into the statistics."""
        x = batch.detach().double().flatten()
        n_b = x.numel()
        if n_b == 0:
            return
        if torch.isnan(x).any():
            raise ValueError("RunningMoments.update: batch contains NaN")
        mean_b = x.mean().item()
        m2_b = ((x - mean_b) ** 2).sum().item()
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.count = n

    def whiten(
        self, x: torch.Tensor, shift_mean: bool = True, eps: float = _WHITEN_EPS
    ) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)`` with the running statistics; any shape."""
        if self.count < 2:
            raise ValueError("RunningMoments.whiten: update with at least 2 values first")
        out = (x - self.mean) / math.sqrt(self.var + eps)
        return out if shift_mean else out + self.mean

    def state_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.count = int(state["count"])
        self.mean = float(state["mean"])
        self.m2 = float(state["m2"])


_KL_KINDS = ("k1", "abs", "mse", "k3")
_KL_ALIASES = {"kl": "k1", "k2": "mse"}  # TRL's name for k1, Schulman's name for mse


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from log-probs of tokens sampled from π.

    With d = logprobs - ref_logprobs (Schulman, "Approximating KL divergence"):
      * "k1" (alias "kl"): d. Unbiased, can be negative per token. Llama 2's choice.
      * "abs": |d|.
      * "mse" (alias "k2"): 0.5 * d². Biased, non-negative.
      * "k3": (exp(-d) - 1) + d. Unbiased, non-negative.

    Args:
        logprobs, ref_logprobs: (B, T) log-probs of the sampled tokens.

    Returns:
        (B, T); not masked (``per_token_rewards`` masks it).
    """
    name = _KL_ALIASES.get(kind, kind)
    d = logprobs - ref_logprobs
    if name == "k1":
        return d
    if name == "abs":
        return d.abs()
    if name == "mse":
        return 0.5 * d.square()
    if name == "k3":
        return torch.expm1(-d) + d
    raise ValueError(
        f"unknown KL estimator {kind!r}; allowed: {', '.join(_KL_KINDS + tuple(_KL_ALIASES))}"
    )


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: index of each row's last real token in a (B, T) mask.

    Raises ValueError for a row with no real token.
    """
    m = mask if mask.dtype == torch.bool else mask != 0
    if not m.any(dim=1).all():
        rows = torch.nonzero(~m.any(dim=1)).flatten().tolist()
        raise ValueError(f"mask rows {rows} have no real token")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    # The largest position that is real; -1 elsewhere never wins because a row has one.
    return torch.where(m, positions, torch.full_like(positions, -1)).amax(dim=1)


@torch.no_grad()
def per_token_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO rewards: -β·KL on every response token, plus the score at the last.

    Llama 2's R = WHITEN(LOGIT(R_c)) - β·KL, spread over tokens the way
    lm-human-preferences and TRL do: the KL term is charged per token, the sequence
    score (already gated, logit-ed and whitened) arrives once, at the last real token
    of each row (rows may have different lengths).

    Args:
        score: (B,) sequence scores.
        logprobs: (B, T) policy log-probs of the sampled tokens (at rollout time).
        ref_logprobs: (B, T) reference (initial policy) log-probs of the same tokens.
        mask: (B, T) float or bool, non-zero = real response token.
        beta: KL coefficient (Llama 2: 0.01 for 7B/13B, 0.005 for 34B/70B).
        kind: KL estimator, see ``kl_penalty``.

    Returns:
        rewards: (B, T), 0 at masked positions.
        kl: (B, T) per-token KL estimate, 0 at masked positions (for logging:
            ``kl.sum(1).mean()`` is the mean sequence KL).
    """
    m = _bool_mask(logprobs, mask, "logprobs")
    if ref_logprobs.shape != logprobs.shape:
        raise ValueError(
            f"ref_logprobs shape {tuple(ref_logprobs.shape)} does not match "
            f"logprobs shape {tuple(logprobs.shape)}"
        )
    if score.shape != (logprobs.shape[0],):
        raise ValueError(f"score must have shape ({logprobs.shape[0]},), got {tuple(score.shape)}")
    zeros = torch.zeros_like(logprobs)
    kl = torch.where(m, kl_penalty(logprobs, ref_logprobs, kind), zeros)
    rewards = -beta * kl
    last = last_token_index(m)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score.to(rewards.dtype)
    return rewards, kl


def missing_eos_scores(
    scores: torch.Tensor, finished: torch.Tensor, penalty: float | None, mode: str = "subtract"
) -> torch.Tensor:
    """Sequence scores with the missing-EOS penalty on responses cut at the token limit.

    A response that ran into ``max_new_tokens`` without an end-of-turn token is not an
    answer the policy chose to end; scoring it as if finished teaches the policy that
    rambling is free (lm-human-preferences, TRL and OpenRLHF all penalise it).

    Args:
        scores: (B,) sequence scores (whitened).
        finished: (B,) bool, True where the response ended with an end-of-turn token.
        penalty: p >= 0, or None for no penalty.
        mode: "subtract" (TRL's ``missing_eos_penalty``): score - p on truncated rows;
            "replace" (lm-human-preferences' ``penalty_reward_value``): -p on them.

    Returns:
        (B,) scores; finished rows unchanged.
    """
    if scores.shape != finished.shape:
        raise ValueError(f"finished shape {tuple(finished.shape)} does not match scores shape {tuple(scores.shape)}")
    if penalty is None:
        return scores
    truncated = ~finished.to(torch.bool)
    if mode == "subtract":
        penalised = scores - penalty
    elif mode == "replace":
        penalised = torch.full_like(scores, -penalty)
    else:
        raise ValueError(f"unknown missing-EOS mode {mode!r}; allowed: subtract, replace")
    return torch.where(truncated.to(scores.device), penalised, scores)


def adaptive_kl_beta(beta: float, kl: float, target: float, horizon: int, n_samples: int) -> float:
    """One step of Ziegler et al.'s (2019) adaptive KL controller.

        e = clip(KL / target - 1, -0.2, 0.2)
        β' = β · (1 + e · n_samples / horizon)

    β grows while the policy's KL from π0 is above the target and shrinks below it, by
    at most 20 % of n_samples / horizon per update (lm-human-preferences, TRL's
    ``AdaptiveKLController``).

    Args:
        beta: the current β.
        kl: the batch's mean sequence KL(π ‖ π0) (summed over tokens).
        target: the KL to hold, > 0.
        horizon: samples over which β may change by a factor of about e^0.2.
        n_samples: samples in the batch (global).

    Returns:
        The next β.
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target} and {horizon}")
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_samples / horizon)


# ------------------------------------------------------------------- advantages


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation by a reverse scan over T.

        δ_t = r_t + γ · V_{t+1} - V_t
        A_t = δ_t + γ · λ · A_{t+1}

    The value after a row's last real token counts as 0: the response ended (EOS or
    the length limit) and nothing follows, so there is nothing to bootstrap from.
    Masked positions are treated as absent (value and reward 0).

    Whitening the advantages (step 5 of the loop) is left to the caller:
    ``masked_whiten(advantages, mask)``; the returns are computed before it.

    Args:
        rewards: (B, T) per-token rewards (``per_token_rewards``).
        values: (B, T) critic values V_t at rollout time.
        mask: (B, T) float or bool; each row one contiguous run of real tokens.
        gamma: discount (1.0 in lm-human-preferences and TRL).
        lam: GAE λ (0.95 in TRL).

    Returns:
        advantages: (B, T), 0 at masked positions.
        returns: (B, T) = advantages + values, 0 at masked positions (the value
            targets).
    """
    m = _bool_mask(rewards, mask, "rewards")
    if values.shape != rewards.shape:
        raise ValueError(
            f"values shape {tuple(values.shape)} does not match rewards shape "
            f"{tuple(rewards.shape)}"
        )
    _check_contiguous(m)
    zeros = torch.zeros_like(rewards)
    r = torch.where(m, rewards, zeros)
    v = torch.where(m, values, zeros)
    mf = m.to(rewards.dtype)
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = v[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = r[:, t] + gamma * next_value - v[:, t]
        # Multiplying by the mask restarts the trace at the padding after each row's
        # end, so one row's padding never feeds an advantage.
        last_gae = (delta + gamma * lam * last_gae) * mf[:, t]
        advantages[:, t] = last_gae
    returns = advantages + v
    return advantages, returns


# ---------------------------------------------------------------------- losses


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, ``mean_t max(-A ρ, -A clip(ρ, 1-ε, 1+ε))`` over real tokens.

    ρ = exp(logprobs - old_logprobs). The mean is over all real tokens of the batch
    (token-level, as TRL and lm-human-preferences), not per sequence first.

    Args:
        logprobs: (B, T) current policy log-probs (with grad).
        old_logprobs: (B, T) log-probs at rollout time.
        advantages: (B, T) (whitened) advantages.
        mask: (B, T) float or bool.
        clip: ε (Llama 2: 0.2).

    Returns:
        loss: 0-d tensor.
        stats: detached 0-d tensors (call ``.item()`` when logging):
            ``clipfrac``: fraction of real tokens where the clipped term was chosen;
            ``approx_kl``: 0.5 · mean((logp - old)²), TRL's and
            lm-human-preferences' estimate of KL(old ‖ new);
            ``approx_kl_k3``: mean((ρ - 1) - log ρ), unbiased and non-negative
            (cleanrl, Schulman);
            ``ratio_mean``: mean ρ (1 at the first minibatch of an epoch).
    """
    m = _bool_mask(logprobs, mask, "logprobs")
    zeros = torch.zeros_like(logprobs)
    # where, not subtraction alone: padded log-probs may be -inf and exp(nan) would
    # poison the gradient even though the mean ignores them.
    log_ratio = torch.where(m, logprobs - old_logprobs, zeros)
    ratio = torch.exp(log_ratio)
    advantages = torch.where(m, advantages, zeros)  # a NaN here would give 0 * NaN grads
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), m),
            "approx_kl": 0.5 * masked_mean(log_ratio.square(), m),
            "approx_kl_k3": masked_mean(torch.expm1(log_ratio) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``0.5 · mean_t max((V - R)², (clip(V, V_old ± c) - R)²)``.

    Args:
        values: (B, T) current critic values (with grad).
        old_values: (B, T) values at rollout time.
        returns: (B, T) GAE returns (targets).
        mask: (B, T) float or bool.
        clip: c, the value clip range (TRL default 0.2); None disables clipping.

    Returns:
        loss: 0-d tensor.
        stats: detached 0-d tensors: ``vf_clipfrac`` (fraction of real tokens where the
            clipped error was larger and so chosen).
    """
    m = _bool_mask(values, mask, "values")
    # Zero the padding first: (NaN - R)^2 would make the gradient NaN even though the
    # masked mean drops it from the forward value.
    zeros = torch.zeros_like(values)
    values = torch.where(m, values, zeros)
    old_values = torch.where(m, old_values, zeros)
    returns = torch.where(m, returns, zeros)
    unclipped = (values - returns).square()
    if clip is None:
        clipped = unclipped
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        clipped = (v_clipped - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped > unclipped).float(), m)}
    return loss, stats


# ------------------------------------------------------------------- diagnostics


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of each label: ``log_softmax(logits)[..., label]``.

    Computed as ``logits[label] - logsumexp(logits)`` in float32, which never
    materialises the full (B, T, V) log-softmax a second time.

    Args:
        logits: (B, T, V), already aligned with ``labels`` (logits at position t scored
            the token at t, i.e. the caller has shifted by one) and already divided by
            the sampling temperature if the rollout used one.
        labels: (B, T) long token ids.

    Returns:
        (B, T) float32.
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy of the policy over real tokens.

    H_t = -Σ_v p_v log p_v with p = softmax(z), computed in float32.

    Args:
        logits: (B, T, V).
        mask: (B, T) float or bool.

    Returns:
        0-d tensor.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    # entr(p) = -p·log p with entr(0) = 0, so a -inf logit (a banned token) adds 0
    # instead of 0 · -inf = NaN.
    entropy = torch.special.entr(probs).sum(dim=-1)
    return masked_mean(entropy, mask)


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce: Reduce | None = None
) -> torch.Tensor:
    """``1 - Var(R - V) / Var(R)`` over real tokens: 1 is a perfect critic, 0 a constant.

    NaN when the returns have zero variance (as in cleanrl), rather than a made-up
    number.

    Args:
        values, returns, mask: (B, T).
        reduce: sums over processes: the variances of the whole batch.

    Returns:
        0-d tensor.
    """
    m = _bool_mask(values, mask, "values")
    var_returns = masked_var(returns, m, unbiased=False, reduce=reduce)
    var_residual = masked_var(returns - values, m, unbiased=False, reduce=reduce)
    if var_returns == 0:
        return torch.full_like(var_returns, math.nan)
    return 1.0 - var_residual / var_returns
