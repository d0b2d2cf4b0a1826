"""Draw rejection sampling's max/median reward curve (the paper's Figure 7) as a PNG.

    python -m rejection_sampling.plot RUN_DIR            # RUN_DIR/curve.json -> RUN_DIR/curve.png
    python -m rejection_sampling.plot RUN_DIR --out x.png

`plot_curve(curve_json, png)` is what the stage and the run report call.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.cli import run_guarded  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.io import atomic_open  # noqa: E402


def read_curve(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "curve.json"
    if not path.is_file():
        raise DataError("no such file (run the rejection-sampling stage first)", path=path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):  # a bare list of points
        data = {"curve": data}
    for i, point in enumerate(data.get("curve", [])):
        for key in ("k", "max", "median"):
            if key not in point:
                raise DataError(f"curve point {i} has no '{key}'", path=path, field=f"curve[{i}].{key}")
    return data


def plot_curve(curve_json: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Max and median reward among the first k samples against k (log2 axis), with the gap shaded."""
    data = read_curve(curve_json)
    points = data["curve"]
    ks = [p["k"] for p in points]
    maxes = [p["max"] for p in points]
    medians = [p["median"] for p in points]
    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.plot(ks, maxes, marker="o", label="max of k")
    axis.plot(ks, medians, marker="o", linestyle="--", label="median of k")
    axis.fill_between(ks, medians, maxes, alpha=0.15, label="gap (what RS harvests)")
    axis.set_xscale("log", base=2)
    axis.set_xticks(ks, [str(k) for k in ks])
    axis.set_xlabel("samples per prompt k")
    axis.set_ylabel("reward R_c (mean over prompts)")
    title = "Rejection sampling: max vs median reward"
    if "iteration" in data:
        title += f" (V{data['iteration']}, T={data.get('temperature')})"
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    with atomic_open(png, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rejection_sampling.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a rejection-sampling stage folder (or its curve.json)")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curve.png)")
    args = parser.parse_args(argv)

    def go() -> int:
        source = Path(args.run_dir)
        out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "curve.png"
        print(plot_curve(source, out))
        return 0

    return run_guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
