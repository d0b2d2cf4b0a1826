"""`rlhf reward train|eval|calibrate` (also `python -m reward ...` and `accelerate launch -m reward train ...`).

    rlhf reward train --config configs/reward/quickstart.yaml kind=safety init_model=runs/sft/model output_dir=runs/rm_safety
    rlhf reward eval --model runs/rm_safety/model --data toyworld
    rlhf reward eval --model runs/rm_safety/model --data ../shared/data/hh-rlhf-harmless/test.jsonl.gz --adapter hh-rlhf --limit 300
    rlhf reward eval --model runs/rm_safety/model --data Anthropic/hh-rlhf --data-dir harmless-base --split test --category safety
    rlhf reward calibrate --model my_rm --kind safety --data my_heldout_pairs.jsonl   # -> my_rm/calibration.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from core.cli import run_guarded
from reward.combine import LLAMA2_SAFETY_PRECISION, LLAMA2_SAFETY_RECALL, LLAMA2_SAFETY_THRESHOLD


def load_eval_pairs(args: argparse.Namespace):
    """(pairs, name, noise-free judge agreement or None, LoadReport or None) of `--data`."""
    load_report, agreement = None, None
    if args.data == "toyworld":
        from core.sources import toyworld_gold_agreement, toyworld_preference_pairs

        pairs = toyworld_preference_pairs("heldout", args.n, args.seed)
        pairs = pairs if args.limit is None else pairs[: args.limit]
        # toyworld knows each pair's noise-free judgement: report that judge's accuracy too
        agreement = toyworld_gold_agreement(pairs)
        name = "toyworld_heldout"
    else:
        from core.data import LoadReport, load_preferences

        load_report = LoadReport()
        # --limit is a source's `limit`: rows past it are not read, so a bad one there cannot stop the run
        pairs = load_preferences(args.data, adapter=args.adapter, category=args.category, split=args.split,
                                 data_dir=args.data_dir, subset=args.subset, on_bad=args.on_bad, limit=args.limit,
                                 report=load_report)
        if Path(args.data).exists():
            name = Path(args.data).name.split(".")[0]
        else:
            name = "_".join([args.data.replace("/", "_"), *filter(None, [args.data_dir, args.subset])])
    return pairs, name, agreement, load_report


def evaluate_command(args: argparse.Namespace) -> int:
    from core.io import atomic_write_json
    from reward.evaluate import evaluate_pairs, format_table, safety_line
    from reward.scorer import RewardScorer

    scorer = RewardScorer(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                          calibrated=not args.uncalibrated)
    pairs, name, agreement, load_report = load_eval_pairs(args)
    out = Path(args.out) if args.out else Path(args.model).parent / "eval"
    result = evaluate_pairs(scorer, pairs, out, name=name, threshold=args.threshold, max_length=args.max_length,
                            judge_agreement=agreement)
    calibration = None if scorer.calibration is None else str(Path(args.model) / "calibration.json")
    payload = {"model": str(args.model), "data": args.data, "adapter": args.adapter, "category": args.category,
               "split": args.split, "data_dir": args.data_dir, "subset": args.subset, "limit": args.limit,
               "calibration": calibration, name: result}
    if load_report is not None:
        payload["load_report"] = asdict(load_report)  # what was read, and every bad record left out
    atomic_write_json(out / "eval.json", payload)
    rows = {Path(args.model).parent.name or str(args.model): result}
    if "judge_ceiling" in result:
        rows["noise-free judge (ceiling)"] = result["judge_ceiling"]
    print(format_table(rows))
    line = safety_line(result)
    if line:
        print(line)
    if load_report is not None and load_report.n_skipped:
        print(f"left out {load_report.n_skipped} bad records (--on-bad skip), first: {load_report.first_skipped}")
    print(f"pairs: {result['n_pairs']} ({result['n_overlong']} overlong left out); wrote {out / 'eval.json'}")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    """Fit an existing RM folder's calibration on held-out pairs -> MODEL/calibration.json
    (what `rlhf reward train` does after training; for older runs and your own RMs)."""
    import torch

    from core.errors import DataError
    from reward.calibration import (
        calibration_data,
        cross_fitted_logits,
        data_hash,
        fit_calibration,
        write_calibration,
    )
    from reward.evaluate import safety_precision_recall, score_pairs
    from reward.scorer import RewardScorer

    scorer = RewardScorer(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    pairs, name, _, load_report = load_eval_pairs(args)
    scored = score_pairs(scorer, pairs, args.max_length)
    data = calibration_data(scored.pairs, scored.chosen, scored.rejected, args.kind)
    source = (f"toyworld:heldout (n={args.n}, seed={args.seed}, limit={args.limit})" if args.data == "toyworld"
              else " ".join(filter(None, [args.data, args.data_dir, args.subset, f"split={args.split}",
                                          f"limit={args.limit}" if args.limit else None])))
    try:
        calibration = fit_calibration(data, args.kind, [source], data_hash(scored.pairs))
    except ValueError as exc:
        raise DataError(f"cannot calibrate on {args.data}: {exc}") from None
    path = write_calibration(scorer.path, calibration)
    print(f"{calibration.method} on {calibration.n} responses of {name} ({calibration.target}): "
          f"p = σ({calibration.a:.4f}·r + {calibration.b:.4f}); log-loss {calibration.log_loss_before:.4f} -> "
          f"{calibration.log_loss_after:.4f} (cross-fitted: {calibration.log_loss_cross_fitted})")
    if data.basis == "safety_labels":
        unsafe = (data.labels < 0.5).tolist()
        logits = cross_fitted_logits(data.scores, data.labels, data.folds)
        for what, probs in (("σ(r)", torch.sigmoid(data.scores)), ("calibrated", calibration.prob(data.scores)),
                            ("cross-fitted", None if logits is None else torch.sigmoid(logits))):
            if probs is not None:
                pr = safety_precision_recall(probs.tolist(), unsafe, args.threshold)
                print(f"safety @ {args.threshold} ({what}): precision {pr['precision']}, recall {pr['recall']} "
                      f"(n={pr['n']}, unsafe={pr['n_unsafe']}); paper: {LLAMA2_SAFETY_PRECISION}, {LLAMA2_SAFETY_RECALL}")
    if load_report is not None and load_report.n_skipped:
        print(f"left out {load_report.n_skipped} bad records (--on-bad skip), first: {load_report.first_skipped}")
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rlhf reward", description="Train or evaluate a reward model (helpfulness or safety).")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one reward model (kind=helpfulness|safety)")
    train.add_argument("--config", help="YAML preset (configs/reward/*.yaml)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys")

    ev = sub.add_parser("eval", help="accuracy per rating and category, safety precision/recall, histograms -> eval.json")
    cal = sub.add_parser("calibrate", help="fit an RM folder's calibration.json on held-out pairs (older runs, your own RMs)")
    for command in (ev, cal):
        command.add_argument("--model", required=True, help="a reward-model folder")
        command.add_argument("--data", default="toyworld", help="toyworld (held-out pairs), a file, or a hub dataset")
        command.add_argument("--adapter", default=None, help="format adapter, e.g. hh-rlhf (default: detected)")
        command.add_argument("--category", choices=["helpfulness", "safety"], default=None,
                             help="the category of pairs that carry none (HH-RLHF: instead of the guess from the file name; "
                                  "PKU-SafeRLHF: keep only that pair), as a source's `category` key")
        command.add_argument("--split", default="train", help="split of a folder or hub dataset (default: train)")
        command.add_argument("--data-dir", default=None, help="folder of a hub dataset, e.g. harmless-base (a source's `data_dir`)")
        command.add_argument("--subset", default=None, help="config of a hub dataset (a source's `subset`)")
        command.add_argument("--n", type=int, default=300, help="toyworld: number of held-out pairs")
        command.add_argument("--seed", type=int, default=1234, help="toyworld: seed of the held-out pairs")
        command.add_argument("--limit", type=int, default=None,
                             help="use only the first N pairs (rows past them are not read, nor checked)")
        command.add_argument("--on-bad", choices=["error", "skip"], default="error",
                             help="a malformed record in --data: stop with an error naming its line (default), or "
                                  "leave it out (and, for eval, list it in eval.json's load_report)")
        command.add_argument("--max-length", type=int, default=1024, help="pairs longer than this (tokens) are counted and left out")
        command.add_argument("--threshold", type=float, default=LLAMA2_SAFETY_THRESHOLD,
                             help="safety threshold on the RM's probability: sigma(a*score + b) with the folder's "
                                  "calibration.json, else sigma(score)")
        command.add_argument("--batch-size", type=int, default=16)
        command.add_argument("--device", default="cpu")
        command.add_argument("--dtype", default="float32")
    ev.add_argument("--out", default=None, help="output folder (default: MODEL/../eval)")
    ev.add_argument("--uncalibrated", action="store_true", help="ignore the folder's calibration.json (probabilities sigma(score))")
    cal.add_argument("--kind", choices=["helpfulness", "safety"], required=True,
                     help="the RM's kind: safety fits P(safe | score) on safety labels where the data has them")

    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    if args.command == "train":

        def go() -> int:
            from core.config import load_config
            from reward.config import RewardConfig
            from reward.train import run

            run(load_config(RewardConfig, args.config, args.overrides))
            return 0

        return run_guarded(go)
    if args.command == "calibrate":
        return run_guarded(lambda: calibrate_command(args))
    return run_guarded(lambda: evaluate_command(args))


if __name__ == "__main__":
    sys.exit(main())
