"""ppo.core against hand-computed numbers (the arithmetic is in the comments)."""

import math

import pytest
import torch

from ppo.core import (
    RunningMoments,
    adaptive_kl_beta,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty,
    last_token_index,
    logit,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    missing_eos_scores,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)

INF = float("inf")


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        rtol=0,
        atol=atol,
    )


# ----------------------------------------------------------------------- logit


def test_logit_by_hand():
    # logit(0.5) = log(1) = 0;  logit(σ(2)) = 2 with σ(2) = 1 / (1 + e^-2) = 0.8807971
    close(logit(torch.tensor([0.5, 0.8807971])), [0.0, 2.0])


def test_logit_clamps_saturated_probabilities():
    # p = 0 -> clamp to 1e-6: log(1e-6) - log(1 - 1e-6) = -13.815511 + 0.000001 = -13.815510
    out = logit(torch.tensor([0.0, 1.0], dtype=torch.float64))
    close(out, [-13.8155096, 13.8155096])
    assert torch.isfinite(logit(torch.tensor([0.0, 1.0], dtype=torch.bfloat16))).all()


def test_logit_inverts_sigmoid():
    x = torch.linspace(-6, 6, 13, dtype=torch.float64)
    close(logit(torch.sigmoid(x)), x, atol=1e-9)


# ------------------------------------------------------------ missing-EOS penalty


def test_missing_eos_penalty_subtract_and_replace_by_hand():
    scores = torch.tensor([1.5, -0.5, 0.25])
    finished = torch.tensor([True, False, False])
    # subtract 1.0 on the two truncated rows: -0.5 - 1 = -1.5, 0.25 - 1 = -0.75
    close(missing_eos_scores(scores, finished, 1.0, "subtract"), [1.5, -1.5, -0.75])
    # replace: the truncated rows get -penalty = -2
    close(missing_eos_scores(scores, finished, 2.0, "replace"), [1.5, -2.0, -2.0])
    # None: no penalty
    close(missing_eos_scores(scores, finished, None), [1.5, -0.5, 0.25])
    with pytest.raises(ValueError, match="mode"):
        missing_eos_scores(scores, finished, 1.0, "add")
    with pytest.raises(ValueError, match="shape"):
        missing_eos_scores(scores, finished[:2], 1.0)


# ------------------------------------------------------------ adaptive KL


def test_adaptive_kl_beta_by_hand():
    # KL 6 against target 5: e = 6/5 - 1 = 0.2; β = 0.1 · (1 + 0.2 · 512 / 1024) = 0.1 · 1.1 = 0.11
    assert adaptive_kl_beta(0.1, 6.0, 5.0, 1024, 512) == pytest.approx(0.11)
    # KL 4.5: e = -0.1; β = 0.1 · (1 - 0.1 · 0.5) = 0.095
    assert adaptive_kl_beta(0.1, 4.5, 5.0, 1024, 512) == pytest.approx(0.095)
    # KL 50: e clipped to 0.2 -> same as KL 6; KL 0: e clipped to -0.2 -> 0.1 · 0.9 = 0.09
    assert adaptive_kl_beta(0.1, 50.0, 5.0, 1024, 512) == pytest.approx(0.11)
    assert adaptive_kl_beta(0.1, 0.0, 5.0, 1024, 512) == pytest.approx(0.09)
    # on target: unchanged
    assert adaptive_kl_beta(0.1, 5.0, 5.0, 1024, 512) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        adaptive_kl_beta(0.1, 1.0, 0.0, 1024, 512)


# ------------------------------------------------------------ masked statistics

# Real entries are 1, 2, 4 (the inf and the 3, 5, 6 are masked out).
X = torch.tensor([[1.0, 2.0, INF], [4.0, 5.0, 6.0]])
M = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_masked_mean_by_hand():
    close(masked_mean(X, M), 7 / 3)  # (1 + 2 + 4) / 3, inf ignored
    close(masked_mean(X, M.bool()), 7 / 3)  # bool masks work the same
    close(masked_mean(X, M, dim=1), [1.5, 4.0])  # (1 + 2) / 2, 4 / 1


