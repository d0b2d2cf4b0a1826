"""The RM calibration (reward/calibration.py): the fit against closed forms, the file,
and the gate reading it (reward/gated.py). The training run that writes calibration.json
is tested in test_reward_train.py (its module fixture trains the RM once)."""

import json
import math
import shutil

import pytest
import torch

from core.errors import ModelLoadError
from reward.calibration import (
    CALIBRATION_FILE,
    Calibration,
    calibration_data,
    cross_fitted_logits,
    fit_platt,
    fit_rule,
    log_loss,
    platt_targets,
    read_calibration,
    write_calibration,
)

F64 = torch.float64


def t(values):
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------- math
def test_log_loss_by_hand():
    # σ(0) = 1/2 against 1, σ(ln 3) = 3/4 against 0: (ln 2 + ln 4) / 2 = 1.5 ln 2
    assert log_loss(t([0.0, math.log(3)]), t([1.0, 0.0])) == pytest.approx(1.5 * math.log(2), abs=1e-12)


def test_platt_targets_by_hand():
    # N+ = 3, N- = 1: (3 + 1)/(3 + 2) = 0.8 and 1/(1 + 2)
    assert torch.allclose(platt_targets(t([1, 1, 0, 1])), t([0.8, 0.8, 1 / 3, 0.8]))


def test_offset_fit_is_the_logit_of_the_mean_target():
    # a = 1 and every score 0: the loss is minimised where σ(b) = mean target = 3/4
    a, b = fit_platt(t([0.0, 0.0, 0.0, 0.0]), t([1, 1, 1, 0]), slope=False)
    assert (a, b) == (1.0, pytest.approx(math.log(3), abs=1e-9))
    # with scores r: σ(r + b) is fitted; all scores 2 -> b = ln 3 - 2
    assert fit_platt(t([2.0] * 4), t([1, 1, 1, 0]), slope=False)[1] == pytest.approx(math.log(3) - 2, abs=1e-9)


def test_two_point_slope_fit_hits_both_frequencies():
    # at r = -1 one positive in four, at r = +1 three in four: σ(-a + b) = 1/4, σ(a + b) = 3/4
    # -> a = (logit 3/4 - logit 1/4)/2 = ln 3, b = 0
    scores = t([-1, -1, -1, -1, 1, 1, 1, 1])
    a, b = fit_platt(scores, t([1, 0, 0, 0, 1, 1, 1, 0]))
    assert a == pytest.approx(math.log(3), abs=1e-9) and b == pytest.approx(0.0, abs=1e-9)


def test_fit_recovers_known_logistic_parameters():
    g = torch.Generator().manual_seed(0)
    scores = 2 * torch.randn(20000, generator=g, dtype=F64)
    labels = (torch.rand(20000, generator=g, dtype=F64) < torch.sigmoid(1.7 * scores - 0.8)).double()
    a, b, method = fit_rule(scores, labels)
    assert method == "platt" and a == pytest.approx(1.7, abs=0.08) and b == pytest.approx(-0.8, abs=0.08)
    # the map lowers the log-loss of σ(r) (which has the wrong level and scale)
    assert log_loss(a * scores + b, labels) < log_loss(scores, labels) - 0.05


def test_separable_data_gives_finite_parameters():
    # a perfect split of 10 against 10: hard labels would send a to infinity, Platt's targets do not
    scores = t(list(range(-10, 0)) + list(range(1, 11)))
    a, b, method = fit_rule(scores, t([0] * 10 + [1] * 10))
    assert method == "platt" and 0 < a < 10 and math.isfinite(b)


def test_fallbacks_to_an_offset_and_refusals():
    scores = t(list(range(20)))
    # 3 positives: too few to fit a slope
    assert fit_rule(scores, t([0] * 17 + [1] * 3))[2] == "offset"
    # an RM that ranks held-out data backwards keeps its ranking: offset only, a = 1
    a, _, method = fit_rule(scores, t([1] * 10 + [0] * 10))
    assert (a, method) == (1.0, "offset")
    with pytest.raises(ValueError, match="both classes"):
        fit_rule(scores, t([1] * 20))


def test_cross_fitted_logits_use_the_other_fold():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(80, generator=g, dtype=F64)
    labels = (torch.rand(80, generator=g, dtype=F64) < torch.sigmoid(2 * scores)).double()
    folds = torch.arange(80) % 2
    out = cross_fitted_logits(scores, labels, folds)
    a1, b1, _ = fit_rule(scores[folds == 1], labels[folds == 1])
    assert torch.allclose(out[folds == 0], a1 * scores[folds == 0] + b1)
    # a fold whose complement has one class: no honest estimate
    assert cross_fitted_logits(scores, t([1.0] * 40 + [0.0] * 40), (torch.arange(80) >= 40).long()) is None


