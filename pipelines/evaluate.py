"""`rlhf eval`: evaluate models on public benchmarks or on held-out prompts.

    rlhf eval xstest --model runs/quickstart/v3/ppo/model --data ../shared/data/xstest/xstest_prompts.csv
    rlhf eval prompts --model runs/x/v1/rs/model --baseline runs/x/sft/model --prompts my_heldout.jsonl \
        --helpfulness-rm runs/x/rm_helpfulness/model --safety-rm runs/x/rm_safety/model
    rlhf eval toyworld --model embedded:smollm2-135m --n 240 --samples-per-prompt 4 --temperature 0.7
    rlhf eval compare runs/quickstart/v1/eval runs/quickstart/sft/eval

`prompts` is the shared evaluation (`core.evaluation`, the one every stage uses) on
any prompt source: RM-judged reward and win rate against `--baseline`, refusal rate,
length and truncation, paired differences with standard errors (toyworld's gold
scores when the prompts are toyworld's); `toyworld` is the same on toyworld's
held-out prompts. With `--samples-per-prompt N` each model also answers every prompt N
times at `--temperature` with the same seeds for every model, and the `sampled_*`
metrics (per prompt, the mean over its samples) are compared the same way. `xstest`, `prompts` and `toyworld` print a table and, with `--out DIR`,
write `DIR/eval_<benchmark>.json`. `compare` re-scores two evaluations of the same
held-out toyworld prompts (a pipeline `<version>/eval` folder, its `eval_samples.jsonl`,
or `toyworld`'s `eval_toyworld.json`) with the gold judges and prints (writes nothing)
the paired difference AFTER - BEFORE with its standard error, wins and losses.
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


def prompts_eval(models: dict[str, str], prompts: str, n: int | None, max_new_tokens: int, batch_size: int, seed: int = 0,
                 reward_models: dict[str, str] | None = None, dtype: str = "float32", device: str = "auto",
                 samples_per_prompt: int = 0, temperature: float = 0.7) -> dict:
    """The shared evaluation of `models` (the first is the baseline) on a prompt source;
    with `samples_per_prompt`, also that many answers per prompt at `temperature`
    (`sampled_*` metrics; the last model's samples under `sampled_samples`)."""
    from core.evaluation import HeldoutEval, evaluate_models, sampled_rows, samples_rows
    from reward.gated import RewardModelsSection

    section = HeldoutEval(prompts=prompts, n_prompts=n, seed=seed,
                          sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size),
                          sampled={"samples_per_prompt": samples_per_prompt, "temperature": temperature} if samples_per_prompt else None)
    rms = RewardModelsSection(**reward_models) if reward_models else None
    result = evaluate_models(models, section, rms, dtype=dtype, device=device)
    last = list(models)[-1]
    samples = [{"id": row["id"], "prompt": row["prompt"], "response": row[last]} for row in samples_rows(result)]
    extra = {"samples": samples}
    if result.get("sampled_answers"):
        extra["sampled_samples"] = [{"id": row["id"], "round": row["round"], "seed": row["seed"], "response": row[last]}
                                    for row in sampled_rows(result)]
    return {key: value for key, value in result.items() if key not in ("answers", "sampled_answers", "prompt_records", "columns")} | extra


def _eval_samples(path: str) -> tuple[Path, list[dict]]:
    """The answers of one toyworld evaluation and the file they came from: the pipeline's
    `toyworld_samples.jsonl`, `rlhf eval toyworld`'s `eval_toyworld.json`, or a folder
    holding either."""
    from core.errors import DataError
    from core.io import read_jsonl

    file = Path(path)
    if file.is_dir():
        candidates = [file / "eval_samples.jsonl", file / "toyworld_samples.jsonl", file / "eval_toyworld.json"]
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
        samples = [own_answer(row) for row in read_jsonl(file)]
    if not samples:
        raise DataError(f"{file}: no answers")
    return file, samples


