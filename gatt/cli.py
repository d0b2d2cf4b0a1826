"""`rlhf gatt` (and `python -m gatt`): run the stage, synthesise data only, or evaluate.

    rlhf gatt run --config configs/gatt/quickstart.yaml [key=value ...]
    rlhf gatt synthesize --config configs/gatt/quickstart.yaml [--out data.jsonl] [key=value ...]
    rlhf gatt eval --model runs/gatt/sft/model [--baseline embedded:smollm2-135m] [--instructions FILE]
                   [--dialogues FILE] [--turns 1,2,4,6,10,15,20] [--config ...] [--out DIR] [key=value ...]

`rlhf gatt --config ...` (no subcommand) is `run`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from core.cli import run_guarded, stage_main
from gatt.config import GattConfig

SUBCOMMANDS = ("run", "synthesize", "eval")


def _base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="YAML config file (a preset under configs/gatt/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys")
    return parser


def synthesize_main(argv: Sequence[str]) -> int:
    parser = _base_parser("rlhf gatt synthesize", "Synthesise GAtt training data (learn-last SFT JSONL) with config.model.")
    parser.add_argument("--out", help="output JSONL (default: OUTPUT_DIR/gatt_data.jsonl); counts go beside it as .stats.json")
    args = parser.parse_args(argv)

    def go() -> int:

        from core.config import load_config
        from core.distributed import check_launch, process_state
        from core.io import atomic_write_json
        from gatt.train import DATA, check_models, load_policy, process_device, synthesize_data

        config = load_config(GattConfig, args.config, args.overrides)
        state = process_state()  # under a launch: the shards split over its processes
        check_launch(config.distributed, state.num_processes)
        check_models(config)  # the model and the ranking RMs, one line naming the key
        out = Path(args.out) if args.out else Path(config.output_dir) / DATA
        model, tokenizer = load_policy(config.model, config, process_device(config, state))
        stats = synthesize_data(config, model, tokenizer, out, state)
        if not state.is_main_process:
            return 0
        atomic_write_json(out.with_suffix(".stats.json"), stats)
        print(f"wrote {stats['n_examples']} examples to {out}: {stats['n_kept']} dialogues kept, {stats['n_dropped']} dropped "
              f"(no adhering sample of K={config.synthesis.k}; dropped at turn {stats['dropped_at_turn']}); kept: "
              f"{stats['kept_combined']} combinations, {stats['kept_short']} short forms, {stats['kept_unchecked']} unchecked "
              f"(ranked by {config.synthesis.ranking.by} only); repaired answers: {stats['repairs']['n_answers']}")
        return 0

    return run_guarded(go)


def eval_main(argv: Sequence[str]) -> int:
    parser = _base_parser(
        "rlhf gatt eval",
        "Adherence per turn to a held-out instruction given once in turn 1, and repeated in every user turn "
        "(the ceiling), on held-out dialogues: the paper's Table 30 as DIR/eval.json.",
    )
    parser.add_argument("--model", required=True, help="the model to evaluate (reported as 'after' when --baseline is given, else 'model')")
    parser.add_argument("--baseline", help="a model to compare with (reported as 'before'), e.g. the model before GAtt")
    parser.add_argument("--instructions", help="a JSONL instruction library: its lines with \"split\": \"heldout\", or every line "
                                               "if it has none (sets instructions.source or instructions.heldout_source; every kind "
                                               "of the file unless eval.kinds or instructions.kinds is given)")
    parser.add_argument("--dialogues", help="held-out dialogues, {\"messages\": [...]} lines whose user turns are played in order "
                                            "(assistant turns ignored; shorter dialogues extended by eval.extend) (eval.dialogues_source)")
    parser.add_argument("--turns", help="the turns to report, e.g. 1,2,4,6,10,15,20 (eval.turns; played to the last one)")
    parser.add_argument("--out", help="folder for eval.json and adherence.png (default: OUTPUT_DIR/eval)")
    args = parser.parse_args(argv)

    def go() -> int:
        from core.config import load_config
        from core.model_paths import check_config_models
        from gatt.evaluate import EVAL_JSON, table_markdown
        from gatt.train import eval_cases_and_extension, load_policy, run_evaluation

        config = load_config(GattConfig, args.config, [*eval_flag_overrides(args), *args.overrides])
        check_config_models([("--baseline", args.baseline, "policy"), ("--model", args.model, "policy")])
        out = Path(args.out) if args.out else Path(config.output_dir) / "eval"
        cases = eval_cases_and_extension(config)  # a bad instruction or dialogue file fails before any model loads
        before = (args.baseline, *load_policy(args.baseline, config)) if args.baseline else None
        report = run_evaluation(config, (args.model, *load_policy(args.model, config)), before, out, cases)
        print(table_markdown(report))
        print(f"wrote {out / EVAL_JSON}")
        return 0

    return run_guarded(go)


def eval_flag_overrides(args: argparse.Namespace) -> list[str]:
    """`rlhf gatt eval`'s flags as config overrides (key=value ones given after them win)."""
    import json

    # eval samples nothing for training: a preset that ranks by reward_model loads without RM paths
    overrides = ["synthesis.ranking.by=first"]
    if args.instructions:
        from gatt.instructions import load_library

        has_heldout = any(split == "heldout" for split, _ in load_library(args.instructions))
        key = "instructions.source" if has_heldout else "instructions.heldout_source"
        overrides += [f"{key}={json.dumps(args.instructions)}", "instructions.kinds=null"]
    if args.dialogues:
        overrides.append(f"eval.dialogues_source={json.dumps(args.dialogues)}")
    if args.turns:
        try:
            turns = [int(part) for part in args.turns.replace(" ", "").split(",") if part]
        except ValueError:
            from core.errors import ConfigError

            raise ConfigError(f"--turns: expected turn numbers separated by commas (1,2,4,6,10,15,20), got {args.turns!r}") from None
        overrides.append(f"eval.turns={json.dumps(turns)}")
    return overrides


def run_main(argv: Sequence[str]) -> int:
    from gatt.train import run

    return stage_main(argv, "rlhf gatt run", "Ghost Attention: synthesise, fine-tune (last turn only), evaluate per turn.", GattConfig, run)


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = (argv[0], argv[1:]) if argv[0] in SUBCOMMANDS else ("run", argv)
    return {"run": run_main, "synthesize": synthesize_main, "eval": eval_main}[command](rest)
