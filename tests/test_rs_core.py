"""Rejection sampling's pure functions against hand-computed values (no model, no files)."""

import random

import pytest
import torch

from rejection_sampling.core import (
    chosen_vs_median,
    max_median_curve,
    median_index,
    paired_comparison,
    sample_ks,
    select_best,
)


def s(pid, iteration, index, reward, response=None, shard=0):
    return {"prompt_id": pid, "iteration": iteration, "shard": shard, "sample_index": index,
            "reward": reward, "response": f"{pid}-v{iteration}-{index}" if response is None else response}


def test_select_best_takes_the_highest_reward_per_prompt():
    samples = [s("a", 1, 0, 0.2), s("a", 1, 1, 0.9), s("a", 1, 2, 0.5), s("b", 1, 0, 0.1), s("b", 1, 1, 0.05)]
    best = select_best(samples)
    assert list(best) == ["a", "b"]
    assert best["a"]["sample_index"] == 1
    assert best["b"]["sample_index"] == 0


def test_pool_keeps_an_earlier_iterations_better_answer_when_the_new_best_is_worse():
    # Iteration 1 found a great answer for "a" (0.95); iteration 2's best for "a" is
    # only 0.7. Llama 2's fix: the target stays the iteration-1 answer. For "b"
    # iteration 2 is better and wins.
    iteration1 = [s("a", 1, 0, 0.95, "old great answer"), s("a", 1, 1, 0.3), s("b", 1, 0, 0.4), s("b", 1, 1, 0.2)]
    iteration2 = [s("a", 2, 0, 0.7, "new best is worse"), s("a", 2, 1, 0.1), s("b", 2, 0, 0.8, "new better"), s("b", 2, 1, 0.6)]
    pooled = select_best(iteration1 + iteration2)
    assert pooled["a"]["response"] == "old great answer" and pooled["a"]["iteration"] == 1
    assert pooled["b"]["response"] == "new better" and pooled["b"]["iteration"] == 2
    # whereas last-iteration-only selection (the paper's regression) would have lost it
    assert select_best(iteration2)["a"]["response"] == "new best is worse"


def test_select_best_ties_are_deterministic_whatever_the_input_order():
    samples = [s("a", 2, 0, 0.5), s("a", 1, 3, 0.5), s("a", 1, 1, 0.5), s("a", 3, 0, 0.4)]
    expected = ("a", 1, 1)  # same reward: earlier iteration, then lower sample index
    for seed in range(5):
        shuffled = samples[:]
        random.Random(seed).shuffle(shuffled)
        winner = select_best(shuffled)["a"]
        assert (winner["prompt_id"], winner["iteration"], winner["sample_index"]) == expected


def test_select_best_never_picks_an_empty_answer():
    samples = [s("a", 1, 0, 0.9, "  "), s("a", 1, 1, 0.2, "real"), s("b", 1, 0, 0.9, "")]
    best = select_best(samples)
    assert best["a"]["response"] == "real"
    assert "b" not in best


def test_select_best_rejects_a_missing_reward():
    with pytest.raises(ValueError, match="no reward"):
        select_best([s("a", 1, 0, None)])


def test_sample_ks():
    assert sample_ks(1) == [1]
    assert sample_ks(4) == [1, 2, 4]
    assert sample_ks(10) == [1, 2, 4, 8, 10]
    with pytest.raises(ValueError):
        sample_ks(0)


def test_max_median_curve_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 10.0, 2.0, 6.0]])
    curve = max_median_curve(rewards)
    # k=1: max = median = first sample: (1 + 0) / 2
    # k=2: max (2, 10) -> 6; median (1.5, 5) -> 3.25
    # k=4: max (4, 10) -> 7; median (2.5, mean(2, 6) = 4) -> 3.25
    assert [p["k"] for p in curve] == [1, 2, 4]
    assert [p["max"] for p in curve] == pytest.approx([0.5, 6.0, 7.0])
    assert [p["median"] for p in curve] == pytest.approx([0.5, 3.25, 3.25])
    assert [p["gap"] for p in curve] == pytest.approx([0.0, 2.75, 3.75])


def test_max_median_curve_odd_k_and_last_point():
    curve = max_median_curve(torch.tensor([[3.0, 1.0, 2.0]]))
    assert [(p["k"], p["max"], p["median"]) for p in curve] == [(1, 3.0, 3.0), (2, 3.0, 2.0), (3, 3.0, 2.0)]