def own_answer(row: dict) -> dict:
    """A row of an eval_samples.jsonl (one column per model) as `{id, prompt, response}`
    of the evaluated model (the column that is not the start's); other rows unchanged."""
    from core.evaluation import models_in_samples

    models = models_in_samples(row)
    if "response" in row or not models:
        return row
    own = next((m for m in models if m != "start"), models[-1])
    return {"id": row.get("id"), "prompt": row.get("prompt"), "response": row[own]}


def gold_by_prompt(path: str) -> dict[str, float]:
    """Gold combined score of each answer of one toyworld evaluation, by prompt id."""
    from core.errors import DataError
    from core.sources import TOYWORLD, gold_judge

    judge = gold_judge(TOYWORLD)
    file, samples = _eval_samples(path)
    scores: dict[str, float] = {}
    for index, row in enumerate(samples, 1):
        if not isinstance(row, dict) or not all(key in row for key in ("id", "prompt", "response")):
            raise DataError(f"{file}: answer {index} lacks one of id, prompt, response")
        if row["id"] in scores:
            raise DataError(f"{file}: answer {index} repeats prompt id {row['id']!r}")
        scores[row["id"]] = judge.combined_messages(row["prompt"], row["response"])
    return scores


def compare_evals(after: str, before: str) -> dict:
    """Paired gold-combined comparison of two evaluations on the same prompts
    (`rejection_sampling.core.paired_comparison`'s dict: means, stderrs, diff, wins)."""
    from core.errors import DataError
    from core.evaluation import paired_comparison

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
    pr = sub.add_parser("prompts", help="the shared evaluation on your held-out prompts (RM reward, win rate, refusals, length)")
    pr.add_argument("--prompts", required=True, help="a file of prompt records {messages, category, id}, or toyworld")
    tw = sub.add_parser("toyworld", help="the shared evaluation on held-out toyworld prompts, with gold scores")
    for p in (pr, tw):
        p.add_argument("--n", type=int, default=None, help="number of held-out prompts (default: all; toyworld: 240)")
        p.add_argument("--samples-per-prompt", type=int, default=0,
                       help="also this many answers per prompt at --temperature, the same seeds for every model (sampled_* metrics)")
        p.add_argument("--temperature", type=float, default=0.7, help="the sampled answers' temperature (the training temperature)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--baseline", default=None, help="a model to compare with on the same prompts (paired differences)")
        p.add_argument("--helpfulness-rm", default=None, help="reward-model folders: with both, the gated RM reward and win rate")
        p.add_argument("--safety-rm", default=None)
    cmp = sub.add_parser("compare", help="paired gold difference between two toyworld evaluations of the same prompts")
    cmp.add_argument("after", help="an evaluation folder, its toyworld_samples.jsonl, or an eval_toyworld.json")
    cmp.add_argument("before", help="the same, for the model to compare against")
    for p in (xs, pr, tw):
        p.add_argument("--model", required=True, help="model folder, embedded:NAME or hub id")
        p.add_argument("--max-new-tokens", type=int, default=64)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--dtype", default="float32")
        p.add_argument("--device", default="auto")
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
            from core.evaluation import format_table

            models = {**({"baseline": args.baseline} if args.baseline else {}), "model": args.model}
            rms = {"helpfulness": args.helpfulness_rm, "safety": args.safety_rm} if args.helpfulness_rm and args.safety_rm else None
            result = prompts_eval(models, "toyworld" if args.benchmark == "toyworld" else args.prompts, args.n or (240 if args.benchmark == "toyworld" else None),
                                  args.max_new_tokens, args.batch_size, args.seed, rms, args.dtype, args.device,
                                  args.samples_per_prompt, args.temperature)
            print(format_table(result))
        if args.out:
            atomic_write_json(Path(args.out) / f"eval_{args.benchmark}.json", result)
        return 0

    return run_guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
