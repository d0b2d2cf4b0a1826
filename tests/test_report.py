"""`rlhf report`: curves from stage folders, a per-version table, checked in headless Chromium."""

import json
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


# ---------------------------------------------------------------- PPO curves, paired tables, RS controls, Table 30


def test_rolling_band_by_hand():
    from pipelines.report import rolling_band

    line, errors = rolling_band([1.0, 2.0, 3.0, 4.0], window=3)
    assert line == pytest.approx([1.5, 2.0, 3.0, 3.5])
    # [1, 2]: stdev 0.7071 / sqrt 2 = 0.5; [1, 2, 3]: 1 / sqrt 3
    assert errors == pytest.approx([0.5, 1 / 3 ** 0.5, 1 / 3 ** 0.5, 0.5])
    assert rolling_band([7.0], window=3) == ([7.0], [None])  # one value: no band


def test_ppo_curves_use_reward_mean_when_the_reward_is_a_function(tmp_path):
    """reward.kind=function logs no rm_reward: the reward panel draws reward_mean over every
    iteration with its held-out twin `heldout_reward`; a logged stderr is the band."""
    from pipelines.report import ppo_panels

    with StageRun(tmp_path / "v2" / "ppo", "ppo", Cfg()) as run:
        run.metrics.log(0, heldout_reward=0.2, heldout_reward_stderr=0.05, heldout_gold_combined=0.4, heldout_gold_combined_stderr=0.04)
        for step in range(1, 9):
            run.metrics.log(step, reward_mean=0.1 * step, kl=0.01 * step, entropy=1.0, truncation_rate=0.0)
        run.metrics.log(8, heldout_reward=0.6, heldout_reward_stderr=0.05)
    rows = [json.loads(line) for line in (tmp_path / "v2" / "ppo" / "metrics.jsonl").read_text().splitlines()]
    panels = {title: (train, heldout) for title, train, heldout in ppo_panels(rows)}
    assert "RM reward R_c" not in panels
    train, heldout = panels["training reward (reward_mean)"]
    assert train["steps"] == list(range(1, 9)) and train["values"] == pytest.approx([0.1 * s for s in range(1, 9)])
    assert train["band"].startswith("rolling mean of 5")
    assert train["line"][0] == pytest.approx(0.2)  # mean of steps 1..3
    assert heldout["steps"] == [0, 8] and heldout["stderr"] == [0.05, 0.05]
    assert panels["gold combined"][0] is None and panels["gold combined"][1]["values"] == [0.4]
    index = build_report(tmp_path)
    assert (index.parent / "ppo_curves.png").stat().st_size > 10_000
    # per-iteration stderr when PPO logs it (`reward_mean_stderr`), no rolling window
    logged = [{"step": 1, "reward_mean": 0.5, "reward_mean_stderr": 0.1}, {"step": 2, "reward_mean": 0.7, "reward_mean_stderr": 0.2}]
    ((_, train, _),) = ppo_panels(logged)
    assert train["line"] == [0.5, 0.7] and train["stderr"] == [0.1, 0.2] and train["band"] == "± stderr"


def test_ppo_gated_reward_is_not_drawn_twice():
    from pipelines.report import ppo_panels

    rows = [{"step": 1, "reward_mean": 0.5, "rm_reward": 0.5}, {"step": 2, "reward_mean": 0.6, "rm_reward": 0.6}]
    assert [title for title, _, _ in ppo_panels(rows)] == ["training reward (reward_mean)"]


ANSWERS = {  # prompt: (answer, finished, length) per version
    "sft": [("Paris.", True, 2), ("I'm sorry, but I can't help with that.", True, 12), ("4", True, 1), ("blue", True, 1)],
    "v1": [("Paris.", True, 2), ("Sure: step 1", False, 5), ("4", True, 1), ("blue", True, 1)],
    "v2": [("Paris.", True, 2), ("Sure: step 1", True, 5), ("4", True, 1), ("blue", True, 1)],
    "v2+gatt": [("Paris.", True, 2), ("Sure: step 1", True, 5), ("4", True, 1), ("blue", True, 1)],
}
RM = {"sft": [0.1, 0.2, 0.3, 0.4], "v1": [0.3, 0.2, 0.6, 0.5], "v2": [0.35, 0.1, 0.6, 0.55], "v2+gatt": [0.4, 0.4, 0.4, 0.4]}
SAMPLED_RM = {"v1": [[0.2, 0.4], [0.0, 0.2], [0.5, 0.5], [0.6, 0.8]], "v2": [[0.4, 0.6], [0.2, 0.4], [0.7, 0.7], [0.9, 1.1]]}


