"""The `rlhf` console command: a thin dispatcher to each stage's own CLI.

`rlhf sft --config configs/sft/quickstart.yaml epochs=2` is the same as
`python -m sft --config configs/sft/quickstart.yaml epochs=2` (and as
`accelerate launch -m sft ...`). A user-facing error (`RLHFError`: bad config,
bad data, bad model folder) is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from core.errors import RLHFError


def one_line(message: object) -> str:
    """The message on one line (a wrapped library error must not spill over several)."""
    return re.sub(r"\s*\n\s*", " ", str(message)).strip()


def close_progress_bars() -> None:
    """Close the tqdm bars a failed stage left open, so that what follows starts a new line."""
    tqdm = sys.modules.get("tqdm.std")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()


# command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("sft.cli", "stage 1: supervised fine-tuning, loss on answer tokens only"),
    "reward": ("reward.cli", "stage 2: train or evaluate the helpfulness and safety reward models"),
    "rs": ("rejection_sampling.cli", "stage 3a: rejection-sampling fine-tuning, best of K pooled over iterations"),
    "ppo": ("ppo.cli", "stage 3b: PPO under Llama 2's safety-gated reward"),
    "gatt": ("gatt.cli", "stage 4: Ghost Attention data synthesis, fine-tuning and evaluation"),
    "run": ("pipelines.cli", "run a whole pipeline YAML (SFT, RMs, versions V1..Vn, GAtt), resumable"),
    "report": ("pipelines.report", "draw a run's curves as PNG files and one HTML page"),
    "eval": ("pipelines.evaluate", "public benchmarks (XSTest) and held-out toyworld evaluation of a model"),
    "data": ("core.data.inspect", "`data inspect FILE`: format, counts by category and rating, lengths, bad rows"),
    "toyworld": ("toyworld.__main__", "export the embedded task world as JSONL"),
}

C = TypeVar("C")


def run_guarded(fn: Callable[[], int | None]) -> int:
    """Run `fn`; a user-facing error becomes one line on stderr and exit status 2."""
    try:
        code = fn()
    except RLHFError as exc:
        close_progress_bars()  # a bar left mid-line by the failed stage would swallow the error's start
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return int(code or 0)


def stage_main(
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    config_cls: type[C],
    run: Callable[[C], object],
) -> int:
    """The CLI every stage shares: `--config FILE` plus `key=value` overrides."""
    from core.config import load_config

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="YAML config file (a preset under configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys")
    args = parser.parse_args(argv)

    def go() -> int:
        config = load_config(config_cls, args.config, args.overrides)
        run(config)
        return 0

    return run_guarded(go)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Llama 2-Chat alignment: SFT, reward models, rejection sampling, PPO, Ghost Attention.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\n`rlhf COMMAND --help` shows a command's options.",
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv[:1])
    module_name, _ = COMMANDS[args.command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"error: `rlhf {args.command}` is not available in this version yet", file=sys.stderr)
            return 2
        raise
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
