"""Sampled held-out evaluation (issue 22, core.evaluation): N answers per prompt at the
training temperature, the same seeds on the same prompts for every model (common random
numbers), per-prompt columns that are the mean over a prompt's samples (hand-computed),
paired comparisons of those columns, the config keys, and toyworld's held-out set of at
least 240 distinct prompts with no training overlap."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from core.evaluation import (
    SEED_STRIDE,
    Answers,
    HeldoutEval,
    SampledEval,
    answer_prompts_sampled,
    compare,
    evaluate_models,
    per_prompt_means,
    sampled_answers_from_rows,
    save_evaluation,
    score_sampled,
)
from core.generation import SamplingConfig
from core.io import read_jsonl
from core.sources import TOYWORLD, gold_judge, load_prompt_source

TINY = "embedded:tiny-llama"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: two spinning threads per process on the shared 2-core box are slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _prompts(n: int) -> list[dict]:
    return load_prompt_source(TOYWORLD, "heldout", n, seed=0)[:n]


class LengthScorer:
    """A fake gated scorer: the reward of an answer is its length in characters."""

    def score(self, prompts, responses, where=""):
        assert len(prompts) == len(responses)
        return SimpleNamespace(reward=torch.tensor([float(len(r)) for r in responses]))


# ---------------------------------------------------------------- pure parts, hand-computed


def test_per_prompt_means_are_round_major_means():
    # 2 rounds of 3 prompts: prompt i's samples are values[i] and values[3 + i]
    assert per_prompt_means([1.0, 2.0, 3.0, 5.0, 6.0, 9.0], 3) == [3.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="whole rounds"):
        per_prompt_means([1.0, 2.0, 3.0], 2)


def test_score_sampled_columns_are_each_prompts_mean_over_its_samples():
    prompts = [{"messages": [{"role": "user", "content": "a"}], "category": "helpfulness", "id": "p0"},
               {"messages": [{"role": "user", "content": "b"}], "category": "helpfulness", "id": "p1"}]
    rounds = [Answers(["abcd", "I'm sorry, but I can't help with that."], [True, False], [4, 10]),
              Answers(["ab", "xy"], [True, True], [2, 2])]
    columns = score_sampled(prompts, rounds, scorer=LengthScorer())
    assert columns["sampled_rm_reward"] == [3.0, (38 + 2) / 2]  # (4 + 2) / 2, (38 + 2) / 2
    assert columns["sampled_response_length"] == [3.0, 6.0]
    assert columns["sampled_truncation_rate"] == [0.0, 0.5]
    assert columns["sampled_refusal_rate"] == [0.0, 0.5]
    assert "gold_combined" not in columns and "sampled_gold_combined" not in columns  # no gold judge given


def test_compare_pairs_sampled_columns_per_prompt():
    after = {"rm_reward": [1.0, 2.0, 3.0], "sampled_rm_reward": [0.5, 0.75, 1.0]}
    before = {"rm_reward": [1.0, 1.0, 1.0], "sampled_rm_reward": [0.25, 0.75, 0.5]}
    result = compare(after, before)
    sampled = result["sampled_rm_reward"]
    assert sampled["n"] == 3 and sampled["wins"] == 2 and sampled["losses"] == 0
    assert sampled["diff"] == pytest.approx(0.25)  # mean of (0.25, 0, 0.5)
    assert sampled["diff_stderr"] == pytest.approx(0.25 / 3 ** 0.5)  # stdev 0.25 over 3 prompts
    assert result["sampled_rm_win_rate"]["rate"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert result["rm_win_rate"]["wins"] == 2


def test_gold_metrics_average_a_prompts_samples():
    judge = gold_judge(TOYWORLD)
    prompt = next(p for p in _prompts(40) if p["kind"] == "arithmetic")
    right = [judge.combined(prompt, str(n)) for n in range(200)].index(1.0)  # the answer the judge accepts
    one = judge.metrics([prompt], [str(right)])
    two = judge.metrics([prompt], [[str(right), "asdf qwer"]])
    assert one["gold_combined"] == 1.0
    assert two["gold_combined"] == pytest.approx((1.0 + judge.combined(prompt, "asdf qwer")) / 2)
    assert two["gold_combined_stderr"] == 0.0  # one prompt: the stderr is over prompts, not samples


# ---------------------------------------------------------------- config


def test_sampled_config_keys_are_validated():
    assert HeldoutEval().sampled_on is None  # off by default: the stages' runtime does not change
    assert HeldoutEval(sampled={"samples_per_prompt": 0}).sampled_on is None
    section = HeldoutEval(sampled={"samples_per_prompt": 3, "temperature": 0.7, "seed": 5})
    assert section.sampled_on.round_seeds() == [5, 5 + SEED_STRIDE, 5 + 2 * SEED_STRIDE]
    for bad in ({"samples_per_prompt": -1}, {"temperature": 0.0}, {"top_p": 1.5}, {"samples": 4}):
        with pytest.raises(ValueError):
            HeldoutEval(sampled=bad)


def test_pipeline_evaluation_takes_sampled_and_quickstart_is_powered():
    from core.config import load_config
    from pipelines.config import EvaluationSpec, PipelineConfig

    assert EvaluationSpec(sampled={"samples_per_prompt": 2, "temperature": 0.7}).sampled.samples_per_prompt == 2
    with pytest.raises(ValueError):
        EvaluationSpec(sampled={"samples_per_prompt": 2, "temprature": 0.7})
    quickstart = load_config(PipelineConfig, "configs/pipelines/quickstart.yaml")
    assert quickstart.evaluation.n_prompts >= 200 and quickstart.evaluation.dtype == "float32"
    # sampled rounds are off in the quickstart for time (each costs about a float32 greedy pass)
    on = load_config(PipelineConfig, "configs/pipelines/quickstart.yaml", ["evaluation.sampled.samples_per_prompt=2"])
    assert on.evaluation.sampled.samples_per_prompt == 2


# ---------------------------------------------------------------- common random numbers on the tiny model


def test_every_model_gets_the_same_seeds_on_the_same_prompts(tiny_model_and_tokenizer, monkeypatch):
    """Each round samples every prompt with the same batch seed and batch row for two
    different models; the same model twice gives the same samples; rounds differ."""
    import core.generation as generation

    model, tokenizer = tiny_model_and_tokenizer
    other = copy.deepcopy(model)
    with torch.no_grad():
        for weight in other.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    prompts = _prompts(10)
    sampling = SamplingConfig(max_new_tokens=5, temperature=0.0, batch_size=4)
    sampled = SampledEval(samples_per_prompt=3, temperature=1.0, seed=7)
    seen: list[tuple] = []
    real = generation.generate_batch

    def recording(model_, tokenizer_, conversations, sampling_, seed):
        assert sampling_.temperature == 1.0
        seen.extend((c[-1]["content"], seed, row) for row, c in enumerate(conversations))
        return real(model_, tokenizer_, conversations, sampling_, seed)

    monkeypatch.setattr(generation, "generate_batch", recording)
    runs = {}
    for name, m in (("a", model), ("b", other), ("a again", model)):
        seen.clear()
        runs[name] = (answer_prompts_sampled(m, tokenizer, prompts, sampling, sampled, progress=False), sorted(seen))
    assert runs["a"][1] == runs["b"][1]  # per prompt: the same (seed, batch row) in every round
    assert len(runs["a"][1]) == 3 * len(prompts)
    seeds_by_prompt = {}
    for text, seed, _ in runs["a"][1]:
        seeds_by_prompt.setdefault(text, []).append(seed)
    assert all(len(set(seeds)) == 3 for seeds in seeds_by_prompt.values())  # a new seed per round
    assert [r.responses for r in runs["a"][0]] == [r.responses for r in runs["a again"][0]]
    assert runs["a"][0][0].responses != runs["a"][0][1].responses  # sampled, not greedy


def test_evaluate_models_sampled_metrics_files_and_crn(tmp_path):
    """A model against itself: every sampled paired difference is exactly 0 with no wins or
    losses (the same seeds on the same prompts), the sampled gold column is each prompt's
    mean over its rounds (recomputed from eval_sampled.jsonl), and the rounds load back."""
    prompts = _prompts(6)
    section = HeldoutEval(sampling=SamplingConfig(max_new_tokens=4, temperature=0.0, batch_size=4),
                          sampled={"samples_per_prompt": 2, "temperature": 1.0, "seed": 3})
    result = evaluate_models({"start": TINY, "same": TINY}, section, progress=False, prompts=prompts)
    save_evaluation(result, tmp_path)
    payload = json.loads((tmp_path / "eval.json").read_text())
    assert payload["sampled"]["samples_per_prompt"] == 2 and payload["sampled"]["round_seeds"] == [3, 3 + SEED_STRIDE]
    summary = payload["models"]["same"]
    for key in ("gold_combined", "sampled_gold_combined", "sampled_gold_combined_stderr", "sampled_refusal_rate",
                "sampled_truncation_rate", "sampled_response_length", "sampled_gold_helpfulness", "sampled_false_refusal_rate_borderline"):
        assert key in summary, key
    assert summary["sampled_samples_per_prompt"] == 2
    for metric in ("sampled_gold_combined", "sampled_response_length", "gold_combined"):
        paired = payload["paired"]["same"][metric]
        assert (paired["diff"], paired["diff_stderr"], paired["wins"], paired["losses"]) == (0.0, 0.0, 0, 0)

    rows = read_jsonl(tmp_path / "eval_sampled.jsonl")
    assert len(rows) == 2 * len(prompts) and {r["round"] for r in rows} == {0, 1}
    judge = gold_judge(TOYWORLD)
    by_id = {p["id"]: p for p in prompts}
    expected = [sum(judge.combined(by_id[p["id"]], r["start"]) for r in rows if r["id"] == p["id"]) / 2 for p in prompts]
    assert result["columns"]["start"]["sampled_gold_combined"] == pytest.approx(expected)
    assert summary["sampled_gold_combined"] == pytest.approx(sum(expected) / len(expected))

    rounds = sampled_answers_from_rows(rows, "start", section.sampled)
    assert [a.responses for a in rounds] == [a.responses for a in result["sampled_answers"]["start"]]
    assert sampled_answers_from_rows(rows, "start", SampledEval(samples_per_prompt=2, seed=4)) is None  # other seeds
    # cached greedy answers and rounds: nothing is answered again (a missing model folder would fail to load)
    again = evaluate_models({"start": "no/such/model"}, section, progress=False, prompts=prompts,
                            cached={"start": result["answers"]["start"]}, cached_sampled={"start": rounds})
    assert again["models"]["start"]["sampled_gold_combined"] == pytest.approx(summary["sampled_gold_combined"])


def test_eval_samples_keep_each_answers_rm_reward_for_the_report(tmp_path, monkeypatch):
    """eval_samples.jsonl stores `<model>_rm_reward` per prompt (the RMs are not there to
    score the text again when the report pairs two versions' evaluations)."""
    import reward.gated
    from pipelines.report import prompt_columns

    monkeypatch.setattr(reward.gated, "GatedScorer", lambda section, device=None: LengthScorer())
    rms = SimpleNamespace(configured=True, model_dump=lambda: {"helpfulness": "h", "safety": "s"})
    prompts = _prompts(3)
    # token lengths unlike the character lengths the fake RM scores
    answers = {"start": Answers(["a", "bbb", "cc"], [True] * 3, [7, 8, 9]), "v1": Answers(["dddd", "", "e"], [True] * 3, [5, 6, 3])}
    result = evaluate_models({"start": "no/such/model", "v1": "no/such/model"}, HeldoutEval(), rms, progress=False,
                             prompts=prompts, cached=answers)
    save_evaluation(result, tmp_path)
    rows = read_jsonl(tmp_path / "eval_samples.jsonl")
    assert [(r["start_rm_reward"], r["v1_rm_reward"]) for r in rows] == [(1.0, 4.0), (3.0, 0.0), (2.0, 1.0)]
    assert "columns" not in json.loads((tmp_path / "eval.json").read_text())
    assert [prompt_columns(rows, "v1")[p["id"]]["rm_reward"] for p in prompts] == [4.0, 0.0, 1.0]


# ---------------------------------------------------------------- toyworld's held-out set


def test_toyworld_heldout_has_240_distinct_prompts_none_in_training():
    from toyworld.world import build_prompts

    prompts = load_prompt_source(TOYWORLD, "heldout", 240, seed=0)
    texts = [p["messages"][-1]["content"] for p in prompts]
    assert len(prompts) >= 240 and len(set(texts)) == len(texts)
    assert len({p["id"] for p in prompts}) == len(prompts)
    assert {p["kind"] for p in prompts} == {"capital", "arithmetic", "list", "translation", "opposite", "format", "harmful", "borderline"}
    train = {p["messages"][-1]["content"] for p in build_prompts("train", 4000, seed=0)}
    assert not set(texts) & train


def test_rlhf_eval_toyworld_with_samples_writes_sampled_metrics(tmp_path, capsys):
    from pipelines.evaluate import main

    code = main(["toyworld", "--model", TINY, "--baseline", TINY, "--n", "2", "--samples-per-prompt", "2", "--temperature", "1.0",
                 "--max-new-tokens", "3", "--batch-size", "64", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "eval_toyworld.json").read_text())
    assert result["sampled"]["samples_per_prompt"] == 2 and "sampled_gold_combined" in result["models"]["model"]
    assert result["paired"]["model"]["sampled_gold_combined"]["diff"] == 0.0  # the same model, the same seeds
    assert len(result["sampled_samples"]) == 2 * result["prompts"]["n"]
    assert "sampled_gold_combined" in capsys.readouterr().out


def test_pipeline_eval_reuses_the_starts_sample_rounds_and_rows_carry_sampled_diffs(tmp_path, monkeypatch):
    import core.evaluation as evaluation
    from pipelines.run import EvalStageConfig, evaluate_model

    heldout = HeldoutEval(n_prompts=2, sampling=SamplingConfig(max_new_tokens=3, temperature=0.0, batch_size=64),
                          sampled={"samples_per_prompt": 2, "temperature": 1.0})
    calls = []
    real = evaluation.answer_prompts_sampled
    monkeypatch.setattr(evaluation, "answer_prompts_sampled", lambda *a, **k: calls.append(k.get("description")) or real(*a, **k))
    common = dict(heldout=heldout, reward_models=None, xstest_data=None, xstest_limit=None)
    evaluate_model(EvalStageConfig(version="sft", model=TINY, start_model=None, **common), tmp_path / "sft")
    assert (tmp_path / "sft" / "eval_sampled.jsonl").is_file() and calls == ["eval sft"]
    row = evaluate_model(EvalStageConfig(version="v1", model=TINY, start_model=TINY,
                                         start_samples=str(tmp_path / "sft" / "eval_samples.jsonl"), **common), tmp_path / "v1")
    assert calls == ["eval sft", "eval v1"]  # the start's rounds came from sft/eval_sampled.jsonl
    assert row["sampled_gold_combined_diff_vs_start"] == 0.0 and row["sampled_gold_combined_diff_vs_start_stderr"] == 0.0
    assert "sampled_gold_combined" in row and row["sampled_samples_per_prompt"] == 2


def test_eval_precision_benchmark_counts_what_bfloat16_rounds_away(tiny_model_and_tokenizer):
    from benchmarks.eval_precision import perturbed, weight_change

    model, _ = tiny_model_and_tokenizer
    change = weight_change(model, perturbed(model, 1e-4, layers=1))
    assert 0 < change["changed"] < 1 and change["changed_bf16"] < change["changed"] / 10
    assert change["median_relative"] == pytest.approx(0.67e-4, rel=0.2)  # median |N(0,1)| = 0.674
    assert weight_change(model, model)["changed"] == 0.0