def make_versions(root):
    """A pipeline run's evaluation folders (each version against the start, stored per-prompt
    RM scores, the user's prompts so no gold), in folders whose path order is not the run's."""
    from core.io import write_jsonl

    folders = {"sft": "sft/eval", "v1": "v1/eval", "v2": "v2/eval", "v2+gatt": "gatt/eval"}
    rms = {"helpfulness": "rm_h", "safety": "rm_s"}
    for version, folder in folders.items():
        names = [version] if version == "sft" else ["start", version]
        with StageRun(root / folder, "eval", Cfg()) as run:
            rows = []
            for i in range(4):
                row = {"id": f"p{i}", "category": "helpfulness", "kind": None, "prompt": [{"role": "user", "content": f"q{i}"}]}
                for name in names:
                    own = "sft" if name == "start" else name
                    answer, finished, length = ANSWERS[own][i]
                    row.update({name: answer, f"{name}_finished": finished, f"{name}_length": length, f"{name}_rm_reward": RM[own][i]})
                rows.append(row)
            write_jsonl(run.folder / "eval_samples.jsonl", rows)
            if version in SAMPLED_RM:
                write_jsonl(run.folder / "eval_sampled.jsonl", [  # core.evaluation.sampled_rows: one row per round and prompt
                    {"id": f"p{i}", "round": j, "seed": 1234 + j, version: "x", f"{version}_finished": True, f"{version}_length": 1,
                     f"{version}_rm_reward": SAMPLED_RM[version][i][j]} for j in range(2) for i in range(4)])
            scored_by = rms if version != "v2+gatt" else {**rms, "safety": "rm_s_refreshed"}
            atomic_write_json(run.folder / "eval.json", {"prompts": {"source": "my_prompts.jsonl"}, "reward_models": scored_by,
                                                         "models": {}, "row": {"version": version}})
    atomic_write_json(root / "summary.json", {"versions": [{"version": v, "rm_reward": sum(RM[v]) / 4} for v in folders]})


