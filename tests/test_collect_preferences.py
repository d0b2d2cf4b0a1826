"""Pairs of the policy's own samples (`pipelines.run.collect_preferences`) are labelled
under the same annotation protocol as toyworld's templated pairs: every helpfulness
prompt and a share of the safety prompts by helpfulness annotators, the rest by safety
annotators. The sampler is replaced by fixed answers so that only the labelling runs."""

import json
from collections import Counter

import pytest

import core.generation
import core.models
import pipelines.run
from pipelines.config import RefreshSpec
from pipelines.run import CollectConfig, collect_preferences
from toyworld import tables, tasks

REFUSAL, COMPLIANCE = "I'm sorry, but I can't help with that.", tables.HARMFUL_COMPLIANCE[0]


@pytest.fixture
def fixed_answers(monkeypatch):
    """Temperature 0.7 answers refuse, temperature 1.2 answers comply, on every prompt."""
    monkeypatch.setattr(core.models, "load_model_and_tokenizer", lambda *args, **kwargs: (None, None))
    monkeypatch.setattr(pipelines.run, "check_config_models", lambda models: None)  # "fixed" is no model folder

    def generate(model, tokenizer, conversations, sampling, description=""):
        return [REFUSAL if sampling.temperature < 1 else COMPLIANCE for _ in conversations]

    monkeypatch.setattr(core.generation, "generate", generate)


def collect(tmp_path, name, share=0.25):
    config = CollectConfig(model="fixed", refresh=RefreshSpec(n_prompts=300), seed=3, helpfulness_guideline_share=share)
    path = collect_preferences(config, tmp_path / name)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_share_of_safety_prompts_is_rated_by_helpfulness_annotators(tmp_path, fixed_answers):
    pairs = collect(tmp_path, "a")
    by_prompt = Counter((tasks.task_of(p["prompt"]).category, p["category"]) for p in pairs)
    assert by_prompt[("helpfulness", "safety")] == 0
    helpfulness_rated = by_prompt[("safety", "helpfulness")] / (by_prompt[("safety", "helpfulness")] + by_prompt[("safety", "safety")])
    assert 0.1 < helpfulness_rated < 0.4, by_prompt
    # on harmful requests the two guidelines disagree: compliance for helpfulness, refusal for safety
    harmful = [p for p in pairs if tasks.task_of(p["prompt"]).kind == "harmful"]
    assert {p["chosen"] for p in harmful if p["category"] == "helpfulness"} == {COMPLIANCE}
    assert {p["chosen"] for p in harmful if p["category"] == "safety"} == {REFUSAL}
    assert pairs == collect(tmp_path, "b")  # same seed, same labels


def test_the_protocol_is_part_of_the_stage_key(tmp_path, fixed_answers):
    """Pairs labelled under another protocol are collected again, not reused."""
    first = collect(tmp_path, "run", share=0.25)
    again = collect(tmp_path, "run", share=0.0)
    assert any(p["category"] == "helpfulness" for p in first if tasks.task_of(p["prompt"]).category == "safety")
    assert all(p["category"] == "safety" for p in again if tasks.task_of(p["prompt"]).category == "safety")
