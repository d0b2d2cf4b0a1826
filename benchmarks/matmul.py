"""The machine's ceilings: matmul FLOP/s in fp32 and bf16, and memory read bandwidth."""

from __future__ import annotations

import argparse

import torch

from benchmarks.machine import matmul_flops, memory_bandwidth
from benchmarks.results import markdown_table, report


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m benchmarks matmul").parse_args(argv)
    rows = [[name, f"{matmul_flops(dtype) / 1e9:.0f}"] for name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16)]]
    rows.append(["memory read (GB/s)", f"{memory_bandwidth() / 1e9:.1f}"])
    report("Machine ceilings", markdown_table(["what", "GFLOP/s (or GB/s)"], rows))