def test_paired_differences_between_consecutive_versions(tmp_path):
    """Each consecutive pair in the summary's order, per metric, equals paired_comparison on
    the per-prompt columns (hand-computed below); under 2 SE: no measured difference."""
    from core.evaluation import paired_comparison
    from pipelines.report import version_differences

    make_versions(tmp_path)
    folders = [tmp_path / f for f in ("gatt/eval", "sft/eval", "v1/eval", "v2/eval")]
    rows, notes = version_differences(folders, ["sft", "v1", "v2", "v2+gatt"])
    by = {(row["comparison"], row["metric"]): row for row in rows}
    assert list(dict.fromkeys(row["comparison"] for row in rows)) == ["sft → v1", "v1 → v2", "v2 → v2+gatt"]
    rm = by[("sft → v1", "rm_reward")]
    # diffs 0.2, 0, 0.3, 0.1: mean 0.15, stdev sqrt(0.05 / 3) = 0.1291, stderr 0.0645 < 0.15 / 2
    assert rm["diff"] == pytest.approx(0.15) and rm["diff_stderr"] == pytest.approx(0.0645497, abs=1e-6)
    assert (rm["wins"], rm["losses"], rm["n"], rm["verdict"]) == (3, 0, 4, "measured increase")
    assert rm == {**paired_comparison(RM["v1"], RM["sft"]), "comparison": "sft → v1", "metric": "rm_reward", "verdict": "measured increase"}
    # from the answers: p1's refusal gone (-0.25 ± 0.25), p1 truncated (+0.25 ± 0.25), length 12 -> 5
    refusal = by[("sft → v1", "refusal_rate")]
    assert (refusal["diff"], refusal["diff_stderr"], refusal["losses"], refusal["verdict"]) == (-0.25, 0.25, 1, "no measured difference")
    assert by[("sft → v1", "truncation_rate")]["diff"] == 0.25 and by[("sft → v1", "response_length")]["diff"] == -1.75
    assert by[("v1 → v2", "rm_reward")]["diff"] == pytest.approx(0.0) and by[("v1 → v2", "rm_reward")]["verdict"] == "no measured difference"
    # the sampled evaluation, several answers per prompt averaged: v1 0.3, 0.1, 0.5, 0.7; v2 0.5, 0.3, 0.7, 1.0
    sampled = by[("v1 → v2", "sampled_rm_reward")]
    expected = paired_comparison([0.5, 0.3, 0.7, 1.0], [0.3, 0.1, 0.5, 0.7])
    assert {key: sampled[key] for key in expected if key != "significant"} == pytest.approx({k: v for k, v in expected.items() if k != "significant"})
    assert sampled["significant"] and sampled["verdict"] == "measured increase"
    assert sampled["diff"] == pytest.approx(0.225) and sampled["diff_stderr"] == pytest.approx(0.025)
    assert ("sft → v1", "sampled_rm_reward") not in by  # SFT has no sampled evaluation
    # a refreshed safety RM: the RM reward is not compared across the refresh, the rest is
    assert ("v2 → v2+gatt", "rm_reward") not in by and ("v2 → v2+gatt", "refusal_rate") in by
    assert any(note.startswith("v2 → v2+gatt: RM reward R_c not compared") for note in notes)
    md = (build_report(tmp_path).parent / "summary.md").read_text()
    assert "| sft → v1 | RM reward R_c | 0.250 | 0.400 | +0.150 ± 0.065 | 3 / 0 | 4 | measured increase |" in md
    assert "| sft → v1 | refusals | 0.250 | 0.000 | -0.250 ± 0.250 | 0 / 1 | 4 | no measured difference |" in md


