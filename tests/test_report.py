"""`rlhf report`: curves from stage folders, a per-version table, checked in headless Chromium."""

import re
import shutil
import subprocess

import pytest

from core.config import StrictModel
from core.io import atomic_write_json
from core.run import StageRun
from pipelines.report import build_report


class Cfg(StrictModel):
    seed: int = 0


def make_run(root):
    with StageRun(root / "v1" / "rs", "rejection_sampling", Cfg()) as run:
        atomic_write_json(run.folder / "curve.json", {"curve": [{"k": 1, "max": 0.2, "median": 0.2}, {"k": 2, "max": 0.5, "median": 0.3}, {"k": 4, "max": 0.7, "median": 0.3}]})
    with StageRun(root / "v2" / "ppo", "ppo", Cfg()) as run:
        for step in range(1, 5):
            run.metrics.log(step, rm_reward=0.1 * step, kl=0.01 * step, gold_helpfulness=0.5, gold_safety=0.9)
    with StageRun(root / "rm_safety", "reward", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {"toyworld": {"per_rating": {"significantly_better": {"accuracy": 0.95, "n": 40}, "better": {"accuracy": 0.8, "n": 30}, "slightly_better": {"accuracy": 0.7, "n": 20}, "negligibly_better": {"accuracy": 0.55, "n": 30}}}})
    with StageRun(root / "gatt", "gatt", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {"turns": [1, 2, 4], "table": {"before": {"1": 1.0, "2": 0.5, "4": 0.1}, "after": {"1": 1.0, "2": 1.0, "4": 0.9}}})
    atomic_write_json(root / "summary.json", {"versions": [
        {"version": "sft", "gold_helpfulness": 0.41, "gold_helpfulness_stderr": 0.05, "gold_safety": 0.9, "false_refusal_rate_borderline": 0.1},
        {"version": "v1", "gold_helpfulness": 0.52, "gold_safety": 0.95, "xstest_safe_refusal": 0.2},
    ], "timings_s": {"sft": 98.7, "total": 1200.2}})


def test_report_writes_every_curve_and_the_table(tmp_path):
    make_run(tmp_path)
    index = build_report(tmp_path)
    names = sorted(p.name for p in index.parent.glob("*.png"))
    assert names == ["gatt_adherence.png", "ppo_curves.png", "rm_accuracy.png", "rs_max_median.png"]
    page = index.read_text()
    assert page.count("<img ") == 4 and "<td>v1</td>" in page and "0.520" in page
    table = (index.parent / "summary.md").read_text().splitlines()
    # only the columns some version has; stderr where known, a dash where a version lacks one
    assert table[0] == "| version | gold helpfulness | gold safety | false refusals, borderline | XSTest safe: refused |"
    assert table[2] == "| sft | 0.410 ± 0.050 | 0.900 | 0.100 | – |"
    assert "| total | 1200 |" in table
    assert any(line.startswith("- No RM columns") for line in table)  # what is missing, and why


def test_a_by_hand_run_gets_its_stage_evaluations_and_is_told_what_it_lacks(tmp_path, capsys):
    """No summary.json (stages run one by one): each stage's shared before/after evaluation
    is tabled instead, and the report says which tables and figures it lacks and why."""
    with StageRun(tmp_path / "sft", "sft", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {
            "models": {"before": {"model": "m0", "rm_reward": 0.4, "refusal_rate": 0.1},
                       "after": {"model": "m1", "rm_reward": 0.5, "refusal_rate": 0.2}},
            "paired": {"after": {"rm_reward": {"diff": 0.1, "diff_stderr": 0.02},
                                 "rm_win_rate": {"rate": 0.7, "stderr": 0.05}}}})
    index = build_report(tmp_path)
    page = index.read_text()
    assert '<table id="stages">' in page and "<td>0.700</td>" in page and "<td>0.100</td>" in page
    notes = capsys.readouterr().out
    assert "No per-version table: there is no summary.json" in notes
    assert "No PPO curves: no PPO stage folder" in notes and "No GAtt adherence" in notes
    assert "No per-version table" in (index.parent / "summary.md").read_text()


def test_the_safety_rm_at_the_gate_is_tabled_beside_the_paper(tmp_path):
    """The safety RM's precision/recall at the threshold with calibrated probabilities,
    σ(r)'s, the cross-fitted figures and the paper's 0.89 / 0.55; the helpfulness RM has none."""
    safety = {"threshold": 0.15, "precision": 0.9, "recall": 0.4, "n": 600, "n_unsafe": 80, "calibrated": True}
    with StageRun(tmp_path / "rm_safety", "reward", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {"kind": "safety", "toyworld": {
            "per_rating": {}, "safety": safety,
            "safety_uncalibrated": {**safety, "precision": 0.2, "recall": 1.0}},
            "calibration": {"safety_cross_fitted": {**safety, "precision": 0.875, "recall": 0.35}}})
    with StageRun(tmp_path / "rm_helpfulness", "reward", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {"kind": "helpfulness", "toyworld": {"per_rating": {}, "safety": safety}})
    index = build_report(tmp_path)
    table = re.search(r'<table id="safety_gate">(.*?)</table>', index.read_text()).group(1)
    assert table.count("<tr>") == 3 and "rm_helpfulness" not in table  # header, toyworld, cross-fitted
    assert "<td>0.900</td><td>0.400</td><td>600 (80 unsafe)</td><td>0.200</td><td>1.000</td><td>0.890</td><td>0.550</td>" in table
    assert "<td>0.875</td><td>0.350</td>" in table
    md = (index.parent / "summary.md").read_text()
    assert "| safety RM | pairs | threshold | calibrated | precision | recall |" in md and "| 0.890 | 0.550 |" in md


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_opens_in_headless_chromium(tmp_path):
    make_run(tmp_path)
    index = build_report(tmp_path)
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    assert re.search(r'data-images-loaded="4"', dom), dom[:2000]
    assert 'data-images-total="4"' in dom
    assert re.search(r'<table id="versions">.*<td>sft</td>.*<td>v1</td>', dom, re.S)