def test_masked_mean_empty():
    with pytest.raises(ValueError, match="no real entries"):
        masked_mean(X, torch.zeros_like(M))
    # a row with no real entry gets 0 per row
    close(masked_mean(X, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), dim=1), [1.0, 0.0])


def test_masked_mean_shape_mismatch():
    with pytest.raises(ValueError, match="mask shape"):
        masked_mean(X, M[:, :2])


def test_masked_var_by_hand():
    # mean 7/3; deviations -4/3, -1/3, 5/3; squares 16/9 + 1/9 + 25/9 = 42/9
    # biased: 42/9 / 3 = 14/9;  unbiased: 42/9 / 2 = 7/3
    close(masked_var(X, M, unbiased=False), 14 / 9)
    close(masked_var(X, M), 7 / 3)
    close(masked_var(X, M), torch.var(torch.tensor([1.0, 2.0, 4.0])))


def test_masked_var_needs_two_entries_when_unbiased():
    one = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="one real entry"):
        masked_var(X, one)
    close(masked_var(X, one, unbiased=False), 0.0)


def test_masked_whiten_by_hand():
    # (x - 7/3) / sqrt(7/3), sqrt(7/3) = 1.5275252:
    #   1 -> -4/3 / 1.5275252 = -0.8728716;  2 -> -0.2182179;  4 -> 1.0910895
    out = masked_whiten(X, M)
    close(out, [[-0.8728716, -0.2182179, 0.0], [1.0910895, 0.0, 0.0]])
    # shift_mean=False adds the mean 7/3 = 2.3333333 back, on real entries only
    out = masked_whiten(X, M, shift_mean=False)
    close(out, [[1.4604617, 2.1151154, 0.0], [3.4244229, 0.0, 0.0]])


def test_masked_whiten_ignores_masked_entries():
    other = X.clone()
    other[0, 2], other[1, 1], other[1, 2] = -1e6, float("nan"), 123.0
    torch.testing.assert_close(masked_whiten(other, M), masked_whiten(X, M))
    # ... and equals whitening the real entries alone
    real = torch.tensor([1.0, 2.0, 4.0])
    close(masked_whiten(X, M)[M.bool()], (real - real.mean()) / real.std())


def test_whiten_1d_by_hand():
    # [1, 2, 3, 4]: mean 2.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3,
    # std 1.2909944 -> [-1.5, -0.5, 0.5, 1.5] / 1.2909944
    close(
        whiten(torch.tensor([1.0, 2.0, 3.0, 4.0])), [-1.1618950, -0.3872983, 0.3872983, 1.1618950]
    )
    close(
        whiten(torch.tensor([1.0, 2.0, 3.0, 4.0]), shift_mean=False),
        [1.3381050, 2.1127017, 2.8872983, 3.6618950],
    )
    with pytest.raises(ValueError, match="at least 2"):
        whiten(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="1-D"):
        whiten(torch.ones(2, 2))


# -------------------------------------------------------------- RunningMoments


def test_running_moments_by_hand():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 2.0]))
    rm.update(torch.tensor([4.0]))
    # all data [1, 2, 4]: mean 7/3, unbiased var 7/3 (as in test_masked_var_by_hand)
    assert rm.count == 3
    assert rm.mean == pytest.approx(7 / 3)
    assert rm.var == pytest.approx(7 / 3)
    assert rm.std == pytest.approx(math.sqrt(7 / 3))
    # whiten with the running statistics: (4 - 7/3) / sqrt(7/3) = 1.0910895
    close(rm.whiten(torch.tensor([4.0])), [1.0910895])
    close(rm.whiten(torch.tensor([4.0]), shift_mean=False), [1.0910895 + 7 / 3])


