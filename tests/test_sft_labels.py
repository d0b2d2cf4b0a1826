"""Answer-only labels, token by token, under the SmolLM2 (ChatML) and Llama 2 templates,
and the same labels inside the batches that TRL's SFTTrainer feeds the model (packed or not)."""

import pytest

from core.chat import IGNORE_INDEX, tokenize_conversation

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of Peru?"},
    {"role": "assistant", "content": "Lima."},
    {"role": "user", "content": "And 2 + 3?"},
    {"role": "assistant", "content": "It is 5, which is prime."},
]


def learned_runs(tokenizer, encoded):
    """Decode each maximal run of learned tokens (labels != -100) to text."""
    runs, current = [], []
    for token_id, label in zip(encoded["input_ids"], encoded["labels"]):
        if label != IGNORE_INDEX:
            assert label == token_id  # a learned label is the token itself
            current.append(token_id)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


@pytest.fixture(scope="module")
def llama2_tokenizer():
    from core.models import load_tokenizer

    return load_tokenizer("embedded:smollm2-135m", chat_template="llama2")


def test_smollm2_template_learns_exactly_the_answers(smollm_tokenizer):
    encoded = tokenize_conversation(smollm_tokenizer, CONVERSATION)
    assert learned_runs(smollm_tokenizer, encoded) == ["Lima.<|im_end|>", "It is 5, which is prime.<|im_end|>"]
    # everything else (system, user turns, role headers, the newline after each turn) is masked
    masked = smollm_tokenizer.decode([t for t, lab in zip(encoded["input_ids"], encoded["labels"]) if lab == IGNORE_INDEX])
    assert masked == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is the capital of Peru?<|im_end|>\n"
        "<|im_start|>assistant\n\n<|im_start|>user\nAnd 2 + 3?<|im_end|>\n<|im_start|>assistant\n\n"
    )


def test_llama2_template_learns_exactly_the_answers(llama2_tokenizer):
    tok = llama2_tokenizer
    encoded = tokenize_conversation(tok, CONVERSATION)
    text = tok.decode(encoded["input_ids"])
    assert text.startswith(tok.bos_token + "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nWhat is the capital of Peru? [/INST]")
    # the answer's leading template space is fused into its first token, so it is learned with it
    assert learned_runs(tok, encoded) == [f" Lima. {tok.eos_token}", f" It is 5, which is prime. {tok.eos_token}"]
    masked = tok.decode([t for t, lab in zip(encoded["input_ids"], encoded["labels"]) if lab == IGNORE_INDEX])
    assert "Lima" not in masked and "prime" not in masked and tok.eos_token not in masked
    assert "[INST]" in masked and "You are terse." in masked and "And 2 + 3?" in masked


@pytest.mark.parametrize("template", ["smollm2", "llama2"])
def test_learn_last_only_learns_the_last_answer(template, smollm_tokenizer, llama2_tokenizer):
    tok = smollm_tokenizer if template == "smollm2" else llama2_tokenizer
    runs = learned_runs(tok, tokenize_conversation(tok, CONVERSATION, learn="last"))
    assert len(runs) == 1 and runs[0].strip().startswith("It is 5, which is prime.") and runs[0].endswith(tok.eos_token)


def _examples(tokenizer):
    from sft.data import Conversation, prepare_examples

    conversations = [
        Conversation(CONVERSATION, "a"),
        Conversation(CONVERSATION[1:3], "b"),
        Conversation([{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}], "c"),
        Conversation(CONVERSATION[3:], "d"),
    ]
    examples, report = prepare_examples(conversations, tokenizer, max_length=128)
    assert report.n_kept == 4
    return examples


def _trainer(tmp_path, packing, tokenizer, batch_size=4, group_by_length=False):
    from core.models import load_causal_lm
    from sft.config import SFTConfig
    from sft.train import make_trainer

    training = {"packing": packing, "batch_size": batch_size, "max_length": 128, "group_by_length": group_by_length}
    config = SFTConfig.model_validate({"output_dir": str(tmp_path), "training": training, "progress": False})
    model = load_causal_lm("embedded:tiny-llama")
    examples = _examples(tokenizer)
    return make_trainer(config, model, tokenizer, examples), examples


def test_collator_batches_carry_our_labels_unpacked(tmp_path, smollm_tokenizer):
    trainer, examples = _trainer(tmp_path, False, smollm_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    expected = {tuple(e["input_ids"]): e["labels"] for e in examples}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        key = tuple(ids[:n].tolist())
        assert labels[:n].tolist() == expected.pop(key)
        assert (labels[n:] == IGNORE_INDEX).all()  # padding is never learned
    assert not expected


def test_group_by_length_hands_the_trainer_our_lengths(tmp_path, smollm_tokenizer):
    # Grouping itself is the Trainer's LengthGroupedSampler (shuffled mega-batches of
    # 50 batches, each sorted by length); ours is to switch it on and give it the
    # tokenized lengths it sorts by.
    from torch.utils.data import RandomSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    grouped, examples = _trainer(tmp_path / "grouped", False, smollm_tokenizer, batch_size=2, group_by_length=True)
    sampler = grouped._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert list(sampler.lengths) == [len(e["input_ids"]) for e in examples]
    plain, _ = _trainer(tmp_path / "plain", False, smollm_tokenizer, batch_size=2)
    assert isinstance(plain._get_train_sampler(), RandomSampler)


def test_collator_batches_carry_our_labels_packed(tmp_path, smollm_tokenizer):
    trainer, examples = _trainer(tmp_path, True, smollm_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free packed row
    ids, labels, positions = batch["input_ids"][0].tolist(), batch["labels"][0].tolist(), batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
    segments = [(ids[a:b], labels[a:b]) for a, b in zip(starts, starts[1:])]
    expected = {tuple(e["input_ids"]): e["labels"] for e in examples}
    assert len(segments) == len(examples)
    for seg_ids, seg_labels in segments:
        ours = expected.pop(tuple(seg_ids))
        assert ours[0] == IGNORE_INDEX  # the first token is template, so the collator's reset changes nothing
        assert seg_labels == ours
    assert not expected
