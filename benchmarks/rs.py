"""Rejection sampling: samples/s of the stage's sample-and-score step at K = 4 and 16.

Times `rejection_sampling.sample.sample_shard` as the stage runs it: K answers per
prompt from the policy (the K copies of a prompt share batches of `--batch-size`
sequences, sorted by length, KV cache), each scored by both reward models and Llama
2's gate (the gated scoring service, `reward.gated.GatedScorer`). The scoring time is
measured by wrapping `GatedScorer.score`;
generation is the rest. One shard of `--prompts` prompts per K, after an untimed
warm-up shard; the policy and the reward models are loaded once.

Reward models: `--helpful-rm` / `--safety-rm`, or two untrained RMs built on
`--model`'s body (same cost to run as trained ones). Response tokens (end-of-turn
token included) are counted from the sampler's response masks, by wrapping
`core.generation.generate_batch` for the duration of the benchmark.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: see benchmarks/harness.py

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.harness import LoadNote, choose_device, make_untrained_rm, synchronize  # noqa: E402
from benchmarks.results import markdown_table, report  # noqa: E402


def rs_config(args, device: str, helpful: str, safety: str, k: int, n_prompts: int, max_new_tokens: int, tmp: str):
    from rejection_sampling.config import RSConfig

    return RSConfig(
        policy=args.model, k=k, temperature=args.temperature, max_new_tokens=max_new_tokens, batch_size=args.batch_size,
        reward_models={"helpfulness": helpful, "safety": safety, "batch_size": args.rm_batch_size, "dtype": args.dtype, "device": device},
        dtype=args.dtype, device=device, prompts={"source": "toyworld", "n": n_prompts},
        output_dir=tmp, progress=False, finetune_enabled=False, eval={"enabled": False},
    )


@contextlib.contextmanager
def counting_response_tokens(counter: dict):
    """Add the response tokens of every `generate_batch` call to counter["tokens"]."""
    import core.generation as generation

    inner = generation.generate_batch

    def counted(*args, **kwargs):
        batch = inner(*args, **kwargs)
        counter["tokens"] += int(batch.response_mask.sum())
        return batch

    generation.generate_batch = counted
    try:
        yield counter
    finally:
        generation.generate_batch = inner


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks rs")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when visible")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="policy and RM weights")
    parser.add_argument("--ks", default="4,16", help="samples per prompt")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per shard (one shard per K)")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per generate call (the quickstart's)")
    parser.add_argument("--rm-batch-size", type=int, default=32)
    parser.add_argument("--helpful-rm", default=None, help="reward-model folder (default: an untrained RM on --model)")
    parser.add_argument("--safety-rm", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    device = choose_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = LoadNote()

    from core.models import load_model_and_tokenizer
    from rejection_sampling.sample import load_prompts, sample_shard
    from reward.gated import GatedScorer

    rows, rates = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-rs-") as tmp:
        helpful = args.helpful_rm or str(make_untrained_rm(args.model, Path(tmp) / "rm_helpful", seed=1))
        safety = args.safety_rm or str(make_untrained_rm(args.model, Path(tmp) / "rm_safety", seed=2))
        policy, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=device)
        warmup = rs_config(args, device, helpful, safety, k=2, n_prompts=1, max_new_tokens=4, tmp=tmp)
        scorers = GatedScorer(warmup.reward_models, device=device)
        scoring = {"seconds": 0.0}
        inner = scorers.score

        def timed_score(*a, **k):
            synchronize(device)
            start = time.perf_counter()
            out = inner(*a, **k)
            synchronize(device)
            scoring["seconds"] += time.perf_counter() - start
            return out

        scorers.score = timed_score
        sample_shard(policy, tokenizer, scorers, "benchmark", warmup, load_prompts(warmup), shard=0)  # warm-up, untimed

        for k in [int(v) for v in args.ks.split(",") if v]:
            config = rs_config(args, device, helpful, safety, k=k, n_prompts=args.prompts, max_new_tokens=args.new_tokens, tmp=tmp)
            prompts = load_prompts(config)
            scoring["seconds"] = 0.0
            synchronize(device)
            start = time.perf_counter()
            with counting_response_tokens({"tokens": 0}) as counted:
                samples = sample_shard(policy, tokenizer, scorers, "benchmark", config, prompts, shard=1)
            synchronize(device)
            seconds = time.perf_counter() - start
            tokens = counted["tokens"] / len(samples)
            rates[k] = len(samples) / seconds
            rows.append([
                k, len(prompts), len(samples), f"{seconds:.1f}", f"{seconds - scoring['seconds']:.1f}", f"{scoring['seconds']:.1f}",
                f"{rates[k]:.2f}", f"{tokens:.1f}", f"{len(samples) * tokens / (seconds - scoring['seconds']):.1f}",
            ])

    table = markdown_table(
        ["K", "prompts", "samples", "seconds", "generate s", "score s", "samples/s", "mean response tokens", "generated tokens/s (generate time)"],
        rows,
    )
    ks = sorted(rates)
    ratio = f" Samples/s at K={ks[-1]} vs K={ks[0]}: {rates[ks[-1]] / rates[ks[0]]:.2f}x (same run)." if len(ks) > 1 else ""
    notes = (
        f"Model {args.model} in {args.dtype} on {device}; rejection_sampling.sample.sample_shard (generate + both RMs + Llama 2 gate); "
        f"up to {args.new_tokens} new tokens at T={args.temperature}, {args.batch_size} sequences per generate call, "
        f"RM batches of {args.rm_batch_size}. Reward models: {'given' if args.helpful_rm else 'two untrained RMs on the model body'}."
        f"{ratio} {load}"
    )
    report(f"Rejection sampling ({device}, {args.dtype})", table, notes)