def test_running_moments_match_torch_var_of_concatenated_data():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=g) * 3 + 5 for n in (1, 7, 64, 3)]
    batches.append(torch.randn(2, 5, generator=g))  # any shape: all elements count
    rm = RunningMoments()
    for b in batches:
        rm.update(b)
    data = torch.cat([b.flatten() for b in batches]).double()
    assert rm.count == data.numel()
    assert rm.mean == pytest.approx(data.mean().item(), abs=1e-12)
    assert rm.var == pytest.approx(torch.var(data).item(), abs=1e-12)


def test_running_moments_checkpoint_roundtrip():
    a = RunningMoments()
    a.update(torch.tensor([0.5, -1.0, 3.0]))
    b = RunningMoments()
    b.load_state_dict(a.state_dict())
    for rm in (a, b):
        rm.update(torch.tensor([2.0, 2.5]))
    assert a.state_dict() == b.state_dict()


def test_running_moments_before_data():
    rm = RunningMoments()
    assert math.isnan(rm.var)
    with pytest.raises(ValueError, match="at least 2"):
        rm.whiten(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        rm.update(torch.tensor([float("nan")]))


# ----------------------------------------------------------- kl and rewards

LOGP = torch.tensor([[-1.0, -2.0]])
REF = torch.tensor([[-1.5, -1.0]])  # d = logp - ref = [0.5, -1.0]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("k1", [0.5, -1.0]),
        ("kl", [0.5, -1.0]),
        ("abs", [0.5, 1.0]),
        ("mse", [0.125, 0.5]),  # 0.5 * 0.25, 0.5 * 1
        ("k2", [0.125, 0.5]),
        # (e^-0.5 - 1) + 0.5 = 0.6065307 - 0.5 = 0.1065307;  (e^1 - 1) - 1 = 0.7182818
        ("k3", [0.1065307, 0.7182818]),
    ],
)
def test_kl_penalty_kinds_by_hand(kind, expected):
    close(kl_penalty(LOGP, REF, kind), [expected])


def test_kl_penalty_unknown_kind():
    with pytest.raises(ValueError, match=r"'full'.*k1, abs, mse, k3"):
        kl_penalty(LOGP, REF, "full")