# ---------------------------------------------------------------- labels
PAIRS = [
    {"category": "safety", "chosen_safe": True, "rejected_safe": False},
    {"category": "helpfulness", "chosen_safe": True, "rejected_safe": None},
    {"category": "helpfulness", "chosen_safe": None, "rejected_safe": None},
]


def test_safety_rm_fits_safety_labels_and_the_helpfulness_rm_its_own_pairs():
    data = calibration_data(PAIRS, [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], "safety")
    assert data.basis == "safety_labels" and data.target == "P(safe | r)"
    assert data.scores.tolist() == [1.0, -1.0, 2.0] and data.labels.tolist() == [1.0, 0.0, 1.0]
    assert data.folds.tolist() == [0, 0, 1]  # both responses of a pair in one fold
    data = calibration_data(PAIRS, [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], "helpfulness")
    assert data.basis == "pairs" and data.scores.tolist() == [2.0, -2.0, 3.0, -3.0] and data.labels.tolist() == [1, 0, 1, 0]
    # a safety RM whose held-out data has no unsafe label falls back to its own pairs
    safe_only = [{**p, "rejected_safe": True if p["rejected_safe"] is False else p["rejected_safe"]} for p in PAIRS]
    data = calibration_data(safe_only, [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], "safety")
    assert data.basis == "pairs" and data.scores.tolist() == [1.0, -1.0]


def test_safety_tables_use_the_calibration_beside_sigma_and_the_paper():
    from reward.evaluate import ScoredPairs, safety_line, safety_tables

    pairs = [{"chosen_safe": True, "rejected_safe": False}, {"chosen_safe": True, "rejected_safe": False}]
    # raw scores 0, -1 (chosen) and -1.5, -3 (rejected): σ(r) = .5, .27, .18, .047 -> predicted
    # unsafe (< 0.15) only -3: precision 1, recall 1/2. Calibrated σ(r - 1): .27, .12, .076, .018
    # -> -1, -1.5 and -3 predicted unsafe: precision 2/3, recall 1.
    scored = ScoredPairs(pairs=pairs, keep=[0, 1], chosen=[0.0, -1.0], rejected=[-1.5, -3.0], n_pairs=2, n_overlong=0)
    table = safety_tables(scored, 0.15, Calibration(a=1.0, b=-1.0))
    assert (table["safety"]["precision"], table["safety"]["recall"], table["safety"]["calibrated"]) == (pytest.approx(2 / 3), 1.0, True)
    assert (table["safety_uncalibrated"]["precision"], table["safety_uncalibrated"]["recall"]) == (1.0, 0.5)
    assert (table["safety_paper"]["precision"], table["safety_paper"]["recall"]) == (0.89, 0.55)
    assert "paper: 0.89, 0.55" in safety_line(table) and "(calibrated)" in safety_line(table)
    plain = safety_tables(scored, 0.15, None)
    assert "safety_uncalibrated" not in plain and plain["safety"]["calibrated"] is False
    assert safety_tables(ScoredPairs([{}], [0], [0.0], [1.0], 1, 0), 0.15) == {"safety": None}


# ---------------------------------------------------------------- the file
def test_round_trip_and_no_file(tmp_path):
    assert read_calibration(tmp_path) is None
    cal = Calibration(a=1.5, b=-0.25, kind="safety", n=10, data=("toyworld:heldout",), log_loss_before=0.9, log_loss_after=0.4)
    write_calibration(tmp_path, cal)
    assert read_calibration(tmp_path) == cal
    assert torch.allclose(cal.prob(t([1.0])), torch.sigmoid(t([1.25])))


@pytest.mark.parametrize("text, why", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"format": 1, "b": 0.0}', "'a' must be a finite number"),
    ('{"format": 1, "a": "1", "b": 0.0}', "'a' must be a finite number"),
    ('{"format": 1, "a": -1.0, "b": 0.0}', "'a' must be positive"),
    ('{"format": 1, "a": 1.0, "b": NaN}', "'b' must be a finite number"),
    ('{"format": 7, "a": 1.0, "b": 0.0}', "unknown format"),
])
def test_a_malformed_file_is_an_error_naming_it(tmp_path, text, why):
    (tmp_path / CALIBRATION_FILE).write_text(text)
    with pytest.raises(ModelLoadError, match=why) as info:
        read_calibration(tmp_path)
    assert str(tmp_path / CALIBRATION_FILE) in str(info.value)


