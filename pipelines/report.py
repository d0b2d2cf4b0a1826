"""`rlhf report RUN_DIR`: a run's curves as PNG files and one HTML page.

It reads what the stages wrote (nothing passes in memory): `metrics.jsonl` and
`eval.json` of every stage folder, rejection sampling's `curve.json`, the
reward models' `eval.json` (accuracy per rating; the safety RM's precision and recall at
the gate, calibrated, beside σ(r)'s and the paper's), GAtt's `eval.json`, and the pipeline's
`summary.json` (one row per version). Missing pieces are skipped, so a report
can be drawn for a partial run or for one stage folder.

Files: RUN_DIR/report/index.html and RUN_DIR/report/*.png.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.cli import run_guarded  # noqa: E402
from core.errors import RLHFError  # noqa: E402
from core.io import atomic_open, atomic_write_text  # noqa: E402
from core.run import read_manifest, read_metrics  # noqa: E402

PPO_CURVES = [
    ("rm_reward", "RM reward (mean R_c)"),
    ("kl", "KL to the initial policy"),
    ("gold_helpfulness", "gold helpfulness"),
    ("gold_safety", "gold safety"),
]
TABLE_COLUMNS = [
    ("rm_reward", "RM reward R_c"),
    ("rm_win_rate_vs_start", "RM win rate vs SFT"),
    ("refusal_rate", "refusals"),
    ("response_length", "length (tokens)"),
    ("truncation_rate", "truncated"),
    ("gold_helpfulness", "gold helpfulness"),
    ("gold_safety", "gold safety"),
    ("gold_combined", "gold combined"),
    ("refusal_rate_harmful", "refusals, harmful"),
    ("false_refusal_rate_borderline", "false refusals, borderline"),
    ("xstest_unsafe_refusal", "XSTest unsafe: refused"),
    ("xstest_safe_refusal", "XSTest safe: refused"),
]
STAGE_EVAL_COLUMNS = ["rm_reward", "refusal_rate", "response_length", "truncation_rate", "gold_combined"]


def table_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The columns some row has a value for (a run on the user's prompts has no gold columns)."""
    return [(key, name) for key, name in TABLE_COLUMNS if any(row.get(key) is not None for row in rows)]


def stage_evaluations(run_dir: Path, folders: list[tuple[str, Path]]) -> list[dict]:
    """One row per model of every stage's shared evaluation (`eval.json` with `models`):
    what a by-hand run has instead of the pipeline's per-version table."""
    rows = []
    for _, folder in folders:
        path = folder / "eval.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        if not isinstance(result.get("models"), dict):
            continue
        for name, summary in result["models"].items():
            row = {"stage": _label(run_dir, folder), "model_role": name, **summary}
            paired = (result.get("paired") or {}).get(name) or {}
            if "rm_win_rate" in paired:
                row["rm_win_rate"] = paired["rm_win_rate"]["rate"]
            for metric in STAGE_EVAL_COLUMNS:
                if metric in paired:
                    row[f"{metric}_diff"] = paired[metric]["diff"]
                    row[f"{metric}_diff_stderr"] = paired[metric]["diff_stderr"]
            rows.append(row)
    return rows


def safety_gate_rows(run_dir: Path, folders: list[Path]) -> list[dict]:
    """The safety RM as the gate's classifier of "unsafe", one row per held-out table of
    each safety RM's eval.json: precision and recall at the threshold with the
    probabilities the gate uses (calibrated where the RM has calibration.json), σ(r)'s
    beside them, and the paper's (reward.evaluate.PAPER_SAFETY)."""
    from reward.evaluate import PAPER_SAFETY

    rows = []
    for folder in folders:
        path = folder / "eval.json"
        if not path.is_file():
            continue
        full = json.loads(path.read_text())
        if full.get("kind", "safety") != "safety":
            continue  # the gate reads the safety RM only
        tables = [(name, full.get(key)) for key, name in (("heldout", "held-out (eval_data)"), ("toyworld", "toyworld held-out"))]
        cross = (full.get("calibration") or {}).get("safety_cross_fitted")
        if cross:
            tables.append(("all held-out, each half calibrated on the other", {"safety": {**cross, "calibrated": True}}))
        for name, table in tables:
            safety = (table or {}).get("safety") if isinstance(table, dict) else None
            if not safety:
                continue
            raw = table.get("safety_uncalibrated") or ({} if safety.get("calibrated") else safety)
            rows.append({"rm": _label(run_dir, folder), "pairs": name, "threshold": safety.get("threshold"),
                         "calibrated": "yes" if safety.get("calibrated") else "no",
                         "precision": safety.get("precision"), "recall": safety.get("recall"),
                         "n": f"{safety.get('n')} ({safety.get('n_unsafe')} unsafe)",
                         "precision_sigma": raw.get("precision"), "recall_sigma": raw.get("recall"),
                         "paper_precision": PAPER_SAFETY["precision"], "paper_recall": PAPER_SAFETY["recall"]})
    return rows


