"""What the machine can do, measured in the same run as the benchmark that uses it:
matmul FLOP/s per dtype and memory read bandwidth (the decode bound's denominator)."""

from __future__ import annotations

import os
import platform
import time

import torch


def matmul_flops(dtype: torch.dtype, n: int | None = None, repeats: int = 10, device: str = "cpu") -> float:
    """Achieved FLOP/s of an n x n x n matmul (best of `repeats`); n defaults to 1024
    on the CPU and 8192 on a GPU (a small product does not fill a GPU)."""
    cuda = device.startswith("cuda")
    n = n or (8192 if cuda else 1024)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of reading a large buffer once (a sum over it), best of `repeats`."""
    buffer = torch.ones(megabytes * (1 << 20) // 4, dtype=torch.float32)
    buffer.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best


def describe() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU threads, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"
