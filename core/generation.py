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


def _decoding(tokenizer, sampling: SamplingConfig, eos_ids: list[int]) -> dict:
    """`generate`'s decoding keywords for `sampling` (temperature 0: greedy)."""
    greedy = sampling.temperature <= 0
    return {
        "max_new_tokens": sampling.max_new_tokens,
        "do_sample": not greedy,
        "temperature": None if greedy else sampling.temperature,
        "top_p": None if greedy else sampling.top_p,
        "top_k": None,
        "eos_token_id": eos_ids,
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }


def _responses(tokenizer, response_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """(B, R) sampled tokens -> (ids padded after the first end-of-turn token, (B, R) float
    mask up to and including it, stripped texts, (B,) whether each row ended)."""
    finished = torch.isin(response_ids, torch.tensor(eos_ids, dtype=response_ids.dtype, device=response_ids.device)).any(dim=1)
    response_mask = response_mask_from_ids(response_ids, eos_ids)
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, tokenizer.pad_token_id))
    texts = [text.strip() for text in tokenizer.batch_decode(response_ids, skip_special_tokens=True)]
    return response_ids, response_mask, texts, finished


@torch.no_grad()
def generate_batch(model, tokenizer, conversations: list[list[dict]], sampling: SamplingConfig, seed: int) -> GenerationBatch:
    """Sample one response per conversation, all in one left-padded batch."""
    tokenizer.padding_side = "left"
    rendered = [render(tokenizer, messages, add_generation_prompt=True) for messages in conversations]
    encoded = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    prompt_ids = encoded["input_ids"].to(device)
    prompt_mask = encoded["attention_mask"].to(device)
    eos_ids = _eos_ids(tokenizer, model)
    torch.manual_seed(seed)
    output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, synced_gpus=generates_on_shards(model),
                            **_decoding(tokenizer, sampling, eos_ids))
    response_ids, response_mask, texts, finished = _responses(tokenizer, output[:, prompt_ids.shape[1]:], eos_ids)
    return GenerationBatch(prompt_ids, prompt_mask, response_ids, response_mask, texts, finished.cpu())


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


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ((B, W) ids, (B, W) mask), left-padded to the longest row."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
    return ids, mask


def shared_prefix_length(cached: list[int], wanted: list[int]) -> int:
    """How many leading tokens `cached` and `wanted` have in common."""
    length = 0
    for have, want in zip(cached, wanted):
        if have != want:
            break
        length += 1
    return length


def can_keep_cache(model) -> bool:
    """Whether `TurnByTurnSampler` may keep `model`'s KV cache between turns (see there)."""
    config, generation = model.config, model.generation_config
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    rewrites_logits = (generation.repetition_penalty or 1.0) != 1.0 or bool(generation.no_repeat_ngram_size)
    return not (sliding or rewrites_logits or generation.cache_implementation or generates_on_shards(model))


class TurnByTurnSampler:
    """Answers one fixed batch of conversations turn after turn, keeping their KV cache.

    Each call's conversations extend the previous call's, row for row (the last answer
    and a new user turn appended). Rendering and encoding the whole conversation every
    turn costs quadratically in the number of turns; here a turn encodes only the
    tokens past the longest prefix that the cache already holds. Measured on a GAtt
    evaluation (30 dialogues to turn 20, SmolLM2-135M in bf16, 2 CPU cores): 871 s
    re-rendering each turn with `generate`, 219 s here; in float32 the greedy answers
    are identical (tests/test_turn_by_turn_sampler.py).

    The cache is matched by tokens, not text, so nothing depends on the chat template
    being prefix-stable: cached tokens that the new rendering does not share (an answer
    that re-encodes differently, a template that rewrites earlier turns) are masked out
    instead of reused, and the model attends to exactly the tokens `generate_batch`
    would give it. Masked positions inside a row (pads after an end-of-turn token,
    discarded tokens, the pads that align the new tokens of different rows) are left
    out by the attention mask, and positions count real tokens only (transformers
    derives them from the mask), as in a fresh left-padded batch. The price is memory:
    the cache keeps those masked positions too.

    Masked columns are still columns, so a model for which they would change the answer
    is answered by `generate_batch` every turn instead (`keeps_cache` is False): a
    sliding attention window (it counts columns), a repetition penalty or n-gram ban in
    its generation config (they read every input token, masked or not), a cache of its
    own kind (`cache_implementation`), or weights sharded over processes (a process
    whose rows have all ended keeps stepping for the others, and its cache would run
    ahead of its tokens).

    ids, mask: (B, L) the tokens the cache holds (plus the last sampled token, not yet
    cached) and 1 where a token is part of the conversation.
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.keeps_cache = can_keep_cache(model)
        self.ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.cache = None

    @torch.no_grad()
    def respond(self, conversations: list[list[dict]], sampling: SamplingConfig, seed: int) -> tuple[list[str], list[bool]]:
        """One answer per conversation (same rows as every earlier call), and whether
        each ended with an end-of-turn token (False: cut at `max_new_tokens`)."""
        tokenizer, model = self.tokenizer, self.model
        if not self.keeps_cache:
            batch = generate_batch(model, tokenizer, conversations, sampling, seed)
            return batch.texts, batch.finished.tolist()
        wanted = [tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
                  for messages in conversations]
        if self.ids is not None and len(wanted) != self.ids.shape[0]:
            raise ValueError(f"TurnByTurnSampler: {len(wanted)} conversations, the cache holds {self.ids.shape[0]}")
        ids, mask = self._extend(wanted)
        device = next(model.parameters()).device
        eos_ids = _eos_ids(tokenizer, model)
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        try:
            output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), cache=self.cache,
                                    return_dict_in_generate=True, **_decoding(tokenizer, sampling, eos_ids))
        finally:
            model.train(was_training)
        _, response_mask, texts, finished = _responses(tokenizer, output.sequences[:, ids.shape[1]:].cpu(), eos_ids)
        self.ids, self.mask, self.cache = output.sequences.cpu(), torch.cat([mask, response_mask.long()], dim=1), output.cache
        return texts, finished.tolist()

    def _extend(self, wanted: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, L') ids and mask to pass to `generate`: the cached rows with the tokens
        they do not share with `wanted` masked out, then each row's new tokens (at least
        one, so that every row has a next-token distribution), left-padded to one width."""
        pad_id = self.tokenizer.pad_token_id
        if self.ids is None:
            return _left_padded(wanted, pad_id)
        mask = self.mask.clone()
        new_tokens = []
        for row, tokens in enumerate(wanted):
            positions = mask[row].nonzero().flatten()
            shared = shared_prefix_length(self.ids[row, positions].tolist(), tokens)
            shared = min(shared, len(tokens) - 1)
            mask[row, positions[shared:]] = 0
            new_tokens.append(tokens[shared:])
        new_ids, new_mask = _left_padded(new_tokens, pad_id)
        return torch.cat([self.ids, new_ids], dim=1), torch.cat([mask, new_mask], dim=1)