SAFETY_GATE_COLUMNS = [("rm", "safety RM"), ("pairs", "pairs"), ("threshold", "threshold"), ("calibrated", "calibrated"),
                       ("precision", "precision"), ("recall", "recall"), ("n", "responses"),
                       ("precision_sigma", "σ(r) precision"), ("recall_sigma", "σ(r) recall"),
                       ("paper_precision", "paper precision"), ("paper_recall", "paper recall")]


def missing_notes(rows: list[dict], images: dict[str, Path | None], has_summary: bool) -> list[str]:
    """Why each table or figure a full pipeline run has is absent from this one."""
    notes = []
    if not has_summary:
        notes.append("No per-version table: there is no summary.json here (only `rlhf run` writes one); "
                     "each stage's own before/after evaluation is in the stage table below.")
    elif rows:
        present = {key for key, _ in table_columns(rows)}
        if not present & {"gold_combined", "gold_helpfulness"}:
            notes.append("No gold columns: the held-out prompts are not toyworld's, so there is no ground truth; "
                         "the RM-judged columns are the measure.")
        if "rm_reward" not in present:
            notes.append("No RM columns: no evaluation had both reward models.")
        if not present & {"xstest_unsafe_refusal", "xstest_safe_refusal"}:
            notes.append("No XSTest columns: evaluation.xstest_data is not set.")
    reasons = {
        "ppo": ("PPO curves", "no PPO stage folder"),
        "rs": ("rejection-sampling max/median curve", "no rejection-sampling stage folder with curve.json"),
        "rm": ("RM accuracy per rating", "no reward-model folder with a held-out evaluation "
               "(set eval_data to held-out pairs, or eval_pairs with toyworld data)"),
        "gatt": ("GAtt adherence", "no GAtt stage folder with eval.json"),
    }
    for key, (what, why) in reasons.items():
        if images.get(key) is None:
            notes.append(f"No {what}: {why}.")
    return notes




def stage_folders(run_dir: Path) -> list[tuple[str, Path]]:
    """(stage name, folder) for every stage folder under run_dir, in path order."""
    found = []
    for manifest in sorted(run_dir.rglob("manifest.json")):
        if "checkpoints" in manifest.parts or "report" in manifest.parts:
            continue
        data = read_manifest(manifest.parent) or {}
        found.append((data.get("stage", manifest.parent.name), manifest.parent))
    return found


def _label(run_dir: Path, folder: Path) -> str:
    return str(folder.relative_to(run_dir)) if folder != run_dir else folder.name


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def plot_ppo(run_dir: Path, folders: list[Path], out: Path) -> Path | None:
    series = [(folder, read_metrics(folder)) for folder in folders]
    series = [(folder, rows) for folder, rows in series if rows]
    if not series:
        return None
    fig, axes = plt.subplots(1, len(PPO_CURVES), figsize=(4.2 * len(PPO_CURVES), 3.4))
    for axis, (key, title) in zip(axes, PPO_CURVES):
        for folder, rows in series:
            points = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
            if points:
                axis.plot(*zip(*points), marker=".", label=_label(run_dir, folder))
        axis.set_title(title)
        axis.set_xlabel("PPO iteration")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    path = out / "ppo_curves.png"
    _save(fig, path)
    return path