def test_last_token_index():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 1, 2, 3]
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_per_token_rewards_ragged_by_hand():
    ref = torch.full((2, 4), -1.0)
    d = torch.tensor([[0.2, -0.4, 1.0, 9.0], [0.5, 0.5, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    score = torch.tensor([1.0, -2.0])
    rewards, kl = per_token_rewards(score, ref + d, ref, mask, beta=0.1)
    close(kl, [[0.2, -0.4, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # row 0: -0.1 * [0.2, -0.4, 1.0] = [-0.02, 0.04, -0.1], score 1 at t=2 -> 0.9
    # row 1: -0.1 * [0.5, 0.5] = [-0.05, -0.05], score -2 at t=1 -> -2.05
    close(rewards, [[-0.02, 0.04, 0.9, 0.0], [-0.05, -2.05, 0.0, 0.0]])


def test_per_token_rewards_leading_zeros_and_k3():
    # prompt position 0 masked, response at 1..2, padding at 3
    ref = torch.zeros(1, 4)
    logp = torch.tensor([[5.0, 0.5, -1.0, 5.0]])  # d = [-, 0.5, -1.0, -]
    mask = torch.tensor([[False, True, True, False]])
    rewards, kl = per_token_rewards(torch.tensor([3.0]), logp, ref, mask, beta=1.0, kind="k3")
    # k3: 0.1065307 and 0.7182818 (test_kl_penalty_kinds_by_hand); score 3 at t=2
    close(kl, [[0.0, 0.1065307, 0.7182818, 0.0]])
    close(rewards, [[0.0, -0.1065307, 3.0 - 0.7182818, 0.0]])


def test_per_token_rewards_shape_checks():
    with pytest.raises(ValueError, match="score"):
        per_token_rewards(
            torch.zeros(3), torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), 0.1
        )


# ------------------------------------------------------------------------- gae


def test_gae_1x3_by_hand():
    # gamma = 1, lam = 0.5, r = [0, 0, 1], V = [0.5, 0.2, 0.4], V after the end = 0
    # t=2: δ = 1 + 1*0   - 0.4 = 0.6;   A2 = 0.6
    # t=1: δ = 0 + 1*0.4 - 0.2 = 0.2;   A1 = 0.2 + 0.5*0.6 = 0.5
    # t=0: δ = 0 + 1*0.2 - 0.5 = -0.3;  A0 = -0.3 + 0.5*0.5 = -0.05
    # returns = A + V = [0.45, 0.7, 1.0]
    adv, ret = gae(
        torch.tensor([[0.0, 0.0, 1.0]]),
        torch.tensor([[0.5, 0.2, 0.4]]),
        torch.ones(1, 3),
        gamma=1.0,
        lam=0.5,
    )
    close(adv, [[-0.05, 0.5, 0.6]])
    close(ret, [[0.45, 0.7, 1.0]])


def test_gae_discounted_by_hand():
    # gamma = 0.9, lam = 0.95, r = [0, 1], V = [0.3, 0.6]
    # t=1: δ = 1 - 0.6 = 0.4;  A1 = 0.4
    # t=0: δ = 0 + 0.9*0.6 - 0.3 = 0.24;  A0 = 0.24 + 0.9*0.95*0.4 = 0.24 + 0.342 = 0.582
    adv, ret = gae(
        torch.tensor([[0.0, 1.0]]),
        torch.tensor([[0.3, 0.6]]),
        torch.ones(1, 2),
        gamma=0.9,
        lam=0.95,
    )
    close(adv, [[0.582, 0.4]])
    close(ret, [[0.882, 1.0]])


def test_gae_ragged_rows_by_hand():
    # row 1 ends at t=1; its t=2 holds garbage that must not leak in.
    # t=1: next value is past the end -> 0; δ = 2 + 0 - 0.5 = 1.5; A1 = 1.5
    # t=0: δ = 0 + 0.5 - 1.0 = -0.5;  A0 = -0.5 + 0.5*1.5 = 0.25
    # returns = [0.25 + 1.0, 1.5 + 0.5, 0] = [1.25, 2.0, 0]
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 99.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.5, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    close(adv, [[-0.05, 0.5, 0.6], [0.25, 1.5, 0.0]])
    close(ret, [[0.45, 0.7, 1.0], [1.25, 2.0, 0.0]])


def test_gae_leading_masked_prompt_positions():
    # same numbers as the 1x3 case shifted right by one masked prompt position,
    # minus the first step: t=2: A = 0.6; t=1: δ = 0.4 - 0.2 = 0.2, A = 0.5; t=0 masked
    adv, ret = gae(
        torch.tensor([[5.0, 0.0, 1.0]]),
        torch.tensor([[7.0, 0.2, 0.4]]),
        torch.tensor([[0.0, 1.0, 1.0]]),
        gamma=1.0,
        lam=0.5,
    )
    close(adv, [[0.0, 0.5, 0.6]])
    close(ret, [[0.0, 0.7, 1.0]])


def test_gae_lambda_one_gives_monte_carlo_returns():
    # gamma = lam = 1: returns are the reward-to-go, whatever the values
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    _, ret = gae(rewards, torch.randn(1, 4), torch.ones(1, 4), gamma=1.0, lam=1.0)
    close(ret, [[1.2, 1.1, 1.3, 1.0]])


def test_gae_rejects_holes():
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        gae(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[1, 0, 1]]), 1.0, 0.95)


# ----------------------------------------------------------------- policy loss


def _ratios_to_logprobs(ratios):
    old = torch.full_like(ratios, -1.0)
    return old + torch.log(ratios), old


def test_policy_loss_inside_and_outside_the_clip_range():
    # clip 0.2, per token  (-A ρ, -A clip(ρ, 0.8, 1.2)) -> max:
    #   a: A=+1, ρ=1.1 (inside)           (-1.1, -1.1) -> -1.1
    #   b: A=+1, ρ=1.5 (above, clipped)   (-1.5, -1.2) -> -1.2  clipped
    #   c: A=-1, ρ=0.5 (below, clipped)   ( 0.5,  0.8) ->  0.8  clipped
    #   d: A=-2, ρ=1.1 (inside)           ( 2.2,  2.2) ->  2.2
    #   e: A=+1, ρ=0.5 (below, not clipped: the pessimistic term is unclipped)
    #                                     (-0.5, -0.8) -> -0.5
    #   f: A=-1, ρ=1.5 (above, not clipped) (1.5,  1.2) ->  1.5
    # loss = (-1.1 - 1.2 + 0.8 + 2.2 - 0.5 + 1.5) / 6 = 1.7 / 6 = 0.2833333
    ratios = torch.tensor([[1.1, 1.5, 0.5, 1.1], [0.5, 1.5, 1.0, 1.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -2.0], [1.0, -1.0, float("nan"), 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    logp, old = _ratios_to_logprobs(ratios)
    logp = logp.clone()
    logp[1, 2:] = -INF  # padding may hold -inf (and adv NaN); neither may poison loss or grad
    logp.requires_grad_(True)
    loss, stats = policy_loss(logp, old, adv, mask, clip=0.2)
    close(loss, 1.7 / 6)
    close(stats["clipfrac"], 2 / 6)  # b and c
    close(stats["ratio_mean"], (1.1 + 1.5 + 0.5 + 1.1 + 0.5 + 1.5) / 6)  # 6.2 / 6
    # approx_kl = 0.5 * mean(log ρ)^2: ln 1.1 = 0.0953102, ln 1.5 = 0.4054651,
    # ln 0.5 = -0.6931472; squares 0.0090840, 0.1644020, 0.4804530 each twice
    # -> mean 0.2179797, half 0.1089898
    close(stats["approx_kl"], 0.1089898)
    # k3 = (ρ - 1) - ln ρ: 0.0046898, 0.0945349, 0.1931472 each twice -> mean 0.0974573
    close(stats["approx_kl_k3"], 0.0974573)
    loss.backward()
    # d loss / d logp = -A ρ / 6 where the unclipped term is chosen, 0 where clipped
    expected_grad = torch.tensor([[-1.1, 0.0, 0.0, 2.2], [-0.5, 1.5, 0.0, 0.0]]) / 6
    close(logp.grad, expected_grad)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    loss, stats = policy_loss(logp, logp, torch.tensor([[1.0, -3.0, 0.5]]), torch.ones(1, 3))
    close(loss, -(1.0 - 3.0 + 0.5) / 3)  # 0.5
    close(stats["clipfrac"], 0.0)
    close(stats["approx_kl"], 0.0)
    close(stats["ratio_mean"], 1.0)


# ------------------------------------------------------------------ value loss


def test_value_loss_inside_and_outside_the_clip_range():
    # clip 0.2, v_clip = old + clamp(v - old, -0.2, 0.2); per token ((v-R)^2, (v_clip-R)^2):
    #   a: old 0, v 0.1, R 1 -> v_clip 0.1 (inside)  (0.81, 0.81) -> 0.81
    #   b: old 0, v 0.5, R 1 -> v_clip 0.2           (0.25, 0.64) -> 0.64 clipped
    #   c: old 0, v 0.5, R 0 -> v_clip 0.2           (0.25, 0.04) -> 0.25
    #   d: old 1, v 0.6, R 0 -> v_clip 0.8           (0.36, 0.64) -> 0.64 clipped
    # loss = 0.5 * (0.81 + 0.64 + 0.25 + 0.64) / 4 = 0.5 * 0.585 = 0.2925
    values = torch.tensor([[0.1, 0.5, 0.5, 0.6, float("nan")]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, stats = value_loss(values, old, returns, mask, clip=0.2)
    close(loss, 0.2925)
    close(stats["vf_clipfrac"], 0.5)
    loss.backward()
    # gradient 0.5 * 2 (v - R) / 4 on unclipped tokens a, c; 0 on clipped b, d and padding
    close(values.grad, [[(0.1 - 1.0) / 4, 0.0, 0.5 / 4, 0.0, 0.0]])
    # clip=None: 0.5 * (0.81 + 0.25 + 0.25 + 0.36) / 4 = 0.5 * 1.67 / 4 = 0.20875
    loss, stats = value_loss(values, old, returns, mask, clip=None)
    close(loss, 0.20875)
    close(stats["vf_clipfrac"], 0.0)


# ----------------------------------------------------------------- diagnostics


def test_logprobs_from_logits_by_hand():
    # logits [0, 0, ln 2] -> probs [1/4, 1/4, 1/2]
    logits = torch.tensor([[[0.0, 0.0, math.log(2)], [0.0, 0.0, math.log(2)]]])
    out = logprobs_from_logits(logits, torch.tensor([[2, 0]]))
    close(out, [[math.log(0.5), math.log(0.25)]])  # -0.6931472, -1.3862944
    assert logprobs_from_logits(logits.bfloat16(), torch.tensor([[2, 0]])).dtype == torch.float32


def test_logprobs_from_logits_matches_log_softmax():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g) * 4
    labels = torch.randint(0, 11, (2, 5), generator=g)
    expected = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    close(logprobs_from_logits(logits, labels), expected)


def test_entropy_from_logits_by_hand():
    # t=0 uniform over 3: ln 3 = 1.0986123
    # t=1 probs [1/4, 1/4, 1/2]: 2 * 0.25 * ln 4 + 0.5 * ln 2 = 0.6931472 + 0.3465736 = 1.0397208
    # t=2 masked (would be ~0); t=3 has a -inf logit (a banned token), masked too
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2)], [100.0, 0.0, 0.0], [-INF, 0.0, 0.0]]]
    )
    close(entropy_from_logits(logits, torch.tensor([[1, 1, 0, 0]])), (1.0986123 + 1.0397208) / 2)
    # -inf logit contributes 0, not NaN: uniform over 2 = ln 2
    close(entropy_from_logits(logits, torch.tensor([[0, 0, 0, 1]])), math.log(2))


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    close(explained_variance(returns, returns, mask), 1.0)  # perfect critic
    close(explained_variance(torch.full_like(returns, 2.5), returns, mask), 0.0)  # constant
    # V = [0, 2, 3, 4]: residual [1, 0, 0, 0], var 0.75/4 = 0.1875; var R = 1.25
    # EV = 1 - 0.1875 / 1.25 = 0.85
    values = torch.tensor([[0.0, 2.0, 3.0, 4.0, -7.0]])
    close(explained_variance(values, returns, mask), 0.85)
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask).item())


