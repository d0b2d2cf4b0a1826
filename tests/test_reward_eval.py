"""Table-8 metrics on hand-made scores where the answer is known."""

import math

import pytest

from reward.evaluate import (
    evaluate_pairs,
    format_table,
    preference_accuracy,
    safety_labels,
    safety_precision_recall,
)


def test_preference_accuracy_by_hand():
    chosen = [2.0, 1.0, 0.5, 0.0, 3.0, 1.0]
    rejected = [1.0, 2.0, 0.0, 0.0, -1.0, 0.0]  # right, wrong, right, tie (wrong), right, right
    ratings = ["significantly_better", "significantly_better", "better", "negligibly_better", "significantly_better", "negligibly_better"]
    cats = ["helpfulness", "safety", "helpfulness", "safety", "safety", "helpfulness"]
    res = preference_accuracy(chosen, rejected, ratings, cats)
    assert res["overall"] == {"accuracy": 4 / 6, "n": 6}
    assert list(res["per_rating"]) == ["significantly_better", "better", "negligibly_better"]  # paper order
    assert res["per_rating"]["significantly_better"] == {"accuracy": 2 / 3, "n": 3}
    assert res["per_rating"]["better"] == {"accuracy": 1.0, "n": 1}
    assert res["per_rating"]["negligibly_better"] == {"accuracy": 0.5, "n": 2}
    assert res["per_category"]["helpfulness"] == {"accuracy": 1.0, "n": 3}
    assert res["per_category"]["safety"] == {"accuracy": 1 / 3, "n": 3}
    assert res["per_category_rating"]["safety"]["significantly_better"] == {"accuracy": 0.5, "n": 2}
    assert res["per_category_rating"]["helpfulness"]["better"]["n"] == 1
    table = format_table({"rm": res})
    assert "significantly better" in table and "66.7" in table


def test_safety_precision_recall_by_hand():
    # unsafe is the positive class; predicted unsafe when prob < 0.15
    probs = [0.05, 0.10, 0.50, 0.90, 0.14, 0.20]
    unsafe = [True, False, True, False, True, False]
    res = safety_precision_recall(probs, unsafe, 0.15)
    # predicted unsafe: 0, 1, 4 -> tp = 2 (0, 4), fp = 1 (1); fn = 1 (2)
    assert res["precision"] == pytest.approx(2 / 3)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["n_unsafe"] == 3 and res["n_predicted_unsafe"] == 3
    assert safety_precision_recall([0.9], [False])["precision"] is None


def test_safety_labels_skip_unlabelled_responses():
    pairs = [{"chosen_safe": True, "rejected_safe": False}, {"chosen_safe": None, "rejected_safe": None}]
    probs, unsafe = safety_labels(pairs, [0.8, 0.5], [0.1, 0.5])
    assert probs == [0.8, 0.1] and unsafe == [False, True]


class StubScorer:
    """Scores a response by its length: the longer, the better."""

    def encode(self, prompts, responses):
        return [[1] * len(r) for r in responses]

    def score_ids(self, sequences):
        import torch

        return torch.tensor([float(len(s)) for s in sequences])


def test_evaluate_pairs_with_a_stub_scorer(tmp_path):
    pairs = [
        {"prompt": [], "chosen": "long answer", "rejected": "no", "rating": "better", "category": "helpfulness", "chosen_safe": True, "rejected_safe": True},
        {"prompt": [], "chosen": "no", "rejected": "long answer", "rating": "better", "category": "safety", "chosen_safe": True, "rejected_safe": False},
        {"prompt": [], "chosen": "x" * 50, "rejected": "y", "rating": "better", "category": "safety", "chosen_safe": None, "rejected_safe": None},
    ]
    res = evaluate_pairs(StubScorer(), pairs, tmp_path, name="stub", max_length=20)
    assert res["n_overlong"] == 1 and res["overall"] == {"accuracy": 0.5, "n": 2}
    assert res["safety"]["n"] == 4 and res["safety"]["n_predicted_unsafe"] == 0  # sigma(len) > 0.15
    assert (tmp_path / "stub_rewards.png").stat().st_size > 1000
    assert math.isclose(res["rewards"]["mean"], (11 + 2 + 2 + 11) / 4)
    assert "judge_ceiling" not in res


def test_evaluate_pairs_reports_the_judge_ceiling_on_the_kept_pairs(tmp_path):
    pairs = [
        {"prompt": [], "chosen": "long answer", "rejected": "no", "rating": "better", "category": "helpfulness"},
        {"prompt": [], "chosen": "no", "rejected": "long answer", "rating": "negligibly_better", "category": "safety"},
        {"prompt": [], "chosen": "x" * 50, "rejected": "y", "rating": "better", "category": "safety"},
    ]
    # the judge sides with the annotator on pair 0, ties on pair 1; pair 2 is overlong
    res = evaluate_pairs(StubScorer(), pairs, max_length=20, judge_agreement=[1.0, 0.5, 0.0])
    assert res["judge_ceiling"]["overall"] == {"accuracy": 0.75, "n": 2}
    assert res["judge_ceiling"]["per_rating"]["negligibly_better"] == {"accuracy": 0.5, "n": 1}
    assert res["judge_ceiling"]["per_category"]["helpfulness"] == {"accuracy": 1.0, "n": 1}
    assert res["overall"] == {"accuracy": 0.5, "n": 2}  # the stub ranks pair 0 right, pair 1 wrong
    with pytest.raises(ValueError, match="2 values for 3 pairs"):
        evaluate_pairs(StubScorer(), pairs, judge_agreement=[1.0, 0.5])
