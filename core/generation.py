"""Batched sampling shared by every stage (evaluation, rejection sampling, PPO, GAtt).

Prompts are rendered with the chat template, sorted by length (less padding),
left-padded into batches and sampled with the KV cache. Each batch is seeded
with `seed + batch_index`, so a given batch gives the same samples whether it
runs alone or in a longer call (which is what makes resumed sampling identical
to uninterrupted sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from core.chat import render
from core.config import StrictModel


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
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """(B, R) -> (B, R) float mask: 1 up to and including the first end-of-turn token."""
    if eos_token_id is None:
        return torch.ones_like(response_ids, dtype=torch.float32)
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=response_ids.device)
    is_eos = torch.isin(response_ids, eos_ids)
    # number of end-of-turn tokens strictly before each position
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (eos_before == 0).float()


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
    )
    response_ids = output[:, prompt_ids.shape[1]:]
    response_mask = response_mask_from_ids(response_ids, eos_ids)
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, tokenizer.pad_token_id))
    decoded = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return GenerationBatch(prompt_ids, prompt_mask, response_ids, response_mask, [text.strip() for text in decoded])


def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    sampling: SamplingConfig,
    progress: bool = True,
    description: str = "sampling",
) -> list[str]:
    """Sample one response per conversation; results come back in input order."""
    if not conversations:
        return []
    lengths = [len(render(tokenizer, messages, add_generation_prompt=True)) for messages in conversations]
    order = sorted(range(len(conversations)), key=lambda i: -lengths[i])
    results: list[str | None] = [None] * len(conversations)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), sampling.batch_size)
    try:
        for batch_index, start in enumerate(tqdm(starts, desc=description, disable=not progress, leave=False)):
            indices = order[start:start + sampling.batch_size]
            batch = generate_batch(model, tokenizer, [conversations[i] for i in indices], sampling, seed=sampling.seed + batch_index)
            for i, text in zip(indices, batch.texts):
                results[i] = text
    finally:
        model.train(was_training)
    return [text if text is not None else "" for text in results]