# ------------------------------------------------ statistics over several processes


def two_identical_processes(t: torch.Tensor) -> torch.Tensor:
    """The `reduce` of a launch whose two processes hold the same share: the sum is twice."""
    return 2 * t


def test_whole_batch_statistics_with_a_reduce_are_those_of_all_shares():
    # Two processes each holding X (with mask M) are one batch of [X; X]: same mean,
    # but the unbiased variance divides by 2n - 1 = 5, not n - 1 = 2.
    x = torch.tensor([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    both_x, both_m = torch.cat([x, x]), torch.cat([m, m])
    close(masked_mean(x, m, reduce=two_identical_processes), 7 / 3)
    # deviations from 7/3: -4/3, -1/3, 5/3 -> squares 16/9 + 1/9 + 25/9 = 42/9, twice = 84/9
    close(masked_var(x, m, reduce=two_identical_processes), (84 / 9) / 5)
    close(masked_var(x, m, unbiased=False, reduce=two_identical_processes), (84 / 9) / 6)
    torch.testing.assert_close(masked_whiten(x, m, reduce=two_identical_processes), masked_whiten(both_x, both_m)[:2])
    values = torch.tensor([[0.5, 1.0, 9.0], [3.0, 9.0, 9.0]])
    close(explained_variance(values, x, m, reduce=two_identical_processes),
          float(explained_variance(torch.cat([values, values]), both_x, both_m)))
    # Without a reduce the share is the whole batch: n - 1 = 2.
    close(masked_var(x, m), (42 / 9) / 2)


def on_two_processes(fn, share_0: tuple, share_1: tuple) -> list:
    """Run `fn(*share, reduce=...)` for two processes holding different shares, each in a
    thread whose `reduce` is a real all-reduce with the other (both deposit, wait, sum),
    as accelerate's reduce is in a launch. Returns both processes' results."""
    import threading

    barrier, deposited, results, errors = threading.Barrier(2, timeout=30), [None, None], [None, None], []

    def process(rank: int, share: tuple) -> None:
        def reduce(t: torch.Tensor) -> torch.Tensor:
            deposited[rank] = t.clone()
            barrier.wait()
            total = deposited[0] + deposited[1]
            barrier.wait()  # nobody deposits the next sum before both have read this one
            return total

        try:
            results[rank] = fn(*share, reduce=reduce)
        except BaseException as exc:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(exc)
            barrier.abort()  # the other process stops waiting instead of hanging

    threads = [threading.Thread(target=process, args=(rank, share), daemon=True) for rank, share in enumerate((share_0, share_1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_statistics_over_two_unequal_shares_are_those_of_the_whole_batch():
    # Process 0 holds 3 real entries in 2 rows, process 1 holds 5 in 1 row: the batch
    # statistics must weigh entries, not processes (the mean of the two means is wrong).
    x0 = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0, 0.0]])
    m0 = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    x1 = torch.tensor([[10.0, -3.0, 6.0, 0.5, 2.0]])
    m1 = torch.ones(1, 5)
    whole_x, whole_m = torch.cat([x0, x1]), torch.cat([m0, m1])
    # all 8 entries: 1 2 4 10 -3 6 0.5 2 -> sum 22.5, mean 2.8125 (the two means are 7/3 and 3.1)
    for rank_result in on_two_processes(masked_mean, (x0, m0), (x1, m1)):
        close(rank_result, 22.5 / 8)
    for rank_result in on_two_processes(masked_var, (x0, m0), (x1, m1)):
        close(rank_result, float(masked_var(whole_x, whole_m)))
    white_0, white_1 = on_two_processes(masked_whiten, (x0, m0), (x1, m1))
    whole_white = masked_whiten(whole_x, whole_m)
    torch.testing.assert_close(white_0 * m0, whole_white[:2] * m0)
    torch.testing.assert_close(white_1 * m1, whole_white[2:] * m1)
    v0, v1 = torch.tensor([[0.5, 1.0, 9.0, 9.0, 9.0], [3.0, 9.0, 9.0, 9.0, 9.0]]), torch.tensor([[8.0, -1.0, 5.0, 1.0, 1.0]])
    for rank_result in on_two_processes(explained_variance, (v0, x0, m0), (v1, x1, m1)):
        close(rank_result, float(explained_variance(torch.cat([v0, v1]), whole_x, whole_m)))


def test_stderr_from_sums_by_hand():
    from ppo.train import stderr_from_sums

    # x = 1, 2, 6: mean 3, sample variance ((-2)² + (-1)² + 3²) / 2 = 7, SE = sqrt(7 / 3)
    close(stderr_from_sums(9.0, 41.0, 3), math.sqrt(7 / 3))
    assert stderr_from_sums(5.0, 25.0, 1) == 0.0
