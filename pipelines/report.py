"""`rlhf report RUN_DIR`: a run's curves as PNG files and one HTML page.

It reads what the stages wrote (nothing passes in memory): `metrics.jsonl` and
`eval.json` of every stage folder, rejection sampling's `curve.json` and control arms
(`eval.json` `controls`), the reward models' `eval.json` (accuracy per rating; the safety
RM's precision and recall at the gate, calibrated, beside σ(r)'s and the paper's), GAtt's
`eval.json` (Table 30: once without GAtt, once with GAtt, reminded every turn) and
`policy_eval.json`, PPO's `metrics.jsonl` (training batch every iteration, `heldout_*` where
it evaluated), each version's evaluation folder (`eval_samples.jsonl`, `eval_sampled.jsonl`:
paired differences between consecutive versions) and the pipeline's `summary.json` (one
row per version). Missing pieces are skipped and named, so a report can be drawn for a
partial run or for one stage folder.

Files: RUN_DIR/report/index.html and RUN_DIR/report/*.png.
"""

from __future__ import annotations

import argparse
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.cli import run_guarded  # noqa: E402
from core.errors import RLHFError  # noqa: E402
from core.io import atomic_open, atomic_write_text  # noqa: E402
from core.run import read_manifest, read_metrics  # noqa: E402

# PPO's panels: (title, training-batch key, held-out keys: the first one the run logged).
# `reward_mean` is the raw reward of reward.kind (R_c with the gate, the function's value
# with reward.kind=function), logged every iteration; its held-out twin is `heldout_reward`
# (function) or `heldout_rm_reward` (gated). `rm_reward` exists only when the RMs score.
PPO_PANELS = [
    ("training reward (reward_mean)", "reward_mean", ("heldout_reward", "heldout_rm_reward")),
    ("RM reward R_c", "rm_reward", ("heldout_rm_reward",)),
    ("KL(π‖π0) per sequence", "kl", ()),
    ("gold combined", "gold_combined", ("heldout_gold_combined",)),
    ("entropy per token", "entropy", ()),
    ("truncated at max_new_tokens", "truncation_rate", ("heldout_truncation_rate",)),
    ("refusals", None, ("heldout_refusal_rate",)),
]
ROLLING_WINDOW = 5  # iterations in the band of a training-batch metric logged without a stderr
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
    """The columns some row has a value for (a run on the user's prompts has no gold columns),
    then the sampled evaluation's (`sampled_<metric>`) where a version has them."""
    columns = [(key, name) for key, name in TABLE_COLUMNS if any(row.get(key) is not None for row in rows)]
    names = dict(TABLE_COLUMNS)
    sampled = [f"sampled_{key}" for key, _ in TABLE_COLUMNS if any(row.get(f"sampled_{key}") is not None for row in rows)]
    return columns + [(key, f"{names[key.removeprefix('sampled_')]} (sampled)") for key in sampled]


def stage_evaluations(run_dir: Path, folders: list[tuple[str, Path]]) -> list[dict]:
    """One row per model of every stage's shared evaluation (`eval.json` with `models`, and
    GAtt's `policy_eval.json`): what a by-hand run has instead of the pipeline's per-version
    table."""
    rows = []
    paths = [folder / name for _, folder in folders for name in ("eval.json", "policy_eval.json")]
    for path in (path for path in paths if path.is_file()):
        result = json.loads(path.read_text())
        if not isinstance(result.get("models"), dict):
            continue
        stage = _label(run_dir, path.parent) + (f" ({path.stem})" if path.name != "eval.json" else "")
        for name, summary in result["models"].items():
            row = {"stage": stage, "model_role": name, **summary}
            paired = (result.get("paired") or {}).get(name) or {}
            if "rm_win_rate" in paired:
                row["rm_win_rate"] = paired["rm_win_rate"]["rate"]
            for metric in STAGE_EVAL_COLUMNS:
                if metric in paired:
                    row[f"{metric}_diff"] = paired[metric]["diff"]
                    row[f"{metric}_diff_stderr"] = paired[metric]["diff_stderr"]
            rows.append(row)
    return rows


# ---------------------------------------------------------------- paired differences

