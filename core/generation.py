"""Batched sampling shared by every stage (evaluation, rejection sampling, PPO, GAtt).

Prompts are rendered with the chat template, sorted by length (less padding),
left-padded into batches and sampled with the KV cache. Each batch is seeded
with `seed + batch_index`, so a given batch gives the same samples whether it
runs alone or in a longer call (which is what makes resumed sampling identical
to uninterrupted sampling).

Speed (see benchmarks/RESULTS.md, `python -m benchmarks generation`): decoding is
dominated by the weight matrix products, so the one big lever on CPU is the
precision the sampler runs in. `sampling_model(model, "bfloat16")` gives a bf16
copy of a (possibly fp32, training) model for rollouts; next-token logits are
still turned into probabilities in fp32 by `generate`. Sampling from the copy draws
from the bf16 model's distribution, which is close to but not bit-identical with the
fp32 one, so it is an opt-in of the calling stage, never a silent default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from core.chat import render
from core.config import StrictModel
from core.distributed import generates_on_shards


class SamplingConfig(StrictModel):
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0


@dataclass
class GenerationBatch:
    """One batch of prompts and sampled responses, as tensors and text.

    prompt_ids:    (B, P) left-padded prompt tokens
    prompt_mask:   (B, P) 1 on real prompt tokens
    response_ids:  (B, R) right-padded response tokens (pad after the end-of-turn token)
    response_mask: (B, R) 1 on response tokens up to and including the first end-of-turn
    texts:         B decoded responses without special tokens
    finished:      (B,) bool, True where the response ended with an end-of-turn token
                   (False: cut at max_new_tokens)
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    finished: torch.Tensor | None = None


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """(B, R) -> (B, R) float mask: 1 up to and including the first end-of-turn token."""
    if eos_token_id is None:
        return torch.ones_like(response_ids, dtype=torch.float32)
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=response_ids.device)
    is_eos = torch.isin(response_ids, eos_ids)
    # number of end-of-turn tokens strictly before each position
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (eos_before == 0).float()


def sampling_model(model, dtype: str | torch.dtype = "bfloat16", reuse=None):
    """A copy of `model` in `dtype`, in eval mode, for sampling only (no gradients).

    Training keeps its own (fp32) model; rollouts sample from the copy. Pass the copy
    returned by the previous call as `reuse` to refresh it in place after the model
    was updated (a parameter copy, no new allocation); a PEFT/LoRA model is merged
    into a plain model first, so the copy samples exactly what the adapters say.
    Returns `model` itself when it is already in `dtype` and `reuse` is None.
    """
    from core.models import DTYPES

    target = DTYPES[dtype] if isinstance(dtype, str) else dtype
    source = model
    if hasattr(model, "merge_and_unload"):  # PEFT: sample from the merged weights
        source = _merged_copy(model)
    if reuse is not None:
        reuse_state = reuse.state_dict()
        source_state = source.state_dict()
        if reuse_state.keys() != source_state.keys():
            raise ValueError("sampling_model(reuse=...) got a copy of a different model")
        with torch.no_grad():
            for name, tensor in reuse_state.items():
                tensor.copy_(source_state[name])
        return reuse.eval()
    if source is model and next(model.parameters()).dtype == target:
        return model
    copied = source if source is not model else copy.deepcopy(model)
    copied = copied.to(target).eval()
    copied.requires_grad_(False)
    return copied


def _merged_copy(peft_model):
    """A plain model with the active LoRA adapter merged in; `peft_model` is untouched."""
    merged = copy.deepcopy(peft_model)
    return merged.merge_and_unload()


def _eos_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_batch(model, tokenizer, conversations: list[list[dict]], sampling: SamplingConfig, seed: int) -> GenerationBatch:
    """Sample one response per conversation, all in one left-padded batch."""
    tokenizer.padding_side = "left"
    texts = [render(tokenizer, messages, add_generation_prompt=True) for messages in conversations]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    prompt_ids = encoded["input_ids"].to(device)
    prompt_mask = encoded["attention_mask"].to(device)
    eos_ids = _eos_ids(tokenizer, model)
    greedy = sampling.temperature <= 0
    torch.manual_seed(seed)
    output = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        temperature=None if greedy else sampling.temperature,
        top_p=None if greedy else sampling.top_p,
        top_k=None,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        synced_gpus=generates_on_shards(model),
    )
    response_ids = output[:, prompt_ids.shape[1]:]
    finished = torch.isin(response_ids, torch.tensor(eos_ids, dtype=response_ids.dtype, device=response_ids.device)).any(dim=1)
    response_mask = response_mask_from_ids(response_ids, eos_ids)
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, tokenizer.pad_token_id))
    decoded = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return GenerationBatch(prompt_ids, prompt_mask, response_ids, response_mask, [text.strip() for text in decoded], finished.cpu())


def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    sampling: SamplingConfig,
    progress: bool = True,
    description: str = "sampling",
    with_finished: bool = False,
) -> list[str] | tuple[list[str], list[bool]]:
    """Sample one response per conversation; results come back in input order.

    With `with_finished`, also whether each response ended with an end-of-turn
    token (False: it was cut at `max_new_tokens`).
    """
    if not conversations:
        return ([], []) if with_finished else []
    lengths = [len(render(tokenizer, messages, add_generation_prompt=True)) for messages in conversations]
    order = sorted(range(len(conversations)), key=lambda i: -lengths[i])
    results: list[str | None] = [None] * len(conversations)
    finished = [False] * len(conversations)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), sampling.batch_size)
    try:
        for batch_index, start in enumerate(tqdm(starts, desc=description, disable=not progress, leave=False)):
            indices = order[start:start + sampling.batch_size]
            batch = generate_batch(model, tokenizer, [conversations[i] for i in indices], sampling, seed=sampling.seed + batch_index)
            for i, text, done in zip(indices, batch.texts, batch.finished.tolist()):
                results[i] = text
                finished[i] = bool(done)
    finally:
        model.train(was_training)
    texts = [text if text is not None else "" for text in results]
    return (texts, finished) if with_finished else texts
