"""Model loading, both chat templates, and the shared batched sampler."""

import pytest
import torch

from core.chat import LLAMA2_CHAT_TEMPLATE, ensure_chat_template, render
from core.errors import ModelLoadError
from core.generation import SamplingConfig, generate, generate_batch, response_mask_from_ids
from core.models import load_causal_lm, load_tokenizer, resolve_model_path

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And Spain?"},
]


def test_smollm2_chatml_rendering(smollm_tokenizer):
    text = render(smollm_tokenizer, CONVERSATION, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd Spain?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama2_template_rendering(smollm_tokenizer):
    tokenizer = load_tokenizer("embedded:smollm2-135m", chat_template="llama2")
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    assert tokenizer.chat_template == LLAMA2_CHAT_TEMPLATE
    assert render(tokenizer, CONVERSATION, add_generation_prompt=True) == (
        f"{bos}[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nCapital of France? [/INST] Paris. {eos}"
        f"{bos}[INST] And Spain? [/INST]"
    )
    assert render(tokenizer, CONVERSATION[1:2]) == f"{bos}[INST] Capital of France? [/INST]"


def test_template_choice_for_tokenizer_without_one(smollm_tokenizer):
    class Bare:
        chat_template = None
        name_or_path = "bare"

    bare = Bare()
    with pytest.raises(ModelLoadError, match="has no chat template"):
        ensure_chat_template(bare, "require")
    ensure_chat_template(bare, "auto")
    assert bare.chat_template == LLAMA2_CHAT_TEMPLATE


def test_model_names_resolve_or_fail_clearly(tmp_path):
    assert (resolve_model_path("embedded:tiny-llama") / "model.safetensors").is_file()
    with pytest.raises(ModelLoadError, match="unknown embedded model"):
        resolve_model_path("embedded:gpt-5")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelLoadError, match="neither an embedded name"):
        resolve_model_path("./no/such/folder")


def test_pickle_weights_refused_by_default(tmp_path, tiny_model_and_tokenizer):
    model, _ = tiny_model_and_tokenizer
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle checkpoint
    with pytest.raises(ModelLoadError, match="pickle-based weights"):
        load_causal_lm(str(tmp_path))
    assert load_causal_lm(str(tmp_path), allow_pickle_weights=True) is not None


def test_response_mask_stops_after_first_end_of_turn():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 2, 0, 0, 0], [5, 6, 7, 8, 9]])
    assert response_mask_from_ids(ids, 2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert response_mask_from_ids(ids, [2, 9]).tolist()[2] == [1, 1, 1, 1, 1]


def test_sampling_is_seeded_and_independent_of_the_rest_of_the_call(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    prompts = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(6)]
    sampling = SamplingConfig(max_new_tokens=8, temperature=1.0, batch_size=2, seed=3)
    first = generate(model, tokenizer, prompts, sampling, progress=False)
    assert first == generate(model, tokenizer, prompts, sampling, progress=False)
    assert len(first) == 6 and all(isinstance(text, str) for text in first)
    greedy = SamplingConfig(max_new_tokens=8, temperature=0, batch_size=4)
    assert generate(model, tokenizer, prompts, greedy, progress=False) == generate(
        model, tokenizer, prompts, greedy.model_copy(update={"batch_size": 1}), progress=False
    )


def test_generate_batch_shapes_and_left_padding(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A much longer question here?"}]]
    batch = generate_batch(model, tokenizer, prompts, SamplingConfig(max_new_tokens=5), seed=0)
    assert batch.prompt_ids.shape == batch.prompt_mask.shape
    assert batch.prompt_mask[0, 0] == 0 and batch.prompt_mask[:, -1].tolist() == [1, 1]  # left padded
    assert batch.response_ids.shape == batch.response_mask.shape and batch.response_ids.shape[1] <= 5
    assert len(batch.texts) == 2


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france():
    from core.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("embedded:smollm2-135m")
    [answer] = generate(
        model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
        SamplingConfig(max_new_tokens=20, temperature=0), progress=False,
    )
    assert "Paris" in answer


def test_freeze_lower_layers_leaves_the_top_layers_the_norm_and_an_outside_head_trainable():
    """core.models.freeze_lower_layers, shared by the reward stage and PPO
    (`trainable_layers`): on the 2-layer tiny model with 1 trainable layer, a causal LM
    trains layer 1 and the final norm (its tied LM head stays with the frozen
    embeddings), a reward model also its score head; 0 or 3 layers is refused naming
    the key."""
    from core.errors import ConfigError
    from core.models import freeze_lower_layers
    from reward.train import load_reward_model

    lm = load_causal_lm("embedded:tiny-llama")
    freeze_lower_layers(lm, 1)
    trained = {name for name, p in lm.named_parameters() if p.requires_grad}
    assert trained and all(name.startswith(("model.layers.1.", "model.norm.")) for name in trained), trained
    assert {name for name, _ in lm.named_parameters() if name.startswith("model.layers.1.")} <= trained
    rm = load_reward_model("embedded:tiny-llama", pad_token_id=0)
    freeze_lower_layers(rm, 1)
    trained = {name for name, p in rm.named_parameters() if p.requires_grad}
    assert "score.weight" in trained and "model.embed_tokens.weight" not in trained
    assert not any(name.startswith("model.layers.0.") for name in trained)
    for bad in (0, 3):
        with pytest.raises(ConfigError, match=f"model.trainable_layers: {bad}, but the model has 2 decoder layers"):
            freeze_lower_layers(load_causal_lm("embedded:tiny-llama"), bad, key="model.trainable_layers")
