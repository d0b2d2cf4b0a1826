"""RewardScorer scores exactly what the trainer saw, and batching does not change scores."""

import json

import pytest
import torch

from core.errors import ModelLoadError
from reward.scorer import RewardScorer, check_reward_model_folder, encode_conversation

PAIRS = [
    {"prompt": [{"role": "user", "content": "What is the capital of Peru?"}], "chosen": "Lima.", "rejected": "I can't help with that.", "rating": "better"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}], "chosen": "4", "rejected": "It is 5, and here is a long explanation of why that is so.", "rating": "significantly_better"},
    {"prompt": [{"role": "user", "content": "List exactly 2 fruits."}], "chosen": "apple, pear", "rejected": "apple", "rating": "negligibly_better"},
]


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    from core.models import load_tokenizer, save_model
    from reward.train import load_reward_model

    tokenizer = load_tokenizer("embedded:tiny-llama")
    torch.manual_seed(0)
    model = load_reward_model("embedded:tiny-llama", tokenizer.pad_token_id)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores far from 0, so differences show
    folder = tmp_path_factory.mktemp("rm") / "model"
    save_model(model, tokenizer, folder)
    return folder


def test_batch_scores_equal_one_at_a_time(rm_folder):
    scorer = RewardScorer(rm_folder, batch_size=8)
    prompts = [p["prompt"] for p in PAIRS] * 2
    responses = [p["chosen"] for p in PAIRS] + [p["rejected"] for p in PAIRS]
    batch = scorer.score(prompts, responses)
    single = torch.cat([scorer.score([p], [r]).raw for p, r in zip(prompts, responses)])
    assert batch.raw.shape == (6,)
    assert torch.allclose(batch.raw, single, atol=1e-5)
    assert torch.allclose(batch.prob, torch.sigmoid(batch.raw))
    assert batch.raw.std() > 1e-3  # not a constant


def test_scorer_matches_the_trainer_forward(rm_folder):
    from datasets import Dataset
    from trl import RewardConfig

    from reward.train import make_trainer_class, tokenize_pairs

    scorer = RewardScorer(rm_folder)
    rows, overlong = tokenize_pairs(scorer.tokenizer, PAIRS, "small", max_length=None)
    assert overlong == 0 and [r["margin"] for r in rows] == [pytest.approx(2 / 3), 1.0, 0.0]
    # what group_by_length sorts by: the longer of the two sequences a pair pads to
    assert [r["length"] for r in rows] == [max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    args = RewardConfig(output_dir=str(rm_folder.parent / "trainer"), report_to=[], use_cpu=True, max_length=None)
    trainer = make_trainer_class()(model=scorer.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=scorer.tokenizer)
    inputs = trainer.data_collator(rows)  # right-padded chosen + rejected, as in training
    scorer.model.eval()
    with torch.no_grad():
        _, outputs = trainer.compute_loss(scorer.model, dict(inputs), return_outputs=True)
    in_trainer = outputs.logits.squeeze(-1)
    prompts = [p["prompt"] for p in PAIRS]
    expected = torch.cat([scorer.score(prompts, [p["chosen"] for p in PAIRS]).raw, scorer.score(prompts, [p["rejected"] for p in PAIRS]).raw])
    assert torch.allclose(in_trainer, expected, atol=1e-5)


def test_group_by_length_sorts_pairs_by_our_length_column(rm_folder):
    from datasets import Dataset
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from core.config import load_config
    from reward.config import RewardConfig
    from reward.train import make_trainer_class, tokenize_pairs, trainer_args

    scorer = RewardScorer(rm_folder)
    rows, _ = tokenize_pairs(scorer.tokenizer, PAIRS, "small", max_length=None)
    config = load_config(RewardConfig, "configs/reward/smoke.yaml", ["group_by_length=true"])
    args = trainer_args(config, rm_folder.parent / "grouped", len(rows))  # the stage's own TRL arguments
    trainer = make_trainer_class()(model=scorer.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=scorer.tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))  # the collator ignores the length column
    assert batch["input_ids"].shape[0] == 2 * len(rows)
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(trainer.train_dataset))
    assert isinstance(sampler, LengthGroupedSampler) and list(sampler.lengths) == [r["length"] for r in rows]


def test_rendering_uses_the_rm_tokenizer_template(rm_folder):
    scorer = RewardScorer(rm_folder)
    ids = encode_conversation(scorer.tokenizer, PAIRS[0]["prompt"], "Lima.")
    text = scorer.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>") and "Lima.<|im_end|>" in text
    assert (rm_folder / "chat_template.jinja").exists() or "chat_template" in json.loads((rm_folder / "tokenizer_config.json").read_text())


def test_not_a_reward_model_is_a_clear_error(tmp_path):
    from core.models import resolve_model_path

    with pytest.raises(ModelLoadError, match="not a reward model"):
        RewardScorer(resolve_model_path("embedded:tiny-llama"))  # a causal LM
    with pytest.raises(ModelLoadError, match="no config.json"):
        check_reward_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "a", "1": "b"}}))
    with pytest.raises(ModelLoadError, match="2 outputs"):
        check_reward_model_folder(tmp_path)