# Per-prompt metrics of the version-to-version and control tables, in this order (then
# the sampled evaluation's, `sampled_<metric>`, then any other column).
PAIRED_METRICS = [("gold_combined", "gold combined"), ("rm_reward", "RM reward R_c"), ("rm_win_rate", "RM win rate"),
                  ("refusal_rate", "refusals"), ("response_length", "length (tokens)"), ("truncation_rate", "truncated")]
PAIRED_HEADERS = ["comparison", "metric", "before", "after", "difference ± SE", "wins / losses", "prompts", "verdict"]
NO_DIFFERENCE = "no measured difference"


def _metric_order(metric: str) -> tuple[int, int, str]:
    plain = metric.removeprefix("sampled_")
    keys = [key for key, _ in PAIRED_METRICS]
    return (plain != metric, keys.index(plain) if plain in keys else len(keys), metric)


def _metric_name(metric: str) -> str:
    plain = metric.removeprefix("sampled_")
    name = dict(PAIRED_METRICS).get(plain, plain.replace("_", " "))
    return f"{name} (sampled)" if plain != metric else name


def verdict(comparison: dict) -> str:
    """"no measured difference" when |diff| is under two standard errors (or one prompt),
    else the direction of the measured difference."""
    if not comparison.get("significant"):
        return NO_DIFFERENCE
    return "measured increase" if comparison["diff"] > 0 else "measured decrease"


def comparison_row(name: str, metric: str, comparison: dict) -> dict:
    """One row of a paired table from `core.evaluation.paired_comparison`'s dict (or
    `win_rate`'s, whose difference is the rate minus one half)."""
    if "rate" in comparison:  # RM win rate: after beats before on a prompt, ties half
        diff, stderr = comparison["rate"] - 0.5, comparison["stderr"]
        n = comparison["wins"] + comparison.get("ties", 0) + comparison["losses"]
        comparison = {"n": n, "before": 0.5, "after": comparison["rate"], "diff": diff, "diff_stderr": stderr,
                      "wins": comparison["wins"], "losses": comparison["losses"],
                      "significant": n > 1 and stderr > 0 and abs(diff) > 2 * stderr}
    return {"comparison": name, "metric": metric, **comparison, "verdict": verdict(comparison)}


def consecutive_differences(versions: list[tuple[str, dict[str, dict[str, float]]]],
                            scored_by: dict[str, object] | None = None) -> tuple[list[dict], list[str]]:
    """Paired differences between each version and the one before it.

    `versions`: (name, {prompt id: {metric: value}}) in order (base, SFT, V1, ...). Each
    pair is compared on the prompts both answered, metric by metric, with
    `core.evaluation.paired_comparison` (after minus before). RM metrics are compared only
    when both versions were scored by the same reward models (`scored_by`: name -> RMs).
    Returns (rows, notes on what could not be compared)."""
    from core.evaluation import paired_comparison

    rows, notes = [], []
    for (before_name, before), (after_name, after) in zip(versions, versions[1:]):
        pair = f"{before_name} → {after_name}"
        ids = [prompt for prompt in after if prompt in before]
        if not ids:
            notes.append(f"{pair}: no prompt answered by both")
            continue
        if len(ids) < max(len(after), len(before)):
            notes.append(f"{pair}: compared on the {len(ids)} prompts both answered ({len(before)} and {len(after)} evaluated)")
        metrics = sorted({m for prompt in ids for m in after[prompt]} & {m for prompt in ids for m in before[prompt]}, key=_metric_order)
        scorers = (scored_by or {}).get(before_name), (scored_by or {}).get(after_name)
        for metric in metrics:
            if metric.removeprefix("sampled_").startswith("rm_") and scorers[0] != scorers[1]:
                notes.append(f"{pair}: {_metric_name(metric)} not compared: the two versions were scored by different reward models")
                continue
            both = [prompt for prompt in ids if metric in after[prompt] and metric in before[prompt]]
            rows.append(comparison_row(pair, metric, paired_comparison([after[p][metric] for p in both], [before[p][metric] for p in both])))
    return rows, notes


