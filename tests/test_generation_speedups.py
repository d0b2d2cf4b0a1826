"""The sampler's speed options: `sampling_model` (a low-precision copy for rollouts)
and the generation benchmark's table."""

import copy

import pytest
import torch

from core.generation import SamplingConfig, generate, generate_batch, sampling_model

PROMPTS = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(6)]


@pytest.fixture()
def fp32_model(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    return copy.deepcopy(model), tokenizer  # tests below change weights


def test_sampling_model_is_a_bf16_copy_that_leaves_the_model_alone(fp32_model):
    model, _ = fp32_model
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sampler = sampling_model(model, "bfloat16")
    assert sampler is not model
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in sampler.parameters())
    assert not sampler.training
    assert model.training and all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    # tied embeddings stay tied in the copy
    assert sampler.lm_head.weight.data_ptr() == sampler.model.embed_tokens.weight.data_ptr()
    assert sampling_model(model, torch.float32) is model  # nothing to do


def test_reused_copy_follows_the_updated_model(fp32_model):
    model, tokenizer = fp32_model
    sampler = sampling_model(model, "bfloat16")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    refreshed = sampling_model(model, "bfloat16", reuse=sampler)
    assert refreshed is sampler
    fresh = sampling_model(model, "bfloat16")
    assert all(torch.equal(a, b) for a, b in zip(refreshed.state_dict().values(), fresh.state_dict().values()))
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, batch_size=3, seed=1)
    assert generate(refreshed, tokenizer, PROMPTS, sampling, progress=False) == generate(fresh, tokenizer, PROMPTS, sampling, progress=False)


def test_bf16_sampling_keeps_the_seed_contract(fp32_model):
    model, tokenizer = fp32_model
    sampler = sampling_model(model, "bfloat16")
    sampling = SamplingConfig(max_new_tokens=8, temperature=1.0, batch_size=2, seed=3)
    first = generate(sampler, tokenizer, PROMPTS, sampling, progress=False)
    assert first == generate(sampler, tokenizer, PROMPTS, sampling, progress=False)
    # a batch gives the same samples alone as inside the longer call (equal-length prompts keep
    # their order, so the first batch of the call is prompts 0 and 1, seeded with `seed`)
    alone = generate_batch(sampler, tokenizer, PROMPTS[:2], sampling, seed=3)
    assert alone.texts == first[:2]
    assert alone.response_ids.dtype == torch.long and alone.response_mask.dtype == torch.float32


def test_lora_model_is_merged_into_the_copy(fp32_model):
    pytest.importorskip("peft")
    from core.models import LoraSettings, apply_lora

    model, tokenizer = fp32_model
    lora = apply_lora(model, LoraSettings(enabled=True, r=4, target_modules=["q_proj", "v_proj"]), task_type="CAUSAL_LM")
    with torch.no_grad():  # make the adapter matter (B starts at zero)
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    merged = sampling_model(lora, "float32")
    assert not hasattr(merged, "merge_and_unload")
    assert hasattr(lora, "merge_and_unload")  # the PEFT model itself is untouched
    greedy = SamplingConfig(max_new_tokens=6, temperature=0, batch_size=3)
    assert generate(merged, tokenizer, PROMPTS, greedy, progress=False) == generate(lora, tokenizer, PROMPTS, greedy, progress=False)
    again = sampling_model(lora, "float32", reuse=merged)
    assert again is merged


def test_generation_benchmark_reports_end_to_end_and_decode(monkeypatch):
    import benchmarks.generation as bench

    captured = {}
    monkeypatch.setattr(bench, "report", lambda title, table, notes="": captured.update(title=title, table=table, notes=notes))
    monkeypatch.setattr(bench, "memory_bandwidth", lambda: 40e9)
    monkeypatch.setattr(bench, "matmul_flops", lambda dtype: 400e9 if dtype == torch.bfloat16 else 150e9)
    bench.main(["--model", "embedded:tiny-llama", "--batches", "1,2", "--new-tokens", "3", "--serial-prompts", "1",
                "--repeats", "1", "--copy-batches", "2"])
    assert captured["title"] == "Generation (float32)"
    lines = captured["table"].splitlines()
    assert "end-to-end tokens/s" in lines[0] and "decode tokens/s" in lines[0] and "decode of bound" in lines[0]
    assert len(lines) == 2 + 1 + 2 + 1  # header, rule, one-at-a-time, two batches, the bf16 copy
    assert "sampling_model(model, bfloat16)" in lines[-1]
    assert "bfloat16 bound" in captured["notes"] and "OMP_WAIT_POLICY" in captured["notes"]
