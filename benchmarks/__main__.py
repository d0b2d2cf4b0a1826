"""`python -m benchmarks <name> [options]`: run one benchmark, print its table and
append it to benchmarks/RESULTS.md. Names: generation, matmul, training, ppo, rs,
eval_precision."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "generation": "benchmarks.generation",
    "matmul": "benchmarks.matmul",
    "training": "benchmarks.training",
    "ppo": "benchmarks.ppo",
    "rs": "benchmarks.rs",
    "eval_precision": "benchmarks.eval_precision",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(__doc__)
        print("available:", ", ".join(BENCHMARKS))
        raise SystemExit(2)
    importlib.import_module(BENCHMARKS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