def test_max_median_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        max_median_curve(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        max_median_curve(torch.tensor([[0.1, float("nan")]]))


def test_median_index():
    assert median_index([0.9, 0.1, 0.5]) == 2
    assert median_index([0.4, 0.3, 0.2, 0.1]) == 2  # lower middle of 4 (sorted: 0.1, 0.2, 0.3, 0.4)
    assert median_index([0.5, 0.5, 0.5]) == 1


def test_paired_comparison_by_hand():
    result = paired_comparison([1.0, 0.5, 1.0], [0.5, 0.5, 0.0])
    # diffs 0.5, 0, 1: mean 0.5, sample sd 0.5, stderr 0.5 / sqrt 3
    assert result["diff"] == pytest.approx(0.5)
    assert result["diff_stderr"] == pytest.approx(0.5 / 3 ** 0.5)
    assert result["after"] == pytest.approx(2.5 / 3)
    assert result["before"] == pytest.approx(1 / 3)
    assert (result["wins"], result["losses"], result["n"]) == (2, 0, 3)


def test_chosen_vs_median_reads_gold_of_the_right_samples():
    groups = {
        "a": [s("a", 1, 0, 0.1), s("a", 1, 1, 0.9), s("a", 1, 2, 0.5)],  # chosen 1, median 2
        "b": [s("b", 1, 0, 0.8), s("b", 1, 1, 0.2), s("b", 1, 2, 0.4)],  # chosen 0, median 2
    }
    gold = {("a", 1, 0): 0.0, ("a", 1, 1): 1.0, ("a", 1, 2): 0.5,
            ("b", 1, 0): 0.6, ("b", 1, 1): 0.0, ("b", 1, 2): 0.2}
    result = chosen_vs_median(groups, gold)
    assert result["chosen"] == pytest.approx(0.8)  # (1.0 + 0.6) / 2
    assert result["median"] == pytest.approx(0.35)  # (0.5 + 0.2) / 2
    assert result["diff"] == pytest.approx(0.45)
    assert result["all_samples"] == pytest.approx(2.3 / 6)


def test_chosen_vs_greedy_compares_the_pick_with_the_policys_greedy_answer():
    from rejection_sampling.core import chosen_vs_greedy

    groups = {
        "a": [dict(s("a", 1, 0, 0.1), kind="capital"), dict(s("a", 1, 1, 0.9), kind="capital")],  # picks 1
        "b": [dict(s("b", 1, 0, 0.8), kind="arithmetic"), dict(s("b", 1, 1, 0.2), kind="arithmetic")],  # picks 0
        "c": [dict(s("c", 1, 0, 0.7), kind="capital", finished=False)],  # nothing chosen: left out
    }
    gold = {("a", 1, 0): 0.0, ("a", 1, 1): 1.0, ("b", 1, 0): 0.0, ("b", 1, 1): 1.0, ("c", 1, 0): 1.0}
    greedy_gold = {"a": 0.5, "b": 0.5, "c": 0.0}
    result = chosen_vs_greedy(groups, gold, greedy_gold)
    # chosen a 1.0 (greedy 0.5), b 0.0 (greedy 0.5): diffs +0.5, -0.5
    assert (result["n"], result["chosen"], result["greedy"]) == (2, pytest.approx(0.5), pytest.approx(0.5))
    assert result["diff"] == pytest.approx(0.0) and (result["wins"], result["losses"]) == (1, 1)
    assert result["significant"] is False
    assert result["by_kind"]["capital"] == {"n": 1, "diff": pytest.approx(0.5), "diff_stderr": 0.0}
    assert result["by_kind"]["arithmetic"]["diff"] == pytest.approx(-0.5)
    assert chosen_vs_greedy({"c": groups["c"]}, gold, greedy_gold) is None


def test_ranking_agreement_counts_pairs_of_one_prompt_by_kind():
    from rejection_sampling.core import ranking_agreement

    groups = {
        # rewards order 1 > 2 > 0; gold orders 1 > 0 = 2: pairs (0,1) agree, (1,2) agree, (0,2) a gold tie
        "a": [dict(s("a", 1, 0, 0.1), kind="capital"), dict(s("a", 1, 1, 0.9), kind="capital"),
              dict(s("a", 1, 2, 0.5), kind="capital")],
        # rewards order 0 > 1, gold 1 > 0: inverted; sample 2 ties sample 1 on reward, so (1,2) orders nothing
        "b": [dict(s("b", 1, 0, 0.8), kind="arithmetic"), dict(s("b", 1, 1, 0.2), kind="arithmetic"),
              dict(s("b", 1, 2, 0.2), kind="arithmetic")],
    }
    gold = {("a", 1, 0): 0.0, ("a", 1, 1): 1.0, ("a", 1, 2): 0.0,
            ("b", 1, 0): 0.0, ("b", 1, 1): 1.0, ("b", 1, 2): 0.5}
    # b's (0,2): reward 0.8 > 0.2, gold 0 < 0.5: inverted too
    result = ranking_agreement(groups, gold)
    assert result["capital"] == {"pairs": 2, "agree": 2, "rate": 1.0}
    assert result["arithmetic"] == {"pairs": 2, "agree": 0, "rate": 0.0}
    assert result["all"] == {"pairs": 4, "agree": 2, "rate": 0.5}
    # a sign error (ranking by minus the reward) inverts every count
    flipped = {pid: [dict(x, reward=-x["reward"]) for x in group] for pid, group in groups.items()}
    assert ranking_agreement(flipped, gold)["capital"]["rate"] == 0.0


def test_truncated_samples_are_never_targets_and_are_counted():
    from rejection_sampling.core import target_counts

    cut = dict(s("a", 1, 0, 0.99), finished=False)  # the highest reward, but cut at max_new_tokens
    samples = [cut, dict(s("a", 1, 1, 0.4), finished=True), dict(s("b", 1, 0, 0.9), finished=False),
               dict(s("b", 1, 1, 0.8), finished=False), dict(s("c", 1, 0, 0.1, ""), finished=True), s("d", 1, 0, 0.3)]
    best = select_best(samples)
    assert best["a"]["sample_index"] == 1  # not the truncated 0.99
    assert "b" not in best and "c" not in best  # b: every sample truncated; c: empty
    assert best["d"]["sample_index"] == 0  # no `finished` recorded (older samples): counted as finished
    assert target_counts(samples) == {"n_samples": 6, "n_truncated": 3, "n_empty": 1, "n_finished_unknown": 1,
                                      "n_prompts": 4, "n_prompts_all_truncated": 1, "n_prompts_without_target": 2}


def test_harvest_gap_and_temperature_choice_by_hand():
    from rejection_sampling.core import choose_temperature, harvest_gap

    # T=0.5: rows (0.2, 0.3, 0.4) gap 0.4-0.3 = 0.1; (0.5, 0.5, 0.6) gap 0.1 -> 0.1
    low = torch.tensor([[0.2, 0.3, 0.4], [0.5, 0.5, 0.6]])
    # T=1.0: (0.0, 0.2, 0.9) gap 0.7; (0.1, 0.4, 0.6) gap 0.2 -> 0.45
    high = torch.tensor([[0.0, 0.2, 0.9], [0.1, 0.4, 0.6]])
    assert harvest_gap(low) == pytest.approx(0.1)
    assert harvest_gap(high) == pytest.approx(0.45)
    # the 0.9 is truncated: max over eligible 0.2, median 0.2 -> 0; the second row has no
    # eligible sample -> 0: the mean gap is 0
    eligible = torch.tensor([[True, True, False], [False, False, False]])
    assert harvest_gap(high, eligible) == pytest.approx(0.0)
    # even K: median (0.1 + 0.3) / 2 = 0.2, max 0.7 -> 0.5
    assert harvest_gap(torch.tensor([[0.7, 0.1, 0.3, 0.0]])) == pytest.approx(0.5)
    assert choose_temperature({0.5: 0.1, 1.0: 0.45, 1.2: 0.3}) == 1.0
    assert choose_temperature({1.2: 0.2, 0.8: 0.2}) == 0.8  # a tie: the lower temperature
    with pytest.raises(ValueError):
        choose_temperature({})


def test_last_turn_rows_and_user_turns():
    from rejection_sampling.core import last_turn_rows, user_turns

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": " u2 "}, {"role": "assistant", "content": "a2"}]
    assert last_turn_rows(messages) == [messages[:3], messages]
    assert user_turns(messages) == ("u1", "u2")