def control_rows(run_dir: Path, folders: list[Path]) -> list[dict]:
    """Rejection sampling's control arms (eval.json `controls`: RS minus best-of-1, minus
    replay-only, minus its init, each paired on the same held-out prompts), and before
    them the targets against the policy's greedy answers on the sampled prompts
    (`samples_gold.greedy`, toyworld): the margin the fine-tune has to carry."""
    rows = []
    for folder in folders:
        path = folder / "eval.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
        versus = (result.get("samples_gold") or {}).get("greedy")
        if versus:
            rows.append(comparison_row(f"{_label(run_dir, folder)}: targets vs policy greedy (sampled prompts)", "gold_combined",
                                       {**versus, "before": versus["greedy"], "after": versus["chosen"]}))
        for name, comparison in (result.get("controls") or {}).items():
            label = f"{_label(run_dir, folder)}: {name.replace('rs_vs_', 'RS vs ').replace('_', '-')}"
            rows += [comparison_row(label, metric, comparison[metric]) for metric in sorted(comparison, key=_metric_order)
                     if isinstance(comparison[metric], dict)]
    return rows


def paired_cells(row: dict) -> list[str]:
    """A paired row as PAIRED_HEADERS' cells."""
    fmt = (lambda x: f"{x:.2f}") if row["metric"].endswith("response_length") else (lambda x: f"{x:.3f}")
    return [row["comparison"], _metric_name(row["metric"]), fmt(row["before"]), fmt(row["after"]),
            f"{row['diff']:+.3f} ± {row['diff_stderr']:.3f}", f"{row['wins']} / {row['losses']}", str(row["n"]), row["verdict"]]


def version_eval_folders(folders: list[Path], order: list[str]) -> list[tuple[str, Path]]:
    """(version, its evaluation folder) of every pipeline evaluation (an eval.json with a
    `row`), in the summary's order, else in the order they ran."""
    found = {}
    for folder in folders:
        path = folder / "eval.json"
        row = json.loads(path.read_text()).get("row") if path.is_file() else None
        if isinstance(row, dict) and row.get("version") and (folder / "eval_samples.jsonl").is_file():
            found[row["version"]] = folder
    ranked = [version for version in order if version in found]
    rest = sorted((v for v in found if v not in ranked), key=lambda v: (read_manifest(found[v]) or {}).get("started_at") or "")
    return [(version, found[version]) for version in ranked + rest]


def _own_model(row: dict, version: str) -> str:
    from core.evaluation import models_in_samples

    models = models_in_samples(row)
    return version if version in models else next((m for m in reversed(models) if m != "start"), models[-1])


def prompt_columns(rows: list[dict], version: str, gold=None, prefix: str = "",
                   prompts: dict[str, dict] | None = None) -> dict[str, dict[str, float]]:
    """{prompt id: {metric: value}} of `version`'s answers in eval-samples rows (several rows
    of one prompt, as eval_sampled.jsonl holds, one per sample round, are averaged).

    A score the evaluation stored per prompt (`<model>_<metric>`) is used as stored; else
    what the answer gives: refusal (`core.refusal`), length, truncation, and toyworld's
    gold combined re-judged by `gold` (a `core.sources.GoldJudge`, or None) on the row's
    prompt (or `prompts[id]`'s, for rows that carry only the id)."""
    from core.evaluation import COLUMNS
    from core.refusal import is_refusal

    sums: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        own = _own_model(row, version)
        values = {metric: float(row[f"{own}_{metric}"]) for metric in COLUMNS
                  if isinstance(row.get(f"{own}_{metric}"), (int, float)) and not isinstance(row.get(f"{own}_{metric}"), bool)}
        values.setdefault("refusal_rate", float(is_refusal(row[own])))
        values.setdefault("response_length", float(row[f"{own}_length"]))
        values.setdefault("truncation_rate", 0.0 if row[f"{own}_finished"] else 1.0)
        record = row if "prompt" in row else (prompts or {}).get(row["id"])
        if gold is not None and "gold_combined" not in values and record is not None:
            values["gold_combined"] = gold.combined({"messages": record["prompt"], "category": record.get("category")}, row[own])
        for metric, value in values.items():
            sums.setdefault(str(row["id"]), {}).setdefault(prefix + metric, []).append(value)
    return {prompt: {metric: sum(v) / len(v) for metric, v in metrics.items()} for prompt, metrics in sums.items()}