def test_rs_controls_gatt_table30_and_policy_eval_are_reported(tmp_path):
    from core.evaluation import paired_comparison, win_rate
    from pipelines.report import gatt_curves

    with StageRun(tmp_path / "v1" / "rs", "rejection_sampling", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {"controls": {
            "rs_vs_best_of_1": {"gold_combined": paired_comparison([0.6, 0.7, 0.9], [0.5, 0.5, 0.6]),
                                "rm_win_rate": win_rate([0.6, 0.7, 0.9], [0.5, 0.7, 0.6])},
            "rs_vs_replay_only": {"gold_combined": paired_comparison([0.6, 0.7, 0.9], [0.6, 0.8, 0.8])}},
            # the targets against the policy's greedy answers on the sampled prompts (rejection_sampling.core.chosen_vs_greedy)
            "samples_gold": {"greedy": {"n": 4, "chosen": 0.75, "greedy": 0.5, "chosen_stderr": 0.1, "greedy_stderr": 0.1,
                                        "diff": 0.25, "diff_stderr": 0.1, "wins": 2, "losses": 0, "significant": True,
                                        "by_kind": {}}}})
    with StageRun(tmp_path / "gatt", "gatt", Cfg()) as run:
        atomic_write_json(run.folder / "eval.json", {
            "turns": [1, 2, 4], "conditions": {"before": {"description": "once, without GAtt"}, "after": {"description": "once, with GAtt"},
                                               "reminded": {"description": "every turn (ceiling)", "instruction": "every_turn"}},
            "table": {"before": {"1": 0.5, "2": 0.1, "4": 0.0}, "after": {"1": 0.9, "2": 0.8, "4": 0.8}, "reminded": {"1": 0.9, "2": 1.0, "4": 1.0}},
            "rows": {label: {"n_dialogues": 10, "condition": "every_turn" if label == "reminded" else "once",
                             "by_turn": {"1": r1, "2": r2, "3": r2, "4": r4}}
                     for label, (r1, r2, r4) in {"before": (0.5, 0.1, 0.0), "after": (0.9, 0.8, 0.8), "reminded": (0.9, 1.0, 1.0)}.items()},
            "unchecked": {"n_dialogues": 2}})
        atomic_write_json(run.folder / "policy_eval.json", {"models": {"before": {"rm_reward": 0.3}, "after": {"rm_reward": 0.35}}})
    index = build_report(tmp_path)
    page = index.read_text()
    controls = re.search(r'<table id="rs_controls">(.*?)</table>', page).group(1)
    # gold diffs 0.1, 0.2, 0.3: +0.200 ± 0.058; win rate 2 wins 1 tie of 3: 0.833 - 0.5
    assert "<td>v1/rs: RS vs best-of-1</td><td>gold combined</td><td>0.533</td><td>0.733</td><td>+0.200 ± 0.058</td><td>3 / 0</td><td>3</td><td>measured increase</td>" in controls
    assert "<td>v1/rs: RS vs best-of-1</td><td>RM win rate</td><td>0.500</td><td>0.833</td><td>+0.333 ± 0.167</td><td>2 / 0</td>" in controls
    assert "<td>v1/rs: RS vs replay-only</td><td>gold combined</td>" in controls and "no measured difference" in controls
    assert ("<td>v1/rs: targets vs policy greedy (sampled prompts)</td><td>gold combined</td><td>0.500</td><td>0.750</td>"
            "<td>+0.250 ± 0.100</td><td>2 / 0</td><td>4</td><td>measured increase</td>") in controls
    table30 = re.search(r'<table id="gatt_table30">(.*?)</table>', page).group(1)
    assert "<th>turn 1</th><th>turn 2</th><th>turn 4</th>" in table30
    # 0.9 of 10 dialogues: ± sqrt(0.9 · 0.1 / 10) = 9.5 points
    assert "<td>reminded: every turn (ceiling)</td><td>90% ± 9 (9/10)</td><td>100% ± 0 (10/10)</td>" in table30
    assert "<td>before: once, without GAtt</td><td>50% ± 16 (5/10)</td>" in table30
    assert "2 dialogues with unchecked instructions not counted" in page
    curves = gatt_curves(json.loads((tmp_path / "gatt" / "eval.json").read_text()))
    assert [(label, condition, turns) for label, condition, turns, _, _ in curves] == [
        ("before", "once", [1, 2, 3, 4]), ("after", "once", [1, 2, 3, 4]), ("reminded", "every_turn", [1, 2, 3, 4])]
    assert "<td>gatt (policy_eval)</td><td>after</td>" in page
    md = (index.parent / "summary.md").read_text()
    assert "| after: once, with GAtt | 90% ± 9 (9/10) | 80% ± 13 (8/10) | 80% ± 13 (8/10) |" in md
    assert "No paired differences between consecutive versions" in md


def test_absent_inputs_are_said_not_crashed(tmp_path, capsys):
    """A PPO folder without metrics, a GAtt folder without eval.json, an RS folder without
    controls: the report is written and names each absence."""
    for folder, stage in (("v2/ppo", "ppo"), ("gatt", "gatt"), ("v1/rs", "rejection_sampling")):
        with StageRun(tmp_path / folder, stage, Cfg()):
            pass
    atomic_write_json(tmp_path / "v1" / "rs" / "eval.json", {"models": {"before": {"rm_reward": 0.1}}})
    index = build_report(tmp_path)
    notes = capsys.readouterr().out
    for absent in ("No PPO curves", "No GAtt adherence", "No rejection-sampling control arms", "No GAtt Table 30",
                   "No paired differences between consecutive versions"):
        assert absent in notes
    assert list(index.parent.glob("*.png")) == []


def test_sampled_rows_without_their_prompt_are_judged_on_the_greedy_rows_prompt():
    """eval_sampled.jsonl rows carry only the prompt id: gold is re-judged on the prompt of
    the greedy row with that id, and each prompt gets its rounds' mean."""
    from pipelines.report import prompt_columns

    class Judge:  # scores the answer's length against the prompt's
        def combined(self, record, response):
            return len(response) / len(record["messages"][0]["content"])

    records = {"p0": {"id": "p0", "prompt": [{"role": "user", "content": "abcd"}], "category": "helpfulness"}}
    rows = [{"id": "p0", "round": j, "v1": "ab" * (j + 1), "v1_finished": True, "v1_length": 1} for j in range(2)]
    assert prompt_columns(rows, "v1", Judge(), "sampled_", records)["p0"]["sampled_gold_combined"] == pytest.approx(0.75)
