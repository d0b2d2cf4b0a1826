"""End to end: the smoke pipeline (tiny model) runs every stage, then its resume path.

This is the recipe in miniature: SFT -> two RMs -> V1 rejection sampling -> V2 with
refreshed RMs, rejection sampling pooled with V1, PPO on top -> GAtt -> report.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_pipeline(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "configs/pipelines/smoke.yaml", "--run-dir", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    result = run_pipeline(run_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


def test_every_stage_completed_and_wired(smoke_run):
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["outputs"]["final_model"] == str(smoke_run / "gatt" / "sft" / "model") or Path(manifest["outputs"]["final_model"]).is_dir()
    for stage in ["sft", "rm_helpfulness", "rm_safety", "v1/rs", "v2/pairs", "v2/rm_safety", "v2/rs", "v2/ppo", "gatt"]:
        stage_manifest = json.loads((smoke_run / stage / "manifest.json").read_text())
        assert stage_manifest["status"] == "completed", stage
        assert (smoke_run / stage / "config.yaml").is_file()
    # V2's rejection sampling pooled V1's samples and used the refreshed RMs.
    rs2 = json.loads((smoke_run / "v2" / "rs" / "manifest.json").read_text())["config"]
    assert rs2["pool_dirs"] == [str(smoke_run / "v1" / "rs")]
    assert rs2["reward_models"]["helpfulness"] == str(smoke_run / "v2" / "rm_helpfulness" / "model")
    assert rs2["policy"] == str(smoke_run / "v1" / "rs" / "model")
    # PPO starts from V2's rejection-sampling checkpoint.
    ppo = json.loads((smoke_run / "v2" / "ppo" / "manifest.json").read_text())["config"]
    assert ppo["model"]["policy"] == str(smoke_run / "v2" / "rs" / "model")
    # Evaluation and pair collection sample in the precision the pipeline YAML names.
    for folder in ["base/eval", "gatt/eval"]:
        assert json.loads((smoke_run / folder / "manifest.json").read_text())["config"]["dtype"] == "bfloat16"
    assert json.loads((smoke_run / "v2" / "pairs" / "manifest.json").read_text())["config"]["refresh"]["dtype"] == "bfloat16"
    rows = json.loads((smoke_run / "summary.json").read_text())["versions"]
    assert [row["version"] for row in rows] == ["base", "sft", "v1", "v2", "v2+gatt"]
    assert all(0 <= row["gold_combined"] <= 1 for row in rows)
    # every row after SFT is scored by the latest RMs and compared with the SFT model on the same prompts
    for row in rows[2:]:
        assert 0 <= row["rm_reward"] <= 1 and 0 <= row["rm_win_rate_vs_start"] <= 1
        assert "rm_reward_diff_vs_start_stderr" in row and "truncation_rate" in row
    report = smoke_run / "report"
    assert {p.name for p in report.glob("*.png")} == {"ppo_curves.png", "rs_max_median.png", "rm_accuracy.png", "gatt_adherence.png"}
    assert "<td>v2+gatt</td>" in (report / "index.html").read_text()


def test_rerun_skips_completed_stages_and_redoes_a_missing_one(smoke_run):
    before = json.loads((smoke_run / "v1" / "rs" / "manifest.json").read_text())
    # An interrupted GAtt: its manifest says it was still running.
    gatt_manifest = smoke_run / "gatt" / "manifest.json"
    data = json.loads(gatt_manifest.read_text())
    data["status"] = "running"
    gatt_manifest.write_text(json.dumps(data))
    result = run_pipeline(smoke_run)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "rs] " in log and "skipping" in log
    assert json.loads((smoke_run / "v1" / "rs" / "manifest.json").read_text()) == before  # untouched
    assert json.loads(gatt_manifest.read_text())["status"] == "completed"


def test_second_pipeline_on_the_same_folder_is_locked_out(smoke_run):
    lock = smoke_run / ".lock"
    lock.write_text(f"{os.getppid()}@{os.uname().nodename}")  # a live process holds the folder
    try:
        result = run_pipeline(smoke_run)
    finally:
        lock.unlink()
    assert result.returncode == 2
    assert "is in use by process" in result.stderr
