"""Print a benchmark's table and append it, with machine, command and date, to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from benchmarks.machine import describe

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, table: str, notes: str = "") -> None:
    command = "python -m benchmarks " + " ".join(sys.argv[1:])
    block = (
        f"\n## {title}\n\n"
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n- machine: {describe()}\n- command: `{command}`\n\n"
        f"{table}\n" + (f"\n{notes}\n" if notes else "")
    )
    print(block)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by `python -m benchmarks <name>`.\n")
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(block)
