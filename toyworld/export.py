"""Write the toy world to JSONL files that the stages read.

    python -m toyworld export --out DIR [--seed N]      (also `rlhf toyworld export`)

Files (one JSON object a line, UTF-8, each written atomically):

    prompts_train.jsonl, prompts_heldout.jsonl          Prompt records (+ "kind")
    sft_train.jsonl                                     SFT examples
    preferences_train.jsonl, preferences_heldout.jsonl  Preference pairs
    dialogues_train.jsonl, dialogues_heldout.jsonl      multi-turn benign dialogues
    gatt_instructions.jsonl                             GAtt instructions (+ "split")
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.io import write_jsonl
from toyworld import world
from toyworld.gatt_instructions import build_instructions

DEFAULT_SIZES = {
    "prompts_train": 400,
    "prompts_heldout": 200,
    "sft_train": 300,
    "preferences_train": 2000,
    "preferences_heldout": 400,
    "dialogues_train": 100,
    "dialogues_heldout": 40,
    "dialogue_turns": 6,
}


def build_all(seed: int = 0, **sizes: int) -> dict[str, list[dict]]:
    """Every exported dataset, by file stem. `sizes` override DEFAULT_SIZES."""
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f"unknown sizes {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}")
    size = {**DEFAULT_SIZES, **sizes}
    turns = size["dialogue_turns"]
    instructions = [
        {**instruction.to_dict(), "split": split}
        for split in ("train", "heldout")
        for instruction in build_instructions(split, seed)
    ]
    return {
        "prompts_train": world.build_prompts("train", size["prompts_train"], seed),
        "prompts_heldout": world.build_prompts("heldout", size["prompts_heldout"], seed),
        "sft_train": world.build_sft_examples("train", size["sft_train"], seed),
        "preferences_train": world.build_preference_pairs("train", size["preferences_train"], seed),
        "preferences_heldout": world.build_preference_pairs("heldout", size["preferences_heldout"], seed),
        "dialogues_train": world.build_dialogues("train", size["dialogues_train"], turns, seed),
        "dialogues_heldout": world.build_dialogues("heldout", size["dialogues_heldout"], turns, seed),
        "gatt_instructions": instructions,
    }


def export(out_dir: str | os.PathLike, seed: int = 0, **sizes: int) -> dict[str, Path]:
    """Write every dataset as `<out_dir>/<name>.jsonl`; returns the written paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in build_all(seed, **sizes).items():
        path = out / f"{name}.jsonl"
        write_jsonl(path, rows)
        written[name] = path
    return written


def main(argv: list[str] | None = None) -> int:
    """CLI: `export --out DIR [--seed N] [--size NAME=COUNT ...]`."""
    parser = argparse.ArgumentParser(prog="rlhf toyworld", description="Export the embedded task world as JSONL.")
    commands = parser.add_subparsers(dest="command", required=True)
    export_cmd = commands.add_parser("export", help="write prompts, SFT data, preferences, dialogues, GAtt instructions")
    export_cmd.add_argument("--out", required=True, help="output folder")
    export_cmd.add_argument("--seed", type=int, default=0)
    export_cmd.add_argument(
        "--size", action="append", default=[], metavar="NAME=COUNT",
        help=f"override a size; names: {', '.join(DEFAULT_SIZES)}",
    )
    args = parser.parse_args(argv)
    sizes = {}
    for item in args.size:
        name, _, count = item.partition("=")
        if name not in DEFAULT_SIZES or not count.isdigit():
            parser.error(f"--size expects NAME=COUNT with NAME in {', '.join(DEFAULT_SIZES)}, got {item!r}")
        sizes[name] = int(count)
    for path in export(args.out, args.seed, **sizes).values():
        with open(path, encoding="utf-8") as handle:
            print(f"{sum(1 for _ in handle):6d}  {path}")
    return 0
