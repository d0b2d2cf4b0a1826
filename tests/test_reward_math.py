"""Reward math against hand-computed numbers: ranking loss, margins, Llama 2's gate."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from reward.combine import llama2_reward, safety_gate
from reward.losses import ranking_loss
from reward.margins import MARGIN_SCHEMES, RATINGS, margin_for

# ------------------------------------------------------------------ ranking_loss


def test_ranking_loss_no_margin_by_hand():
    # -log σ(2 - 0) = log(1 + e^-2) = 0.126928;  -log σ(0) = log 2 = 0.693147
    # mean = (0.126928 + 0.693147) / 2 = 0.410038
    loss = ranking_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx(0.410038, abs=1e-6)


def test_ranking_loss_tensor_margin_by_hand():
    # pair 1: -log σ(2 - 0 - 1) = log(1 + e^-1) = 0.313262;  pair 2: log 2 = 0.693147
    # mean = 0.503204
    loss = ranking_loss(
        torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    )
    assert loss.item() == pytest.approx(0.503204, abs=1e-6)


def test_ranking_loss_float_margin_by_hand():
    # -log σ(2 - 2) = log 2 = 0.693147;  -log σ(0 - 2) = log(1 + e^2) = 2.126928
    # mean = 1.410038
    loss = ranking_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]), 2.0)
    assert loss.item() == pytest.approx(1.410038, abs=1e-6)


def test_ranking_loss_margin_zero_equals_none():
    rc, rr = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.1, 0.4, -0.5])
    assert torch.equal(ranking_loss(rc, rr, 0.0), ranking_loss(rc, rr))


def test_ranking_loss_is_stable_for_confidently_wrong_pairs():
    # -log σ(-200) = 200 + log(1 + e^-200) ≈ 200; log(sigmoid(-200)) would be -inf.
    loss = ranking_loss(torch.tensor([-200.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(200.0, rel=1e-6)


def test_ranking_loss_gradient_by_hand():
    # d/dr_c of -log σ(d) = -(1 - σ(d)) = -σ(-d); with d = 0 and B = 2: -0.5 / 2 = -0.25
    rc = torch.tensor([0.0, 0.0], requires_grad=True)
    ranking_loss(rc, torch.tensor([0.0, 0.0])).backward()
    assert torch.allclose(rc.grad, torch.tensor([-0.25, -0.25]))


def test_ranking_loss_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        ranking_loss(torch.zeros(3), torch.zeros(2))


def _trl_compute_loss(chosen, rejected, margin, center_coef=None):
    """Call TRL 1.16's own RewardTrainer.compute_loss on fixed rewards.

    compute_loss (trl/trainer/reward_trainer.py, ~line 778) only touches self.model,
    self.args.center_rewards_coefficient, self.accelerator.gather(_for_metrics),
    self._metrics and, in train mode, the token counters; a namespace supplies them,
    and a fake model returns the stacked [chosen; rejected] rewards as logits (B*2, 1),
    exactly as TRL's collator stacks the pair.
    """
    reward_trainer = pytest.importorskip("trl.trainer.reward_trainer")
    logits = torch.cat([chosen, rejected]).unsqueeze(-1)

    def model(**inputs):
        return SimpleNamespace(logits=logits)

    model.training = False  # eval mode: skips the token-count bookkeeping
    identity = lambda x: x  # noqa: E731 - single-process gather
    fake_self = SimpleNamespace(
        model=model,
        args=SimpleNamespace(center_rewards_coefficient=center_coef),
        accelerator=SimpleNamespace(gather=identity, gather_for_metrics=identity),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
    )
    inputs = {} if margin is None else {"margin": margin}
    return reward_trainer.RewardTrainer.compute_loss(fake_self, model, inputs)


def test_ranking_loss_matches_trl_reward_trainer():
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(8, generator=g) * 3, torch.randn(8, generator=g) * 3
    margin = torch.tensor([margin_for(r, "large") for r in RATINGS * 2])
    for m in (None, margin):
        ours = ranking_loss(chosen, rejected, m)
        theirs = _trl_compute_loss(chosen, rejected, m)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # TRL's optional centring term is not part of Llama 2's loss; it adds
    # c * mean((r_c + r_r)^2) on top (same file, the center_rewards_coefficient branch).
    theirs = _trl_compute_loss(chosen, rejected, margin, center_coef=0.01)
    ours = ranking_loss(chosen, rejected, margin) + 0.01 * ((chosen + rejected) ** 2).mean()
    torch.testing.assert_close(ours, theirs)


# ---------------------------------------------------------------------- margins

EXPECTED_MARGINS = {
    ("none", "significantly_better"): 0.0,
    ("none", "better"): 0.0,
    ("none", "slightly_better"): 0.0,
    ("none", "negligibly_better"): 0.0,
    ("small", "significantly_better"): 1.0,
    ("small", "better"): 2 / 3,
    ("small", "slightly_better"): 1 / 3,
    ("small", "negligibly_better"): 0.0,
    ("large", "significantly_better"): 3.0,
    ("large", "better"): 2.0,
    ("large", "slightly_better"): 1.0,
    ("large", "negligibly_better"): 0.0,
}


@pytest.mark.parametrize(("scheme", "rating"), sorted(EXPECTED_MARGINS))
def test_margin_for_every_rating_and_scheme(scheme, rating):
    assert margin_for(rating, scheme) == pytest.approx(EXPECTED_MARGINS[scheme, rating], abs=1e-12)


def test_ratings_and_schemes_are_complete_and_ordered():
    assert RATINGS == ("significantly_better", "better", "slightly_better", "negligibly_better")
    assert set(MARGIN_SCHEMES) == {"none", "small", "large"}
    for table in MARGIN_SCHEMES.values():
        assert tuple(table) == RATINGS
        # margins never increase from the strongest rating to the weakest
        values = [table[r] for r in RATINGS]
        assert values == sorted(values, reverse=True)


def test_margin_schemes_are_read_only():
    with pytest.raises(TypeError):
        MARGIN_SCHEMES["small"]["better"] = 5.0  # type: ignore[index]


def test_margin_for_unknown_scheme():
    with pytest.raises(ValueError, match=r"'huge'.*none, small, large"):
        margin_for("better", "huge")


def test_margin_for_unknown_rating():
    with pytest.raises(ValueError, match=r"'much_better'.*significantly_better, better"):
        margin_for("much_better", "small")


# ------------------------------------------------------------------ llama2_reward


def test_llama2_reward_every_branch_of_the_gate():
    safety = torch.tensor([0.90, 0.10, 0.50, 0.15, 0.05])
    helpful = torch.tensor([0.20, 0.80, 0.70, 0.60, 0.30])
    is_safety = torch.tensor([True, False, False, False, True])
    out = llama2_reward(safety, helpful, is_safety)
    expected = torch.tensor(
        [
            0.90,  # safety-tagged prompt: R_s even though R_s is high
            0.10,  # helpfulness prompt, R_s = 0.10 < 0.15: R_s (unsafe answer)
            0.70,  # helpfulness prompt, R_s = 0.50 >= 0.15: R_h
            0.60,  # exactly at 0.15: not < 0.15, so R_h (the rule is strict)
            0.05,  # safety-tagged prompt with low R_s: R_s
        ]
    )
    assert torch.equal(out, expected)
    assert safety_gate(safety, is_safety).tolist() == [True, True, False, False, True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_llama2_reward_threshold_is_strict_in_any_dtype(dtype):
    at = torch.tensor(0.15, dtype=dtype)
    just_below = torch.nextafter(at, torch.tensor(0.0, dtype=dtype))
    safety = torch.stack([at, just_below])
    helpful = torch.tensor([0.9, 0.9], dtype=dtype)
    out = llama2_reward(safety, helpful, torch.tensor([False, False]))
    assert out[0] == helpful[0]  # R_s == 0.15 is not < 0.15: helpfulness
    assert out[1] == just_below  # one ulp below: safety


def test_llama2_reward_custom_threshold():
    out = llama2_reward(
        torch.tensor([0.3]), torch.tensor([0.8]), torch.tensor([False]), threshold=0.5
    )
    assert out.item() == pytest.approx(0.3)


@pytest.mark.parametrize("which", ["safety_prob", "helpful_prob"])
def test_llama2_reward_rejects_nan_naming_the_argument(which):
    args = {"safety_prob": torch.tensor([0.5, 0.5]), "helpful_prob": torch.tensor([0.5, 0.5])}
    args[which] = torch.tensor([0.5, float("nan")])
    with pytest.raises(ValueError, match=which):
        llama2_reward(args["safety_prob"], args["helpful_prob"], torch.tensor([False, True]))


def test_llama2_reward_rejects_raw_logits():
    with pytest.raises(ValueError, match=r"helpful_prob must be probabilities"):
        llama2_reward(torch.tensor([0.5]), torch.tensor([2.3]), torch.tensor([False]))


def test_llama2_reward_rejects_non_bool_is_safety():
    with pytest.raises(ValueError, match="is_safety"):
        llama2_reward(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([1]))
