"""`rlhf data inspect FILE`: what a data source holds, read exactly as the stages read it.

    rlhf data inspect my_pairs.jsonl
    rlhf data inspect hh.jsonl.gz --kind preferences --category safety --tokenizer embedded:tiny-llama
    python -m core.data.inspect my_sft.parquet --limit 100

Prints the kind (SFT examples, prompts or preference pairs; detected from the first
record unless `--kind`), the format (adapter; detected unless `--adapter`), how many
records were read, loaded and left out as bad, counts by category and by rating,
length quantiles (p50/p90/p99/max) of prompts and answers (characters, or tokens of
`--tokenizer`), and the first bad rows with file, line and reason. Bad rows never stop
an inspection (they are what it is for); a source that cannot be read at all (no such
file, broken JSON list, a format that cannot be told) exits 2 with a one-line error,
and so does one without a single usable row. `--json` prints the same as one object.

Steps, each a small function: `choose_kind` -> `load_for_inspection` -> `summarize`
(counts and `length_table`, built on `quantiles`) -> `format_summary`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence

from core.data.adapters import ADAPTERS, detect_kind
from core.data.loaders import KIND_NAMES, LOCATED, LoadReport
from core.data.readers import load_records
from core.data.schemas import CATEGORIES, RATINGS
from core.errors import DataError

KINDS = ("sft", "prompts", "preferences")
QUANTILES = (0.5, 0.9, 0.99)
MAX_BAD_SHOWN = 10


# ---------------------------------------------------------------- 1. pure helpers
def quantiles(values: Sequence[float], qs: Sequence[float] = QUANTILES) -> list[float]:
    """Nearest-rank quantiles: the smallest value with at least `q` of the values at or below it.

    [1, 2, 3, 4] -> p50 = 2, p90 = 4; [] -> [] (nothing to measure)."""
    if not values:
        return []
    ordered = sorted(values)
    return [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in qs]


def texts_of(kind: str, row: dict) -> dict[str, str]:
    """The parts of a canonical row whose lengths are reported, by name."""
    if kind == "sft":
        messages = row["messages"]
        return {
            "prompt": "\n".join(m["content"] for m in messages if m["role"] != "assistant"),
            "answer": "\n".join(m["content"] for m in messages if m["role"] == "assistant"),
        }
    if kind == "prompts":
        return {"prompt": "\n".join(m["content"] for m in row["messages"])}
    return {
        "prompt": "\n".join(m["content"] for m in row["prompt"]),
        "chosen": row["chosen"],
        "rejected": row["rejected"],
    }


def length_table(kind: str, rows: list[dict], measure: Callable[[str], int]) -> dict[str, dict]:
    """`{part: {"n", "p50", "p90", "p99", "max"}}` of each part's length under `measure`."""
    lengths: dict[str, list[int]] = {}
    for row in rows:
        for part, text in texts_of(kind, row).items():
            lengths.setdefault(part, []).append(measure(text))
    table = {}
    for part, values in lengths.items():
        p50, p90, p99 = quantiles(values)
        table[part] = {"n": len(values), "p50": p50, "p90": p90, "p99": p99, "max": max(values)}
    return table


def counts(rows: list[dict], key: str, order: Sequence[str]) -> dict[str, int]:
    """How many rows have each value of `key`, in `order` (values outside it last)."""
    found = Counter(row[key] for row in rows if key in row)
    return {
        value: found[value] for value in [*order, *sorted(set(found) - set(order))] if found[value]
    }


# ---------------------------------------------------------------- 2. reading
def choose_kind(
    source: str,
    kind: str | None,
    adapter: str | None,
    split: str,
    data_dir: str | None = None,
    subset: str | None = None,
) -> tuple[str, bool]:
    """(kind, detected?): `kind` as given, else what the first record looks like."""
    if kind is not None:
        return kind, False
    records = load_records(source, split, bad_lines=[], data_dir=data_dir, subset=subset)
    if not records:
        raise DataError("no readable records", path=source)
    location, first = records[0]
    detected = detect_kind(first)
    if adapter is not None and adapter in ADAPTERS:
        offered = [k for k in ("preferences", "sft", "prompts") if ADAPTERS[adapter].converter(k)]
        if detected not in offered and offered:
            detected = offered[0]
    if detected is None:
        fields = ", ".join(sorted(first)) or "none"
        raise location.error(
            f"cannot tell whether this holds SFT examples, prompts or preference pairs from the "
            f"fields ({fields}); pass --kind sft|prompts|preferences (and --adapter: {', '.join(ADAPTERS)})"
        )
    return detected, True


def load_for_inspection(
    source: str,
    kind: str,
    adapter: str | None,
    category: str | None,
    limit: int | None,
    split: str,
    report: LoadReport,
    data_dir: str | None = None,
    subset: str | None = None,
) -> list[dict]:
    """Every usable row of `kind`, bad ones counted in `report` (always `on_bad="skip"`)."""
    keys: dict = {
        "split": split,
        "data_dir": data_dir,
        "subset": subset,
        "on_bad": "skip",
        "limit": limit,
        "adapter_key": "--adapter",
        "report": report,
    }
    if kind == "sft":
        keys["require_answer"] = True  # what SFT would count as a bad example is shown as one
    else:
        keys["category"] = category
    return [row for _, row in LOCATED[kind](source, adapter, **keys)]


def token_counter(tokenizer_name: str | None) -> tuple[Callable[[str], int], str]:
    """(length function, unit): characters, or tokens of a tokenizer (no special tokens)."""
    if tokenizer_name is None:
        return len, "characters"
    from core.models import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    return (
        lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    ), f"tokens of {tokenizer_name}"


