"""Generation: tokens/s of the shared sampler at several batch sizes, against
one-prompt-at-a-time `generate` and against this machine's decode bound.

Decode bound: each decoding step reads every weight once, so a batch of B
sequences cannot produce more than B * bandwidth / weight_bytes tokens per
second (the KV cache and activations only add to the bytes read); and each
token costs about 2 * parameters FLOPs, so no batch beats matmul_flops /
(2 * parameters). The bound is the smaller of the two, both measured here.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.machine import matmul_flops, memory_bandwidth
from benchmarks.results import markdown_table, report
from core.generation import SamplingConfig, generate_batch
from core.models import load_model_and_tokenizer


def prompts(n: int) -> list[list[dict]]:
    topics = ["the sea", "a city", "music", "the moon", "trees", "bread", "rivers", "winter"]
    return [[{"role": "user", "content": f"Write a short paragraph about {topics[i % len(topics)]}."}] for i in range(n)]


def time_batch(model, tokenizer, batch: list[list[dict]], new_tokens: int) -> tuple[float, int]:
    """Seconds and number of generated tokens, forcing exactly `new_tokens` per sequence."""
    sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, batch_size=len(batch))
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None  # no early stop: every sequence decodes new_tokens
    try:
        start = time.perf_counter()
        out = generate_batch(model, tokenizer, batch, sampling, seed=0)
        seconds = time.perf_counter() - start
    finally:
        model.generation_config.eos_token_id = eos
    return seconds, out.response_ids.numel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks generation")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--serial-prompts", type=int, default=8, help="prompts for the one-at-a-time baseline")
    args = parser.parse_args(argv)

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    # Tokenizer quirk: generate_batch's response mask stops at eos; with eos disabled above the
    # tokenizer's eos stays the pad id, which is harmless for timing.
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = memory_bandwidth()
    n_params = sum(p.numel() for p in model.parameters())
    flops = matmul_flops(next(model.parameters()).dtype)
    compute_bound = flops / (2 * n_params)

    def bound(batch_size: int) -> float:
        return min(batch_size * bandwidth / weight_bytes, compute_bound)
    time_batch(model, tokenizer, prompts(2), 4)  # warm-up

    serial_seconds, serial_tokens = 0.0, 0
    for prompt in prompts(args.serial_prompts):
        seconds, tokens = time_batch(model, tokenizer, [prompt], args.new_tokens)
        serial_seconds += seconds
        serial_tokens += tokens
    serial_rate = serial_tokens / serial_seconds

    rows = [["one at a time (plain generate)", 1, f"{serial_rate:.1f}", "1.0x", f"{bound(1):.0f}", f"{serial_rate / bound(1):.0%}"]]
    for size in [int(b) for b in args.batches.split(",")]:
        seconds, tokens = time_batch(model, tokenizer, prompts(size), args.new_tokens)
        rate = tokens / seconds
        rows.append(["shared sampler (batched, KV cache)", size, f"{rate:.1f}", f"{rate / serial_rate:.1f}x", f"{bound(size):.0f}", f"{rate / bound(size):.0%}"])
    table = markdown_table(["method", "batch", "tokens/s", "vs one at a time", "decode bound tokens/s", "of bound"], rows)
    notes = (
        f"Model {args.model} in {args.dtype}: {weight_bytes / 1e6:.0f} MB of weights; measured read bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s; matmul {flops / 1e9:.0f} GFLOP/s, so at most {compute_bound:.0f} tokens/s at any batch; {args.new_tokens} new tokens per sequence; threads {torch.get_num_threads()}."
    )
    report(f"Generation ({args.dtype})", table, notes)
