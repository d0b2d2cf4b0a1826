"""Margin ablation (Llama 2, Table 28): the same data and seed, margin none / small / large.

    python -m reward.ablation --config configs/reward/quickstart.yaml --out runs/ablation_margin [key=value ...]

Trains one RM per margin scheme (each a normal reward stage folder, so a rerun
skips finished ones), then prints and writes `<out>/table.md`: held-out toyworld
accuracy per rating level, per category and overall.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import run_guarded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="reward preset to ablate")
    parser.add_argument("--out", required=True, help="folder for the three runs and table.md")
    parser.add_argument("--schemes", nargs="+", default=["none", "small", "large"])
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    args = parser.parse_args(argv)

    def go() -> int:
        from core.config import load_config
        from core.io import atomic_write_text
        from reward.config import RewardConfig
        from reward.evaluate import format_table
        from reward.train import run

        out = Path(args.out)
        results = {}
        for scheme in args.schemes:
            folder = out / f"margin_{scheme}"
            config = load_config(RewardConfig, args.config, [*args.overrides, f"margin={scheme}", f"output_dir={folder}"])
            run(config)
            results[f"margin {scheme}"] = json.loads((folder / "eval.json").read_text())["toyworld"]
        table = format_table(results)
        command = " ".join(["python -m reward.ablation", "--config", args.config, "--out", args.out, *args.overrides])
        atomic_write_text(out / "table.md", f"Held-out toyworld accuracy (%), `{command}`\n\n{table}\n")
        print(table)
        return 0

    return run_guarded(go)


if __name__ == "__main__":
    sys.exit(main())
