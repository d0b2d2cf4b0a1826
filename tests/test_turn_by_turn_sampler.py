"""`core.generation.TurnByTurnSampler`: multi-turn answering with the KV cache kept
between turns must give the model exactly what re-rendering the whole conversation
gives it (`generate`), so greedy answers are identical in float32."""

import copy

import pytest
import torch

from core.generation import (
    SamplingConfig,
    TurnByTurnSampler,
    can_keep_cache,
    generate,
    generate_batch,
    shared_prefix_length,
)

USERS = [
    ["Hi!", "What is two plus two, please tell me?", "Why?", "And then what happened after that?"],
    ["Name a colour that you like and say why you like it.", "Ok.", "Tell me more about it.", "Thanks!"],
    ["Say something nice.", "Again, but about cats this time please.", "One more?", "Bye."],
]
GREEDY = SamplingConfig(max_new_tokens=6, temperature=0.0, batch_size=8)


def conversation(users: list[str], answers: list[str]) -> list[dict]:
    messages = [{"role": "system", "content": "Always mention hiking."}]
    for turn, user in enumerate(users[: len(answers) + 1]):
        messages.append({"role": "user", "content": user})
        if turn < len(answers):
            messages.append({"role": "assistant", "content": answers[turn]})
    return messages


@pytest.fixture()
def model_ending_early(tiny_model_and_tokenizer):
    """The tiny model with larger random weights (its own answers are newlines only, the
    same for every prompt), in float32, with a token it emits in one row's first answer
    declared an end-of-turn token, so that rows finish at different lengths and the
    cache holds pads after their ends."""
    model, tokenizer = tiny_model_and_tokenizer
    model = copy.deepcopy(model).float()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    batch = generate_batch(model, tokenizer, [conversation(users, []) for users in USERS], GREEDY, seed=0)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, batch.response_ids[1, 3].item()]
    return model, tokenizer


def play(answer_turn, turns: int, rewrite: dict[tuple[int, int], str] | None = None) -> list[list[str]]:
    answers: list[list[str]] = [[] for _ in USERS]
    for turn in range(turns):
        texts = answer_turn([conversation(users, a) for users, a in zip(USERS, answers, strict=True)], turn)
        for row, text in enumerate(texts):
            answers[row].append((rewrite or {}).get((row, turn), text))
    return answers


def test_shared_prefix_length():
    assert shared_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared_prefix_length([1, 2], [1, 2, 3]) == 2
    assert shared_prefix_length([7], [1]) == 0
    assert shared_prefix_length([], [1]) == 0


def test_cached_turns_equal_re_rendering_every_turn(model_ending_early):
    model, tokenizer = model_ending_early
    reference = play(lambda convs, turn: generate(model, tokenizer, convs, GREEDY.model_copy(update={"batch_size": 1}), progress=False), 4)
    sampler = TurnByTurnSampler(model, tokenizer)
    finished = []

    def cached(convs, turn):
        texts, done = sampler.respond(convs, GREEDY, seed=turn)
        finished.extend(done)
        assert sampler.cache.get_seq_length() == sampler.ids.shape[1] - 1  # all but the last sampled token
        return texts

    assert play(cached, 4) == reference
    assert all(text for answers in reference for text in answers)  # real answers, not empty ones
    assert any(finished) and not all(finished)
    # masked positions inside rows (pads after an end-of-turn token, pads aligning the
    # new tokens), which a plain left-padded batch never has, were there to get wrong
    inner = sampler.mask[:, 1:] < sampler.mask[:, :-1]
    assert inner.any()


def test_an_answer_changed_in_the_history_is_masked_out_not_reused(model_ending_early):
    """A conversation whose earlier answer differs from the sampled one (edited, or
    re-encoded differently) gets the rewritten tokens, not the cached ones."""
    model, tokenizer = model_ending_early
    rewrite = {(0, 0): "I rewrote this answer entirely.", (2, 1): ""}
    reference = play(lambda convs, turn: generate(model, tokenizer, convs, GREEDY, progress=False), 3, rewrite)
    sampler = TurnByTurnSampler(model, tokenizer)
    got = play(lambda convs, turn: sampler.respond(convs, GREEDY, seed=turn)[0], 3, rewrite)
    assert got == reference
    real_tokens = int(sampler.mask[0].sum())
    rendered = tokenizer(tokenizer.apply_chat_template(conversation(USERS[0], got[0][:2]), tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
    # row 0 attends to its rendered conversation plus its last answer, nothing it discarded
    assert real_tokens <= len(rendered) + GREEDY.max_new_tokens
    assert sampler.ids[0, sampler.mask[0].bool()].tolist()[: len(rendered)] == rendered


def test_the_batch_is_fixed_from_the_first_turn(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    sampler = TurnByTurnSampler(model, tokenizer)
    sampler.respond([conversation(users, []) for users in USERS], GREEDY, seed=0)
    with pytest.raises(ValueError, match="3"):
        sampler.respond([conversation(USERS[0], ["a"])], GREEDY, seed=1)


def test_asking_the_same_turn_again_answers_it_again(model_ending_early):
    """Every token of the new conversation is cached (the previous call's prompt): the
    last one is fed again so that each row has a next-token distribution."""
    model, tokenizer = model_ending_early
    conversations = [conversation(users, []) for users in USERS]
    sampler = TurnByTurnSampler(model, tokenizer)
    first, _ = sampler.respond(conversations, GREEDY, seed=0)
    again, _ = sampler.respond(conversations, GREEDY, seed=0)
    assert again == first == generate(model, tokenizer, conversations, GREEDY, progress=False)


def test_a_model_whose_answers_masked_columns_would_change_is_re_rendered(model_ending_early):
    """A repetition penalty reads every input token, masked or not: such a model is answered
    by `generate_batch` every turn (no cache kept), with the same answers as `generate`."""
    model, tokenizer = model_ending_early
    assert can_keep_cache(model)
    model.generation_config.repetition_penalty = 1.3
    assert not can_keep_cache(model)
    sampler = TurnByTurnSampler(model, tokenizer)
    reference = play(lambda convs, turn: generate(model, tokenizer, convs, GREEDY, progress=False), 2)
    assert play(lambda convs, turn: sampler.respond(convs, GREEDY, seed=turn)[0], 2) == reference
    assert sampler.cache is None and sampler.ids is None