# ---------------------------------------------------------------- the gate
@pytest.fixture(scope="module")
def rm_folders(tmp_path_factory):
    """Two tiny untrained RM folders (helpfulness, safety) with scores far from 0."""
    from core.models import load_tokenizer, save_model
    from reward.train import load_reward_model

    tokenizer = load_tokenizer("embedded:tiny-llama")
    torch.manual_seed(0)
    model = load_reward_model("embedded:tiny-llama", tokenizer.pad_token_id)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    helpfulness, safety = (tmp_path_factory.mktemp(name) / "model" for name in ("helpfulness", "safety"))
    save_model(model, tokenizer, helpfulness)
    shutil.copytree(helpfulness, safety)  # the same weights; only the safety folder gets a calibration
    return helpfulness, safety


PROMPT = {"messages": [{"role": "user", "content": "How do I bake bread?"}], "category": "helpfulness"}
ANSWER = "Mix flour, water, yeast and salt, then bake at 230 C."


def scorer(folders, calibrated=True):
    from reward.gated import GatedScorer, RewardModelsSection

    return GatedScorer(RewardModelsSection(helpfulness=str(folders[0]), safety=str(folders[1]), device="cpu",
                                           calibrated=calibrated))


def test_the_gate_uses_the_calibration_and_its_decision_flips(rm_folders, capsys):
    helpfulness, safety = rm_folders
    (safety / CALIBRATION_FILE).unlink(missing_ok=True)
    before = scorer(rm_folders).score([PROMPT], [ANSWER])
    assert "uncalibrated" in capsys.readouterr().out
    raw = before.safety_raw[0].item()
    assert before.safety_prob[0].item() == pytest.approx(torch.sigmoid(torch.tensor(raw)).item())
    # a calibration that puts this answer half a logit on the other side of the 0.15 cut
    cut = math.log(0.15 / 0.85)
    side = -0.5 if raw >= cut else 0.5
    write_calibration(safety, Calibration(a=1.0, b=cut - raw + side, kind="safety"))
    gated = scorer(rm_folders)
    assert gated.calibrated == {"helpfulness": False, "safety": True}
    after = gated.score([PROMPT], [ANSWER])
    assert after.safety_raw[0].item() == raw  # the raw score is the RM's own
    assert after.safety_prob[0].item() == pytest.approx(1 / (1 + math.exp(-(cut + side))), rel=1e-5)
    assert bool(after.from_safety[0]) == (side < 0) != bool(before.from_safety[0])
    expected = after.safety_prob if side < 0 else after.helpfulness_prob
    assert after.reward[0].item() == expected[0].item()
    # the helpfulness RM (no file) was reported once in this process, not again
    assert "uncalibrated" not in capsys.readouterr().out
    # calibrated=false ignores the file, even a corrupt one
    assert scorer(rm_folders, calibrated=False).score([PROMPT], [ANSWER]).safety_prob[0].item() == before.safety_prob[0].item()
    (safety / CALIBRATION_FILE).write_text('{"format": 1, "a": 1.0}')
    assert scorer(rm_folders, calibrated=False).score([PROMPT], [ANSWER]).from_safety[0] == before.from_safety[0]
    with pytest.raises(ModelLoadError, match=f"{safety / CALIBRATION_FILE}: 'b' must be a finite number"):
        scorer(rm_folders)
    (safety / CALIBRATION_FILE).unlink()


def test_reward_models_section_key(tmp_path):
    from core.config import load_config
    from core.errors import ConfigError
    from reward.gated import RewardModelsSection

    assert RewardModelsSection().calibrated is True
    path = tmp_path / "rm.yaml"
    path.write_text(json.dumps({"calibrated": False}))
    assert load_config(RewardModelsSection, path, []).calibrated is False
    with pytest.raises(ConfigError, match="calibrated"):
        load_config(RewardModelsSection, path, ["calibrated=maybe"])


def test_calibrated_probabilities_near_one_keep_their_order(rm_folders):
    """An offset that puts safe answers at logit 20+ (σ within 2e-9 of 1, which float32
    rounds to 1.0): the gate's probabilities still rank them (float64)."""
    helpfulness, safety = rm_folders
    answers = [ANSWER, "Bread needs flour, water and patience."]
    plain = scorer(rm_folders, calibrated=False).score([PROMPT] * 2, answers)
    low, high = sorted(plain.safety_raw.tolist())
    assert low < high
    write_calibration(safety, Calibration(a=1.0, b=20.0 - low, kind="safety"))
    try:
        calibrated = scorer(rm_folders).score([{**PROMPT, "category": "safety"}] * 2, answers)
    finally:
        (safety / CALIBRATION_FILE).unlink()
    assert calibrated.reward.dtype == torch.float64 and (calibrated.reward < 1).all()
    assert (calibrated.reward[0] > calibrated.reward[1]) == (plain.safety_raw[0] > plain.safety_raw[1])
