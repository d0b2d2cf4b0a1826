"""Does a bfloat16 evaluation hide a small update? Greedy answers of a model and of its
updated copy on the same held-out toyworld prompts, in float32 and in bfloat16.

Pairs (each: a start model A and an updated model B):
- `--start` -> `--updated`: a real update, by default the quickstart's V1 rejection-
  sampling model -> its V2 PPO model (runs/quickstart/, when both folders exist);
- `--start` + noise: every weight of the top `--layers` decoder layers moved by a
  Gaussian of `--relative` times its own magnitude (one row per value), the size of a
  few optimizer steps at lr 1e-6 on weights of ~1e-2.

Per pair: the share of weight elements that change in float32 and the share that
still differ once both copies are rounded to bfloat16 (what a bf16 evaluation sees);
then, per evaluation dtype, the share of prompts whose greedy answer B shares with A,
and the paired gold-combined difference B - A with its standard error, wins/losses and
z = diff / stderr (core.evaluation.paired_comparison). A precision that hides the
update shows 100 % agreement and a zero difference where float32 shows neither.
The last rows compare A in float32 with A in bfloat16 (the precision's own effect).

    python -m benchmarks eval_precision [--prompts 60] [--relative 1e-4,1e-3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: see benchmarks/harness.py

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.harness import LoadNote, choose_device  # noqa: E402
from benchmarks.results import markdown_table, report  # noqa: E402

QUICKSTART = Path("runs/quickstart")


def perturbed(model, relative: float, layers: int, seed: int = 0):
    """A copy of `model` whose top `layers` decoder layers get w += relative * |w| * N(0, 1)."""
    copied = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    n_layers = copied.config.num_hidden_layers
    wanted = tuple(f"layers.{i}." for i in range(n_layers - layers, n_layers))
    with torch.no_grad():
        for name, weight in copied.named_parameters():
            if any(key in name for key in wanted):
                noise = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
                weight.add_(relative * weight.abs() * noise.to(weight.device))
    return copied


def weight_change(a, b) -> dict:
    """Share of elements that differ in float32, and once both are rounded to bfloat16;
    the median relative change |b - a| / |a| over the changed elements."""
    changed = changed_bf16 = total = 0
    relative = []
    for (_, wa), (_, wb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        wa, wb = wa.detach().float(), wb.detach().float()
        diff = wb != wa
        changed += int(diff.sum())
        changed_bf16 += int((wb.bfloat16() != wa.bfloat16()).sum())
        total += wa.numel()
        if diff.any():
            rel = ((wb - wa).abs() / wa.abs().clamp_min(1e-12))[diff]
            relative.append(rel[torch.randperm(rel.numel())[:10000]])
    median = float(torch.cat(relative).median()) if relative else 0.0
    return {"changed": changed / total, "changed_bf16": changed_bf16 / total, "median_relative": median}


def greedy(model, tokenizer, prompts, max_new_tokens: int, batch_size: int):
    from core.evaluation import answer_prompts
    from core.generation import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    start = time.perf_counter()
    answers = answer_prompts(model, tokenizer, prompts, sampling, progress=False)
    return answers.responses, time.perf_counter() - start


def compare_answers(prompts, after: list[str], before: list[str]) -> dict:
    from core.evaluation import paired_comparison
    from core.sources import TOYWORLD, gold_judge

    gold = gold_judge(TOYWORLD)
    pc = paired_comparison([gold.combined(p, r) for p, r in zip(prompts, after)], [gold.combined(p, r) for p, r in zip(prompts, before)])
    pc["agreement"] = sum(a == b for a, b in zip(after, before)) / len(prompts)
    pc["z"] = pc["diff"] / pc["diff_stderr"] if pc["diff_stderr"] > 0 else 0.0
    return pc


def main(argv: list[str] | None = None) -> None:
    real = (QUICKSTART / "v1/rs/model").is_dir() and (QUICKSTART / "v2/ppo/model").is_dir()
    parser = argparse.ArgumentParser(prog="python -m benchmarks eval_precision")
    parser.add_argument("--start", default=str(QUICKSTART / "v1/rs/model") if real else "embedded:smollm2-135m")
    parser.add_argument("--updated", default=str(QUICKSTART / "v2/ppo/model") if real else None,
                        help="a real update of --start (default: the quickstart's V2 PPO model when present)")
    parser.add_argument("--relative", default="1e-4,1e-3", help="relative sizes of the synthetic perturbations")
    parser.add_argument("--layers", type=int, default=4, help="top decoder layers perturbed")
    parser.add_argument("--prompts", type=int, default=60, help="held-out toyworld prompts")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    device = choose_device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    load = LoadNote()

    from core.models import load_model_and_tokenizer
    from core.sources import TOYWORLD, load_prompt_source

    prompts = load_prompt_source(TOYWORLD, "heldout", args.prompts, seed=0)[:args.prompts]
    start, tokenizer = load_model_and_tokenizer(args.start, dtype="float32", device=device)
    updates = []
    if args.updated:
        updates.append((f"{args.updated} (real)", load_model_and_tokenizer(args.updated, dtype="float32", device=device)[0]))
    for value in [float(v) for v in args.relative.split(",") if v]:
        updates.append((f"relative {value:g} noise, top {args.layers} layers", perturbed(start, value, args.layers)))

    base_answers, seconds = {}, {}
    for dtype in ("float32", "bfloat16"):
        model = start if dtype == "float32" else copy.deepcopy(start).to(torch.bfloat16)
        base_answers[dtype], seconds[dtype] = greedy(model, tokenizer, prompts, args.new_tokens, args.batch_size)
    rows = []
    for label, updated in updates:
        change = weight_change(start, updated)
        for dtype in ("float32", "bfloat16"):
            model = updated if dtype == "float32" else copy.deepcopy(updated).to(torch.bfloat16)
            answers, _ = greedy(model, tokenizer, prompts, args.new_tokens, args.batch_size)
            pc = compare_answers(prompts, answers, base_answers[dtype])
            rows.append([label, f"{change['changed']:.2%}", f"{change['changed_bf16']:.2%}", f"{change['median_relative']:.1e}", dtype,
                         f"{pc['agreement']:.0%}", f"{pc['diff']:+.4f} ± {pc['diff_stderr']:.4f}", f"{pc['z']:+.2f}", f"{pc['wins']}/{pc['losses']}"])
        del updated
    own = compare_answers(prompts, base_answers["bfloat16"], base_answers["float32"])
    rows.append(["start in bf16 vs start in fp32", "-", "-", "-", "bf16 - fp32", f"{own['agreement']:.0%}",
                 f"{own['diff']:+.4f} ± {own['diff_stderr']:.4f}", f"{own['z']:+.2f}", f"{own['wins']}/{own['losses']}"])
    table = markdown_table(
        ["update of the start", "weights changed (fp32)", "still changed in bf16", "median relative change", "eval dtype",
         "greedy answers equal to start's", "gold combined diff ± stderr", "z", "wins/losses"],
        rows,
    )
    notes = (f"Start {args.start}; {len(prompts)} held-out toyworld prompts, greedy, up to {args.new_tokens} new tokens, batch "
             f"{args.batch_size}, on {device}. Greedy answering of the {len(prompts)} prompts took {seconds['float32']:.1f} s in "
             f"float32 and {seconds['bfloat16']:.1f} s in bfloat16 (one model). {load}")
    report(f"Evaluation precision: does bfloat16 hide an update? ({device})", table, notes)


if __name__ == "__main__":
    main()
