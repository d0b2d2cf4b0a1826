"""`rlhf eval`: evaluate a model on public benchmarks or on held-out toyworld prompts.

    rlhf eval xstest --model runs/quickstart/v3/ppo/model --data ../shared/data/xstest/xstest_prompts.csv
    rlhf eval toyworld --model embedded:smollm2-135m --n 120

Results are printed as a table and written to `--out DIR/eval_<benchmark>.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.cli import run_guarded
from core.generation import SamplingConfig
from core.io import atomic_write_json


def xstest_eval(model_name: str, data: str | None, limit: int | None, max_new_tokens: int, batch_size: int,
                system_prompt: str | None = None, dtype: str = "float32", device: str = "cpu") -> dict:
    from core.models import load_model_and_tokenizer
    from pipelines.xstest import evaluate_model_on_xstest, load_xstest, stratified_subset

    rows = stratified_subset(load_xstest(data), limit)
    model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
    result = evaluate_model_on_xstest(model, tokenizer, rows, sampling, system_prompt=system_prompt)
    result.update(model=model_name, data=data or "hub", n_prompts=len(rows), max_new_tokens=max_new_tokens)
    return result


def toyworld_eval(model_name: str, n: int | None, max_new_tokens: int, batch_size: int, seed: int = 0,
                  dtype: str = "float32", device: str = "cpu") -> dict:
    from core.models import load_model_and_tokenizer
    from core.policy_eval import evaluate_policy
    from toyworld.world import build_eval_prompts

    prompts = build_eval_prompts(n, seed=seed)
    model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
    metrics, responses = evaluate_policy(model, tokenizer, prompts, sampling)
    return {"model": model_name, "metrics": metrics,
            "samples": [{"id": p["id"], "prompt": p["messages"][-1]["content"], "response": r} for p, r in zip(prompts, responses)]}


def _print_xstest(result: dict) -> None:
    print(f"XSTest, {result['n_prompts']} prompts, model {result['model']}")
    print(f"{'prompts':<8} {'n':>4} {'full refusal':>13} {'partial':>8} {'any refusal':>12}")
    for split, rates in result["rates"].items():
        print(f"{split:<8} {rates['n']:>4} {rates['full_refusal']:>13.1%} {rates['partial_refusal']:>8.1%} {rates['any_refusal']:>12.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    xs = sub.add_parser("xstest", help="refusal rates on XSTest's unsafe and safe prompts")
    xs.add_argument("--data", default=None, help="local xstest_prompts.csv (default: the hub copy, needs network)")
    xs.add_argument("--limit", type=int, default=None, help="evaluate a stratified subset of this many prompts")
    xs.add_argument("--system-prompt", default=None)
    tw = sub.add_parser("toyworld", help="gold scores on held-out toyworld prompts")
    tw.add_argument("--n", type=int, default=None, help="number of held-out prompts (default: all)")
    tw.add_argument("--seed", type=int, default=0)
    for p in (xs, tw):
        p.add_argument("--model", required=True, help="model folder, embedded:NAME or hub id")
        p.add_argument("--max-new-tokens", type=int, default=64)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--dtype", default="float32")
        p.add_argument("--device", default="cpu")
        p.add_argument("--out", default=None, help="folder for eval_<benchmark>.json")
    args = parser.parse_args(argv)

    def go() -> int:
        if args.benchmark == "xstest":
            result = xstest_eval(args.model, args.data, args.limit, args.max_new_tokens, args.batch_size,
                                 args.system_prompt, args.dtype, args.device)
            _print_xstest(result)
        else:
            result = toyworld_eval(args.model, args.n, args.max_new_tokens, args.batch_size, args.seed, args.dtype, args.device)
            print(json.dumps(result["metrics"], indent=2))
        if args.out:
            atomic_write_json(Path(args.out) / f"eval_{args.benchmark}.json", result)
        return 0

    return run_guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
