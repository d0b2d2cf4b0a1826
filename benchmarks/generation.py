"""Generation: tokens/s of the shared sampler at several batch sizes, against
one-prompt-at-a-time `generate` and against this machine's decode bound.

Two rates per row, both with exactly `--new-tokens` tokens per sequence (no early stop):

- end to end: B * N / time(prefill + N tokens), what a stage sees;
- decode:     B * (N - 1) / (time(prefill + N) - time(prefill + 1)), the decoding
  loop alone, which is what the decode bound is about.

Each time is the best of `--repeats` runs (the box is shared and noisy; the
machine ceilings below are also best-of, so the ratio compares like with like).

Decode bound, per precision: each decoding step reads every weight once, so a
batch of B sequences cannot produce more than B * bandwidth / weight_bytes tokens
per second (the KV cache and activations only add to the bytes read); and each
token costs about 2 * parameters FLOPs, so no batch beats matmul_flops(dtype) /
(2 * parameters). The bound is the smaller of the two, both measured in this run.

`--copy-dtype bfloat16` (the default when the model runs in float32) adds rows for
sampling from `core.generation.sampling_model(model, "bfloat16")`, the bf16 copy
that PPO / rejection sampling can roll out with while training stays in fp32.

Threads: on a box shared by several torch processes, GNU OpenMP's default
spin-waiting makes every parallel op wait for a descheduled partner thread (we
measured a 576x1536 linear at batch 32 25x slower with 2 threads than with 1).
Unless the environment says otherwise this benchmark sets OMP_WAIT_POLICY=PASSIVE
(it must be set before torch is imported) and reports it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from benchmarks.machine import matmul_flops, memory_bandwidth  # noqa: E402
from benchmarks.results import markdown_table, report  # noqa: E402
from core.generation import SamplingConfig, generate_batch, sampling_model  # noqa: E402
from core.models import DTYPES, load_model_and_tokenizer  # noqa: E402


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


def rates(model, tokenizer, batch: list[list[dict]], new_tokens: int, repeats: int) -> tuple[float, float]:
    """(end-to-end, decode-only) tokens/s for one batch, each time the best of `repeats`."""
    full = min(time_batch(model, tokenizer, batch, new_tokens)[0] for _ in range(repeats))
    first = min(time_batch(model, tokenizer, batch, 1)[0] for _ in range(repeats))
    size = len(batch)
    decode = size * (new_tokens - 1) / max(full - first, 1e-9)
    return size * new_tokens / full, decode


class Bound:
    """Decode bound of one precision: min(B * bandwidth / weight bytes, FLOP/s / (2 params))."""

    def __init__(self, model, bandwidth: float):
        dtype = next(model.parameters()).dtype
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.params = sum(p.numel() for p in model.parameters())
        self.bandwidth = bandwidth
        self.flops = matmul_flops(dtype)
        self.compute = self.flops / (2 * self.params)

    def __call__(self, batch_size: int) -> float:
        return min(batch_size * self.bandwidth / self.weight_bytes, self.compute)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks generation")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--serial-prompts", type=int, default=8, help="prompts for the one-at-a-time baseline")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per timing")
    parser.add_argument("--copy-dtype", default=None, help="also time sampling_model(model, DTYPE) at --copy-batches ('none' to skip; default bfloat16 for a float32 model)")
    parser.add_argument("--copy-batches", default="32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    copy_dtype = args.copy_dtype or ("bfloat16" if args.dtype == "float32" else "none")
    load_before = os.getloadavg()[0]

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    bandwidth = memory_bandwidth()
    bound = Bound(model, bandwidth)
    time_batch(model, tokenizer, prompts(2), 4)  # warm-up

    def row(method: str, size: int, e2e: float, decode: float, b: Bound, serial: float) -> list:
        return [method, size, f"{e2e:.1f}", f"{decode:.1f}", f"{e2e / serial:.1f}x", f"{b(size):.0f}", f"{decode / b(size):.0%}", f"{e2e / b(size):.0%}"]

    serial_full = serial_first = 0.0
    for prompt in prompts(args.serial_prompts):
        serial_full += min(time_batch(model, tokenizer, [prompt], args.new_tokens)[0] for _ in range(args.repeats))
        serial_first += min(time_batch(model, tokenizer, [prompt], 1)[0] for _ in range(args.repeats))
    serial_rate = args.serial_prompts * args.new_tokens / serial_full
    serial_decode = args.serial_prompts * (args.new_tokens - 1) / (serial_full - serial_first)
    rows = [row(f"one at a time (plain generate, {args.dtype})", 1, serial_rate, serial_decode, bound, serial_rate)]

    measured: dict[int, tuple[float, float]] = {}
    for size in [int(b) for b in args.batches.split(",")]:
        measured[size] = rates(model, tokenizer, prompts(size), args.new_tokens, args.repeats)
        rows.append(row(f"shared sampler ({args.dtype})", size, *measured[size], bound, serial_rate))

    copy_notes = ""
    if copy_dtype != "none":
        start = time.perf_counter()
        copy = sampling_model(model, copy_dtype)
        copy_seconds = time.perf_counter() - start
        copy_bound = Bound(copy, bandwidth)
        time_batch(copy, tokenizer, prompts(2), 4)  # warm-up
        for size in [int(b) for b in args.copy_batches.split(",")]:
            e2e, decode = rates(copy, tokenizer, prompts(size), args.new_tokens, args.repeats)
            rows.append(row(f"shared sampler on sampling_model(model, {copy_dtype})", size, e2e, decode, copy_bound, serial_rate))
            if size in measured:
                copy_notes += (
                    f" At batch {size} the {copy_dtype} copy is {e2e / measured[size][0]:.2f}x faster end to end and "
                    f"{decode / measured[size][1]:.2f}x in decode than {args.dtype} (same run)."
                )
        copy_notes += (
            f" {copy_dtype} bound: matmul {copy_bound.flops / 1e9:.0f} GFLOP/s -> at most {copy_bound.compute:.0f} tokens/s; "
            f"{copy_bound.weight_bytes / 1e6:.0f} MB of weights. Making the copy took {copy_seconds:.2f} s."
        )

    table = markdown_table(
        ["method", "batch", "end-to-end tokens/s", "decode tokens/s", "end-to-end vs one at a time", "decode bound tokens/s", "decode of bound", "end-to-end of bound"],
        rows,
    )
    notes = (
        f"Model {args.model} in {args.dtype}: {bound.weight_bytes / 1e6:.0f} MB of weights, {bound.params / 1e6:.1f} M parameters; "
        f"measured read bandwidth {bandwidth / 1e9:.1f} GB/s; matmul {bound.flops / 1e9:.0f} GFLOP/s ({args.dtype}), "
        f"so at most {bound.compute:.0f} tokens/s at any batch. {args.new_tokens} new tokens per sequence, prompts of "
        f"about 38 tokens; one-at-a-time over {args.serial_prompts} prompts; every time is the best of {args.repeats}. "
        f"Decode = B*(N-1) / (t(prefill+N) - t(prefill+1)).{copy_notes} Threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (2 cores shared with other jobs: absolute figures move with the load, ratios within one run are the comparable numbers)."
    )
    report(f"Generation ({args.dtype})", table, notes)
