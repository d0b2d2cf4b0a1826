"""`rlhf eval`: evaluate a model on public benchmarks or on held-out toyworld prompts.

    rlhf eval xstest --model runs/quickstart/v3/ppo/model --data ../shared/data/xstest/xstest_prompts.csv
    rlhf eval toyworld --model embedded:smollm2-135m --n 120
    rlhf eval compare runs/quickstart/v1/eval runs/quickstart/sft/eval

`xstest` and `toyworld` print a table and, with `--out DIR`, write
`DIR/eval_<benchmark>.json`. `compare` re-scores two evaluations of the same held-out
toyworld prompts (the pipeline's `<version>/eval/toyworld_samples.jsonl` or `toyworld`'s
`eval_toyworld.json`) with the gold judges and prints (writes nothing) the paired
difference AFTER - BEFORE with its standard error, wins and losses: on the same
prompts that is a far tighter yardstick than the two means' own errors.
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


def _eval_samples(path: str) -> tuple[Path, list[dict]]:
    """The answers of one toyworld evaluation and the file they came from: the pipeline's
    `toyworld_samples.jsonl`, `rlhf eval toyworld`'s `eval_toyworld.json`, or a folder
    holding either."""
    from core.errors import DataError
    from core.io import read_jsonl

    file = Path(path)
    if file.is_dir():
        candidates = [file / "toyworld_samples.jsonl", file / "eval_toyworld.json"]
        file = next((c for c in candidates if c.is_file()), candidates[0])
    if not file.is_file():
        raise DataError(f"{file}: no such file (expected toyworld_samples.jsonl, eval_toyworld.json or a folder holding one)")
    if file.suffix == ".json":
        try:
            result = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}: not valid JSON ({exc})") from None
        samples = result.get("samples") if isinstance(result, dict) else None
        if not isinstance(samples, list):
            raise DataError(f"{file}: no 'samples' list (not an `rlhf eval toyworld` result)")
    else:
        samples = read_jsonl(file)
    if not samples:
        raise DataError(f"{file}: no answers")
    return file, samples


def gold_by_prompt(path: str) -> dict[str, float]:
    """Gold combined score of each answer of one toyworld evaluation, by prompt id."""
    from core.errors import DataError
    from toyworld import judges
    from toyworld.annotators import category_of

    file, samples = _eval_samples(path)
    scores: dict[str, float] = {}
    for index, row in enumerate(samples, 1):
        if not isinstance(row, dict) or not all(key in row for key in ("id", "prompt", "response")):
            raise DataError(f"{file}: answer {index} lacks one of id, prompt, response")
        if row["id"] in scores:
            raise DataError(f"{file}: answer {index} repeats prompt id {row['id']!r}")
        scores[row["id"]] = judges.combined(row["prompt"], row["response"], category_of(row["prompt"]))
    return scores


def compare_evals(after: str, before: str) -> dict:
    """Paired gold-combined comparison of two evaluations on the same prompts
    (`rejection_sampling.core.paired_comparison`'s dict: means, stderrs, diff, wins)."""
    from core.errors import DataError
    from rejection_sampling.core import paired_comparison

    scores_after, scores_before = gold_by_prompt(after), gold_by_prompt(before)
    if scores_after.keys() != scores_before.keys():
        missing = sorted(scores_after.keys() ^ scores_before.keys())
        raise DataError(f"{after} and {before} evaluate different prompts ({len(missing)} differ, e.g. {missing[0]})")
    ids = sorted(scores_after)
    return paired_comparison([scores_after[i] for i in ids], [scores_before[i] for i in ids])


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
    cmp = sub.add_parser("compare", help="paired gold difference between two toyworld evaluations of the same prompts")
    cmp.add_argument("after", help="an evaluation folder, its toyworld_samples.jsonl, or an eval_toyworld.json")
    cmp.add_argument("before", help="the same, for the model to compare against")
    for p in (xs, tw):
        p.add_argument("--model", required=True, help="model folder, embedded:NAME or hub id")
        p.add_argument("--max-new-tokens", type=int, default=64)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--dtype", default="float32")
        p.add_argument("--device", default="cpu")
        p.add_argument("--out", default=None, help="folder for eval_<benchmark>.json")
    args = parser.parse_args(argv)

    def go() -> int:
        if args.benchmark == "compare":
            result = compare_evals(args.after, args.before)
            print(f"gold combined over {result['n']} prompts: {result['after']:.3f} ± {result['after_stderr']:.3f} "
                  f"against {result['before']:.3f} ± {result['before_stderr']:.3f}; paired difference "
                  f"{result['diff']:+.3f} ± {result['diff_stderr']:.3f} ({result['wins']} wins, {result['losses']} losses)")
            return 0
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