# ---------------------------------------------------------------- 3. summary
def summarize(
    source: str,
    kind: str | None = None,
    adapter: str | None = None,
    *,
    category: str | None = None,
    limit: int | None = None,
    split: str = "train",
    tokenizer: str | None = None,
    data_dir: str | None = None,
    subset: str | None = None,
) -> dict:
    """The inspection of one source, as a JSON-ready dict (see the module docstring)."""
    kind, kind_detected = choose_kind(source, kind, adapter, split, data_dir, subset)
    report = LoadReport()
    rows = load_for_inspection(
        source, kind, adapter, category, limit, split, report, data_dir, subset
    )
    if not rows:
        raise DataError(
            f"no usable {KIND_NAMES[kind]}: all {report.n_read} records are bad "
            f"(first: {report.first_skipped})",
            path=source,
        )
    measure, unit = token_counter(tokenizer)
    return {
        "source": report.source or str(source),
        "kind": kind,
        "kind_detected": kind_detected,
        "adapter": report.adapter,
        "adapter_detected": adapter is None,
        "n_records": report.n_records,
        "n_read": report.n_read,
        "n_loaded": len(rows),
        "n_bad": report.n_skipped,
        "limit": limit,
        "by_category": counts(rows, "category", CATEGORIES),
        "by_rating": counts(rows, "rating", RATINGS),
        "length_unit": unit,
        "lengths": length_table(kind, rows, measure),
        "bad_rows": report.skipped,
    }


def format_summary(summary: dict) -> str:
    """The summary as the aligned text `rlhf data inspect` prints."""

    def how(detected: bool, flag: str) -> str:
        return f"detected; {flag} to override" if detected else "as given"

    def spread(values: dict[str, int]) -> str:
        return ", ".join(f"{name} {n}" for name, n in values.items()) or "-"

    noun = KIND_NAMES[summary["kind"]]
    read = summary["n_read"]
    rows_line = f"{summary['n_records']} records"
    if read < summary["n_records"]:
        rows_line += f", first {read} read (--limit {summary['limit']})"
    rows_line += f"; {summary['n_loaded']} {noun} loaded, {summary['n_bad']} bad rows left out"
    lines = [
        f"source    {summary['source']}",
        f"kind      {summary['kind']} ({how(summary['kind_detected'], '--kind')})",
        f"format    {summary['adapter']} ({how(summary['adapter_detected'], '--adapter')})",
        f"rows      {rows_line}",
    ]
    if summary["kind"] != "sft":
        lines.append(f"category  {spread(summary['by_category'])}")
    if summary["kind"] == "preferences":
        lines.append(f"rating    {spread(summary['by_rating'])}")
    lines.append(f"lengths   in {summary['length_unit']}")
    lines.append(f"          {'':<9}{'n':>6}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for part, row in summary["lengths"].items():
        lines.append(
            f"          {part:<9}{row['n']:>6}{row['p50']:>8}{row['p90']:>8}{row['p99']:>8}{row['max']:>8}"
        )
    bad = summary["bad_rows"]
    if not bad:
        lines.append("bad rows  none")
    else:
        lines.append(f"bad rows  {summary['n_bad']} (the first {min(len(bad), MAX_BAD_SHOWN)}):")
        lines.extend(f"          {text}" for text in bad[:MAX_BAD_SHOWN])
    return "\n".join(lines)


# ---------------------------------------------------------------- 4. command line
def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="FILE",
        help="a file (.jsonl, .jsonl.gz, .json, .parquet, .csv), a folder or a hub dataset name",
    )
    parser.add_argument(
        "--kind", choices=KINDS, help="read as this kind (default: detected from the first record)"
    )
    parser.add_argument(
        "--adapter",
        choices=list(ADAPTERS),
        help="read in this format (default: detected from the first record)",
    )
    parser.add_argument(
        "--tokenizer",
        help="measure lengths in this tokenizer's tokens, e.g. embedded:tiny-llama (default: characters)",
    )
    parser.add_argument(
        "--category",
        choices=CATEGORIES,
        help="the category of rows that carry none (as a source's `category` key)",
    )
    parser.add_argument(
        "--limit", type=int, help="read only the first N rows (as a source's `limit` key)"
    )
    parser.add_argument(
        "--split", default="train", help="split of a folder or hub dataset (default: train)"
    )
    parser.add_argument(
        "--data-dir",
        help="folder of a hub dataset, e.g. harmless-base (as a source's `data_dir` key)",
    )
    parser.add_argument("--subset", help="config of a hub dataset (as a source's `subset` key)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@contextlib.contextmanager
def quiet_loader_log():
    """The loaders log a summary line with the first bad row; the inspection prints them all."""
    logger = logging.getLogger("core.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def inspect_command(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit must be a positive integer, got {args.limit}")
    with quiet_loader_log():
        summary = summarize(
            args.source,
            args.kind,
            args.adapter,
            category=args.category,
            limit=args.limit,
            split=args.split,
            tokenizer=args.tokenizer,
            data_dir=args.data_dir,
            subset=args.subset,
        )
    print(
        json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary)
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`rlhf data SUBCOMMAND ...` (today: `inspect`)."""
    from core.cli import run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rlhf data", description="Look at data files before a stage reads them."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="detected kind and format, counts by category and rating, length quantiles, first bad rows",
        description=__doc__.split("\n\n")[0],
    )
    add_inspect_arguments(inspect)
    args = parser.parse_args(argv)
    return run_guarded(lambda: inspect_command(args))


if __name__ == "__main__":  # python -m core.data.inspect FILE [options]
    sys.exit(main(["inspect", *sys.argv[1:]]))