def plot_rs(run_dir: Path, folders: list[Path], out: Path) -> Path | None:
    curves = [(folder, json.loads((folder / "curve.json").read_text())) for folder in folders if (folder / "curve.json").is_file()]
    if not curves:
        return None
    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    for folder, curve in curves:
        points = curve["curve"] if isinstance(curve, dict) else curve
        ks = [p["k"] for p in points]
        line = axis.plot(ks, [p["max"] for p in points], marker="o", label=f"{_label(run_dir, folder)} max")
        axis.plot(ks, [p["median"] for p in points], marker="o", linestyle="--", color=line[0].get_color(), label=f"{_label(run_dir, folder)} median")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("samples per prompt k")
    axis.set_ylabel("reward")
    axis.set_title("Rejection sampling: max vs median reward (Figure 7)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    path = out / "rs_max_median.png"
    _save(fig, path)
    return path


def _accuracy_by_rating(result: dict, kind: str | None = None) -> dict | None:
    """Accuracy per rating level, on the pairs of the RM's own guideline (`kind`) where
    the evaluation has them, as in the paper's Table 8; else on all pairs."""
    own = (result.get("per_category_rating") or {}).get(kind)
    if own:
        return {rating: value["accuracy"] for rating, value in own.items()}
    for key in ("per_rating", "accuracy_by_rating", "by_rating"):
        if isinstance(result.get(key), dict):
            return {rating: (value["accuracy"] if isinstance(value, dict) else value) for rating, value in result[key].items()}
    return None


def plot_rm(run_dir: Path, folders: list[Path], out: Path) -> Path | None:
    bars = []
    for folder in folders:
        path = folder / "eval.json"
        if path.is_file():
            full = json.loads(path.read_text())
            kind = full.get("kind")
            # the user's held-out pairs (eval_data) and toyworld's, each a bar group
            tables = [(key, full[key]) for key in ("heldout", "toyworld") if isinstance(full.get(key), dict)] or [(None, full)]
            for key, table in tables:
                by_rating = _accuracy_by_rating(table, kind)
                pairs = " ".join(filter(None, [{"heldout": "held-out", "toyworld": "toyworld"}.get(key), kind]))
                if by_rating:
                    bars.append((_label(run_dir, folder) + (f" ({pairs} pairs)" if pairs else ""), by_rating))
    if not bars:
        return None
    ratings = list(dict.fromkeys(rating for _, by_rating in bars for rating in by_rating))
    fig, axis = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(bars)
    for i, (name, by_rating) in enumerate(bars):
        axis.bar([r + i * width for r in range(len(ratings))], [by_rating.get(k) or 0 for k in ratings], width, label=name)
    axis.set_xticks([r + 0.4 - width / 2 for r in range(len(ratings))], [k.replace("_", " ") for k in ratings], fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title("Reward-model accuracy per rating level (Table 8)")
    axis.legend(fontsize=7)
    path = out / "rm_accuracy.png"
    _save(fig, path)
    return path


def plot_gatt(run_dir: Path, folders: list[Path], out: Path) -> Path | None:
    results = []
    for folder in folders:
        path = folder / "eval.json"
        if path.is_file():
            results.append((_label(run_dir, folder), json.loads(path.read_text())))
    if not results:
        return None
    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    drew = False
    for name, result in results:
        for which in ("before", "after"):
            by_turn = (result.get("table") or {}).get(which) or (result.get(which) or {}).get("adherence_by_turn")
            if by_turn:
                turns = sorted(by_turn, key=int)
                axis.plot([int(t) for t in turns], [by_turn[t] for t in turns], marker="o", label=f"{name} {which}")
                drew = True
    if not drew:
        plt.close(fig)
        return None
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("dialogue turn")
    axis.set_ylabel("instruction adherence")
    axis.set_title("GAtt: adherence per turn (Table 30)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    path = out / "gatt_adherence.png"
    _save(fig, path)
    return path


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def render_html(title: str, table_rows: list[dict], images: list[Path], stages: list[tuple[str, str]],
                stage_rows: list[dict] = (), notes: list[str] = (), safety_rows: list[dict] = ()) -> str:
    columns = table_columns(table_rows)
    header = "".join(f"<th>{html.escape(name)}</th>" for _, name in columns)
    body = "".join(
        "<tr><td>" + html.escape(str(row.get("version", "?"))) + "</td>"
        + "".join(f"<td>{_cell(row.get(key))}</td>" for key, _ in columns) + "</tr>"
        for row in table_rows
    )
    stage_columns = [key for key in STAGE_EVAL_COLUMNS + [f"{m}_diff" for m in STAGE_EVAL_COLUMNS] + ["rm_win_rate"]
                     if any(row.get(key) is not None for row in stage_rows)]
    stage_table = ("<h2>Stage evaluations</h2><table id=\"stages\"><thead><tr><th>stage</th><th>model</th>"
                   + "".join(f"<th>{html.escape(key)}</th>" for key in stage_columns) + "</tr></thead><tbody>"
                   + "".join("<tr><td>" + html.escape(row["stage"]) + "</td><td>" + html.escape(row["model_role"]) + "</td>"
                             + "".join(f"<td>{_cell(row.get(key))}</td>" for key in stage_columns) + "</tr>" for row in stage_rows)
                   + "</tbody></table>") if stage_rows else ""
    safety_table = ("<h2>Safety RM at the gate (R_s &lt; threshold predicts unsafe)</h2><table id=\"safety_gate\"><thead><tr>"
                    + "".join(f"<th>{html.escape(name)}</th>" for _, name in SAFETY_GATE_COLUMNS) + "</tr></thead><tbody>"
                    + "".join("<tr>" + "".join(f"<td>{_cell(row.get(key))}</td>" for key, _ in SAFETY_GATE_COLUMNS) + "</tr>"
                              for row in safety_rows)
                    + "</tbody></table>") if safety_rows else ""
    missing = ("<h2>Not in this report</h2><ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in notes) + "</ul>") if notes else ""
    figures = "".join(
        f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(path.stem)}"><figcaption>{html.escape(path.stem)}</figcaption></figure>'
        for path in images
    )
    stage_list = "".join(f"<li><code>{html.escape(folder)}</code> ({html.escape(stage)})</li>" for stage, folder in stages)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Per version</h2>
<table id="versions"><thead><tr><th>version</th>{header}</tr></thead><tbody>{body}</tbody></table>
{stage_table}
{safety_table}
<h2>Curves</h2>{figures or "<p>No curves yet.</p>"}
{missing}
<h2>Stage folders</h2><ul>{stage_list}</ul>
<script>
// Marks how many figures actually decoded, so a headless browser test can check them.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesTotal = images.length;
}});
</script>
</body></html>
"""


def render_markdown(table_rows: list[dict], timings: dict | None = None, notes: list[str] = (),
                    safety_rows: list[dict] = ()) -> str:
    """The per-version table as Markdown (mean ± standard error over prompts where known),
    with the safety RM's precision/recall at the gate and the stage timings, for READMEs
    and notes."""
    def cell(row: dict, key: str) -> str:
        value, stderr = row.get(key), row.get(f"{key}_stderr")
        if value is None:
            return "–"
        return f"{value:.3f} ± {stderr:.3f}" if isinstance(stderr, float) else f"{value:.3f}"

    columns = table_columns(table_rows)
    lines = ["| version | " + " | ".join(name for _, name in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + str(row.get("version", "?")) + " | " + " | ".join(cell(row, key) for key, _ in columns) + " |"
              for row in table_rows]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    if safety_rows:
        lines += ["", "| " + " | ".join(name for _, name in SAFETY_GATE_COLUMNS) + " |", "|---" * len(SAFETY_GATE_COLUMNS) + "|"]
        lines += ["| " + " | ".join(_cell(row.get(key)) for key, _ in SAFETY_GATE_COLUMNS) + " |" for row in safety_rows]
    if timings:
        lines += ["", "| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def build_report(run_dir: str | Path) -> Path:
    """Draw every curve the run has and write report/index.html (and the table as
    report/summary.md); returns the page's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RLHFError(f"{run_dir} is not a folder")
    folders = stage_folders(run_dir)
    if not folders:
        raise RLHFError(f"{run_dir} holds no stage folder (no manifest.json found)")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    by_stage: dict[str, list[Path]] = {}
    for stage, folder in folders:
        by_stage.setdefault(stage, []).append(folder)
    drawn = {
        "ppo": plot_ppo(run_dir, by_stage.get("ppo", []), out),
        "rs": plot_rs(run_dir, by_stage.get("rejection_sampling", []) + by_stage.get("rs", []), out),
        "rm": plot_rm(run_dir, by_stage.get("reward", []), out),
        "gatt": plot_gatt(run_dir, by_stage.get("gatt", []), out),
    }
    images = list(drawn.values())
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    rows = summary.get("versions", [])
    notes = missing_notes(rows, drawn, summary_path.is_file())
    safety_rows = safety_gate_rows(run_dir, by_stage.get("reward", []))
    atomic_write_text(out / "summary.md", render_markdown(rows, summary.get("timings_s"), notes, safety_rows))
    page = render_html(f"Run report: {run_dir.name}", rows, [p for p in images if p], [(s, _label(run_dir, f)) for s, f in folders],
                       stage_evaluations(run_dir, folders), notes, safety_rows)
    for note in notes:
        print(f"report: {note}")
    index = out / "index.html"
    atomic_write_text(index, page)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf report", description="Draw a run's curves as PNG files and one HTML page.")
    parser.add_argument("run_dir", help="a pipeline run folder (or a single stage folder)")
    args = parser.parse_args(argv)

    def go() -> int:
        print(build_report(args.run_dir))
        return 0

    return run_guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
