"""The paper's data mixes: helpfulness RM = all helpfulness + an equal amount of the
rest; safety RM = all safety + helpfulness at 90/10."""

from collections import Counter

import pytest

from reward.data_mix import mix_pairs, mix_summary


def _pairs(n_help, n_safe, n_other=0):
    rows = [{"category": "helpfulness", "i": i} for i in range(n_help)]
    rows += [{"category": "safety", "i": i} for i in range(n_safe)]
    rows += [{"category": None, "i": i} for i in range(n_other)]
    return rows


def test_helpfulness_mix_is_all_helpfulness_plus_equal_amount_of_rest():
    mixed = mix_pairs(_pairs(100, 300, 50), "helpfulness", seed=1)
    counts = Counter(p["category"] for p in mixed)
    assert counts["helpfulness"] == 100
    assert counts["safety"] + counts[None] == 100  # drawn from safety and other data


def test_safety_mix_is_90_10():
    mixed = mix_pairs(_pairs(500, 90, 40), "safety")
    counts = Counter(p["category"] for p in mixed)
    assert counts == {"safety": 90, "helpfulness": 10}  # other data is not used


def test_short_supply_takes_everything_and_ratios_are_configurable():
    assert Counter(p["category"] for p in mix_pairs(_pairs(10, 3), "helpfulness")) == {"helpfulness": 10, "safety": 3}
    assert len(mix_pairs(_pairs(10, 30), "helpfulness", helpfulness_other_ratio=0.5)) == 15
    assert Counter(p["category"] for p in mix_pairs(_pairs(50, 20), "safety", safety_main_fraction=0.5)) == {"safety": 20, "helpfulness": 20}


def test_mix_is_deterministic_and_shuffled():
    pairs = _pairs(40, 40)
    a, b = mix_pairs(pairs, "helpfulness", seed=3), mix_pairs(pairs, "helpfulness", seed=3)
    assert a == b
    assert [p["category"] for p in a] != sorted(p["category"] for p in a)
    assert mix_summary(a) == {"helpfulness": 40, "safety": 40}


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        mix_pairs([], "harmlessness")
    with pytest.raises(ValueError):
        mix_pairs([], "safety", safety_main_fraction=0)