def version_columns(version: str, folder: Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The per-prompt columns of one version's evaluation folder (greedy answers in
    eval_samples.jsonl, the sampled evaluation's rounds in eval_sampled.jsonl as
    `sampled_<metric>`, each prompt its samples' mean), and notes where a re-judged gold
    mean differs from the stored one."""
    from core.io import iter_jsonl
    from core.sources import gold_judge

    result = json.loads((folder / "eval.json").read_text())
    gold = gold_judge((result.get("prompts") or {}).get("source") or "")
    columns: dict[str, dict[str, float]] = {}
    notes = []
    records: dict[str, dict] = {}
    for path, prefix in ((folder / "eval_samples.jsonl", ""), (folder / "eval_sampled.jsonl", "sampled_")):
        rows = [row for _, row in iter_jsonl(path)] if path.is_file() else []
        if not rows:
            continue
        records = records or {row["id"]: row for row in rows}
        for prompt, values in prompt_columns(rows, version, gold, prefix, records).items():
            columns.setdefault(prompt, {}).update(values)
        stored = ((result.get("models") or {}).get(version) or {}).get(f"{prefix}gold_combined", (result.get("row") or {}).get(f"{prefix}gold_combined"))
        judged = [values[f"{prefix}gold_combined"] for values in columns.values() if f"{prefix}gold_combined" in values]
        if isinstance(stored, float) and judged and abs(sum(judged) / len(judged) - stored) > 1e-6:
            notes.append(f"{version}: {prefix}gold combined re-judged from the answers averages {sum(judged) / len(judged):.3f}, "
                         f"the evaluation stored {stored:.3f}: the gold judges changed since the run")
    return columns, notes


def version_differences(folders: list[Path], order: list[str]) -> tuple[list[dict], list[str]]:
    """The paired table between consecutive versions of a pipeline run, with its notes."""
    evaluated = version_eval_folders(folders, order)
    versions, scored_by, notes = [], {}, []
    for version, folder in evaluated:
        columns, version_notes = version_columns(version, folder)
        versions.append((version, columns))
        scored_by[version] = json.loads((folder / "eval.json").read_text()).get("reward_models")
        notes += version_notes
    rows, pair_notes = consecutive_differences(versions, scored_by)
    if len(versions) > 1 and not any(row["metric"] == "rm_reward" for row in rows):
        notes.append("No paired RM reward between versions: the evaluations' eval_samples.jsonl have no RM score per answer "
                     "(`<model>_rm_reward`: evaluated without reward models, or before the evaluation stored them), "
                     "so only the scores recomputable from the text are paired.")
    return rows, notes + pair_notes


# ---------------------------------------------------------------- GAtt (Table 30)


def _rate_at(by_turn: dict, turn: int) -> float | None:
    return by_turn.get(str(turn), by_turn.get(turn))  # JSON keys are strings


def gatt_table(result: dict) -> tuple[list[str], list[list[str]]] | None:
    """The paper's Table 30 layout of a GAtt eval.json: one row per condition (once
    without GAtt, once with GAtt, reminded in every turn), one column per reported turn,
    each cell the adherence with ± its standard error over dialogues and the count
    (hits / checked dialogues) where the row says how many it checked."""
    from gatt.evaluate import DESCRIPTIONS

    table = result.get("table")
    if not isinstance(table, dict) or not table:
        return None
    turns = result.get("turns") or sorted({int(t) for by_turn in table.values() for t in by_turn})
    body = []
    for label, by_turn in table.items():
        n = ((result.get("rows") or {}).get(label) or {}).get("n_dialogues")
        description = ((result.get("conditions") or {}).get(label) or {}).get("description") or DESCRIPTIONS.get(label, label)
        cells = [f"{label}: {description}" if description != label else label]
        for turn in turns:
            rate = _rate_at(by_turn, turn)
            if rate is None:
                cells.append("–")
            elif n:
                hits = rate * n
                count = f" ({round(hits)}/{n})" if abs(hits - round(hits)) < 1e-6 else ""
                cells.append(f"{100 * rate:.0f}% ± {100 * math.sqrt(rate * (1 - rate) / n):.0f}{count}")
            else:
                cells.append(f"{100 * rate:.0f}%")
        body.append(cells)
    return ["condition"] + [f"turn {t}" for t in turns], body


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


def missing_notes(rows: list[dict], images: dict[str, Path | None], has_summary: bool,
                  tables: dict[str, bool] | None = None) -> list[str]:
    """Why each table or figure a full pipeline run has is absent from this one (`tables`:
    which of the paired, RS-control and Table 30 tables were made)."""
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
    table_reasons = {
        "paired": ("paired differences between consecutive versions",
                   "fewer than two version evaluations with eval_samples.jsonl (only `rlhf run` evaluates each version)"),
        "controls": ("rejection-sampling control arms", "no rejection-sampling eval.json with `controls` "
                     "(control_arms unset, or the stage's eval disabled, as in a pipeline)"),
        "gatt": ("GAtt Table 30", "no GAtt stage folder with eval.json"),
    }
    for key, (what, why) in table_reasons.items():
        if tables is not None and not tables.get(key):
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


def rolling_band(values: list[float], window: int = ROLLING_WINDOW) -> tuple[list[float], list[float | None]]:
    """Centred rolling mean of per-iteration values and its standard error: the window's
    sample standard deviation / sqrt(its size), None for a window of one value.

    A training-batch mean logged without a stderr has no error bar of its own; the spread
    of neighbouring iterations estimates the batch-to-batch noise (a trend inside the
    window only widens the band, so it errs wide)."""
    from core.evaluation import mean_stderr

    half = window // 2
    means, errors = [], []
    for i in range(len(values)):
        chunk = values[max(0, i - half): i + half + 1]
        mean, stderr = mean_stderr(chunk)
        means.append(mean)
        errors.append(stderr if len(chunk) > 1 else None)
    return means, errors


def _last_per_step(rows: list[dict], key: str) -> list[tuple[int, float, float | None]]:
    """(step, value, stderr or None) of every row logging `key`, the last row of a step
    winning (a resumed run logs a step again)."""
    points = {}
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(row.get("step"), int):
            stderr = row.get(f"{key}_stderr")
            points[row["step"]] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
    return [(step, *points[step]) for step in sorted(points)]


def metric_series(rows: list[dict], key: str, rolling: bool) -> dict | None:
    """One curve of a PPO folder: `steps`, raw `values`, the `line` drawn and its `stderr`
    per point (None: no band there), and how the band was made (`band`).

    The held-out keys carry their stderr over prompts (`heldout_<metric>_stderr`); a
    training-batch key uses `<key>_stderr` when PPO logs it, else (`rolling`) the rolling
    band of `rolling_band`."""
    points = _last_per_step(rows, key)
    if not points:
        return None
    steps, values, errors = (list(column) for column in zip(*points))
    if all(error is not None for error in errors):
        return {"steps": steps, "values": values, "line": values, "stderr": errors, "band": "± stderr"}
    if rolling:
        line, errors = rolling_band(values)
        return {"steps": steps, "values": values, "line": line, "stderr": errors,
                "band": f"rolling mean of {ROLLING_WINDOW} iterations ± SE"}
    return {"steps": steps, "values": values, "line": values, "stderr": [None] * len(values), "band": "no stderr"}


def ppo_panels(rows: list[dict]) -> list[tuple[str, dict | None, dict | None]]:
    """(title, training-batch series, held-out series) of every PPO_PANELS entry this
    folder logged; the RM panel only when it is not the training reward itself."""
    both = [row for row in rows if "rm_reward" in row and "reward_mean" in row]
    rm_is_reward = (bool(both) and not any("heldout_reward" in row for row in rows)
                    and all(row["rm_reward"] == row["reward_mean"] for row in both))  # the gate: R_c is reward_mean
    panels = []
    for title, train_key, heldout_keys in PPO_PANELS:
        if train_key == "rm_reward" and rm_is_reward:
            continue
        train = metric_series(rows, train_key, rolling=True) if train_key else None
        heldout_key = next((key for key in heldout_keys if any(key in row for row in rows)), None)
        heldout = metric_series(rows, heldout_key, rolling=False) if heldout_key else None
        if train or heldout:
            panels.append((title, train, heldout))
    return panels


def _band(axis, series: dict, color, **style) -> None:
    steps = [s for s, e in zip(series["steps"], series["stderr"]) if e is not None]
    if steps:
        lines = [(v, e) for v, e in zip(series["line"], series["stderr"]) if e is not None]
        axis.fill_between(steps, [v - e for v, e in lines], [v + e for v, e in lines], color=color, alpha=0.2, linewidth=0, **style)


def plot_ppo(run_dir: Path, folders: list[Path], out: Path) -> Path | None:
    """Every PPO iteration of every PPO folder: the training batch (line, its band) and the
    held-out evaluations (squares with ± stderr over the held-out prompts)."""
    drawn: dict[str, list[tuple[str, dict | None, dict | None]]] = {}
    for folder in folders:
        for title, train, heldout in ppo_panels(read_metrics(folder)):
            drawn.setdefault(title, []).append((_label(run_dir, folder), train, heldout))
    if not drawn:
        return None
    titles = [title for title, _, _ in PPO_PANELS if title in drawn]
    ncols = min(4, len(titles))
    nrows = -(-len(titles) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(_label(run_dir, folder) for folder in folders))
    for axis, title in zip(axes.flat, titles):
        for name, train, heldout in drawn[title]:
            color = colors[names.index(name) % len(colors)]
            if train:
                axis.plot(train["steps"], train["values"], ".", color=color, alpha=0.35)
                axis.plot(train["steps"], train["line"], "-", color=color, label=f"{name} training batch ({train['band']})")
                _band(axis, train, color)
            if heldout:
                errors = [e if e is not None else 0.0 for e in heldout["stderr"]]
                axis.errorbar(heldout["steps"], heldout["values"], yerr=errors, fmt="s--", color=color, capsize=3,
                              markersize=4, label=f"{name} held-out (± stderr over prompts)")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("PPO iteration")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(titles):]:
        axis.axis("off")
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


def gatt_curves(result: dict) -> list[tuple[str, str, list[int], list[float], int | None]]:
    """(label, condition, turns, adherence, checked dialogues) of every row of a GAtt
    eval.json: every turn played (`rows`), else the reported ones (`table`, or an older
    file's `before`/`after` `adherence_by_turn`)."""
    curves = []
    rows, table = result.get("rows") or {}, result.get("table") or {}
    for label in dict.fromkeys([*table, *rows]):
        row = rows.get(label) or {}
        by_turn = row.get("by_turn") or table.get(label)
        if by_turn:
            turns = sorted(int(t) for t in by_turn if _rate_at(by_turn, int(t)) is not None)
            curves.append((label, row.get("condition", "every_turn" if label.startswith("reminded") else "once"),
                           turns, [_rate_at(by_turn, t) for t in turns], row.get("n_dialogues")))
    for which in ("before", "after"):  # an older eval.json without `table`
        by_turn = (result.get(which) or {}).get("adherence_by_turn") if which not in table and which not in rows else None
        if by_turn:
            turns = sorted(int(t) for t in by_turn)
            curves.append((which, "once", turns, [_rate_at(by_turn, t) for t in turns], None))
    return curves


def plot_gatt(run_dir: Path, folders: list[Path], out: Path) -> Path | None:
    """Adherence per turn of every condition (once without GAtt, once with GAtt, reminded in
    every turn: the ceiling, dashed), with ± its standard error over dialogues where known."""
    from gatt.evaluate import DESCRIPTIONS

    results = []
    for folder in folders:
        path = folder / "eval.json"
        if path.is_file():
            results.append((_label(run_dir, folder), json.loads(path.read_text())))
    curves = [(name, result, curve) for name, result in results for curve in gatt_curves(result)]
    if not curves:
        return None
    fig, axis = plt.subplots(figsize=(6.5, 4.0))
    for name, result, (label, condition, turns, rates, n) in curves:
        description = ((result.get("conditions") or {}).get(label) or {}).get("description") or DESCRIPTIONS.get(label, label)
        prefix = f"{name}: " if len(results) > 1 else ""
        line = axis.plot(turns, rates, "--" if condition == "every_turn" else "-", marker="o",
                         label=f"{prefix}{description}" + (f" (n={n})" if n else ""))
        if n:
            errors = [math.sqrt(r * (1 - r) / n) for r in rates]
            axis.fill_between(turns, [r - e for r, e in zip(rates, errors)], [r + e for r, e in zip(rates, errors)],
                              color=line[0].get_color(), alpha=0.15, linewidth=0)
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlabel("dialogue turn")
    axis.set_ylabel("instruction adherence (± SE)")
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


def section(title: str, table_id: str, headers: list[str], rows: list[list[str]], notes: list[str] = (), caption: str = "") -> dict:
    """A table of the report (HTML and summary.md): its title, id, header cells, body cells
    and notes under it."""
    return {"title": title, "id": table_id, "headers": headers, "rows": rows, "notes": list(notes), "caption": caption}


def section_html(part: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in part["headers"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in part["rows"])
    caption = f"<p>{html.escape(part['caption'])}</p>" if part["caption"] else ""
    notes = ("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in part["notes"]) + "</ul>") if part["notes"] else ""
    return (f"<h2>{html.escape(part['title'])}</h2>{caption}<table id=\"{part['id']}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{notes}")


def section_markdown(part: dict) -> list[str]:
    lines = ["", f"### {part['title']}", ""] + ([part["caption"], ""] if part["caption"] else [])
    lines += ["| " + " | ".join(part["headers"]) + " |", "|---" * len(part["headers"]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in part["rows"]]
    return lines + ([""] + [f"- {note}" for note in part["notes"]] if part["notes"] else [])


def render_html(title: str, table_rows: list[dict], images: list[Path], stages: list[tuple[str, str]],
                stage_rows: list[dict] = (), notes: list[str] = (), safety_rows: list[dict] = (),
                sections: list[dict] = ()) -> str:
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
{"".join(section_html(part) for part in sections)}
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
                    safety_rows: list[dict] = (), sections: list[dict] = ()) -> str:
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
    for part in sections:
        lines += section_markdown(part)
    if timings:
        lines += ["", "| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def report_sections(run_dir: Path, by_stage: dict[str, list[Path]], order: list[str]) -> list[dict]:
    """The paired tables (consecutive versions, RS control arms) and GAtt's Table 30 this
    run has."""
    sections = []
    paired, paired_notes = version_differences(by_stage.get("eval", []), order)
    if paired:
        sections.append(section(
            "Paired differences between consecutive versions", "versions_paired", PAIRED_HEADERS, [paired_cells(r) for r in paired],
            paired_notes, "After minus before on the same held-out prompts (each version's own evaluation folder), "
            "± the standard error of the per-prompt difference; under two standard errors: no measured difference."))
    controls = control_rows(run_dir, by_stage.get("rejection_sampling", []) + by_stage.get("rs", []))
    if controls:
        sections.append(section(
            "Rejection sampling against its control arms", "rs_controls", PAIRED_HEADERS, [paired_cells(r) for r in controls],
            caption="The chosen targets minus the policy's greedy answers on the sampled prompts (what a greedy "
            "evaluation can gain at most), then RS minus each arm fine-tuned from the same init (best of 1: what K > 1 adds; "
            "replay only: what the sampled targets add; init: the whole stage), paired on the same held-out prompts."))
    for folder in by_stage.get("gatt", []):
        path = folder / "eval.json"
        table = gatt_table(json.loads(path.read_text())) if path.is_file() else None
        if table:
            result = json.loads(path.read_text())
            notes = [f"{n} dialogues with unchecked instructions not counted" for n in [(result.get("unchecked") or {}).get("n_dialogues")] if n]
            sections.append(section(
                f"GAtt: instruction adherence per turn (Table 30), {_label(run_dir, folder)}", "gatt_table30", *table, notes,
                "Held-out instructions given once in the first turn (without and with GAtt) or in every turn (the ceiling); "
                "± the standard error over dialogues, (adhered / checked dialogues)."))
    return sections


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
    sections = report_sections(run_dir, by_stage, [row.get("version") for row in rows])
    made = {part["id"]: True for part in sections}
    notes = missing_notes(rows, drawn, summary_path.is_file(),
                          {"paired": made.get("versions_paired"), "controls": made.get("rs_controls"), "gatt": made.get("gatt_table30")})
    safety_rows = safety_gate_rows(run_dir, by_stage.get("reward", []))
    atomic_write_text(out / "summary.md", render_markdown(rows, summary.get("timings_s"), notes, safety_rows, sections))
    page = render_html(f"Run report: {run_dir.name}", rows, [p for p in images if p], [(s, _label(run_dir, f)) for s, f in folders],
                       stage_evaluations(run_dir, folders), notes, safety_rows, sections)
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
