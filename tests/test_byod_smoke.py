"""Your model, your data: the whole recipe on public-format files with toyworld unimportable.

`configs/pipelines/byod-smoke.yaml` runs SFT on chat demonstrations, both reward models
on HH-RLHF / PKU-SafeRLHF / UltraFeedback / TRL implicit-prompt pairs, V1 rejection
sampling on the user's prompts, V2 with the RMs retrained on a new batch of
human-labelled pairs, rejection sampling pooled with V1 and PPO on top, GAtt on the
user's instruction library and dialogues, the shared evaluation on the user's held-out
prompts, and the report. The run is the README's command, `rlhf run PRESET`, in a
subprocess whose PYTHONPATH starts with a `toyworld` package that raises on import: any
code path that still reaches toyworld fails the run. (The console script, not
`python -m`, because `-m` and `-c` put the working directory, the repository with the
real toyworld, before PYTHONPATH.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRESET = "configs/pipelines/byod-smoke.yaml"


def blocked_env(tmp_path: Path) -> dict:
    blocker = tmp_path / "blocker" / "toyworld"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("toyworld must not be imported in a run on your own data")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)]), "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def byod_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("byod")
    run_dir = tmp / "run"
    rlhf = Path(sys.executable).parent / "rlhf"
    result = subprocess.run([str(rlhf), "run", PRESET, "--run-dir", str(run_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=900, env=blocked_env(tmp))
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, result.stdout + result.stderr


def test_the_blocker_blocks(tmp_path):
    """In the same environment an import of toyworld fails: the byod run passing is not
    an accident of the set-up."""
    rlhf = Path(sys.executable).parent / "rlhf"
    result = subprocess.run([str(rlhf), "run", "configs/pipelines/smoke.yaml", "--check"], cwd=REPO, capture_output=True,
                            text=True, env=blocked_env(tmp_path))
    assert result.returncode != 0 and "toyworld must not be imported" in result.stderr


def test_every_stage_wrote_its_model_metrics_and_the_report(byod_run):
    run_dir, log = byod_run
    for stage in ["sft", "rm_helpfulness", "rm_safety", "v1/rs", "v2/rm_helpfulness", "v2/rm_safety", "v2/rs", "v2/ppo"]:
        assert json.loads((run_dir / stage / "manifest.json").read_text())["status"] == "completed", stage
        assert (run_dir / stage / "model" / "config.json").is_file(), stage
        assert (run_dir / stage / "metrics.jsonl").stat().st_size > 0, stage
    assert (run_dir / "gatt" / "sft" / "model" / "config.json").is_file()
    assert (run_dir / "report" / "index.html").is_file()
    assert (run_dir / "report" / "rm_accuracy.png").is_file()  # on the user's held-out pairs
    heldout = json.loads((run_dir / "rm_safety" / "eval.json").read_text())["heldout"]
    assert heldout["overall"]["n"] == 40 and set(heldout["per_category"]) == {"helpfulness", "safety"}
    # every stage says where its model went
    for written in ["sft/model", "v1/rs/model", "v2/ppo/model", "gatt/sft/model"]:
        assert f"model: {run_dir / written}" in log, written


def test_user_data_reached_every_stage(byod_run):
    run_dir, _ = byod_run
    config = lambda stage: json.loads((run_dir / stage / "manifest.json").read_text())["config"]  # noqa: E731
    assert config("sft")["data"]["train"] == "tests/data/byod/sft_messages.jsonl"
    # V2's RMs: the user's four sources, kept, plus the new batch of labelled pairs
    sources = [source["source"] for source in config("v2/rm_safety")["data"]]
    assert sources == ["tests/data/byod/prefs_hh.jsonl", "tests/data/byod/prefs_pku.jsonl",
                       "tests/data/byod/prefs_ultrafeedback.jsonl", "tests/data/byod/prefs_implicit.jsonl",
                       "tests/data/byod/pairs_v2.jsonl"]
    assert config("v2/rs")["prompts"]["source"] == "tests/data/byod/prompts_train.jsonl"
    assert config("v2/rs")["pool_dirs"] == [str(run_dir / "v1" / "rs")]
    assert config("v2/ppo")["eval"]["prompts"] == "tests/data/byod/prompts_heldout.jsonl"
    gatt = config("gatt")
    assert gatt["instructions"]["source"] == "tests/data/byod/instructions.jsonl"
    assert gatt["reward_models"]["helpfulness"] == str(run_dir / "v2" / "rm_helpfulness" / "model")


def test_the_evaluation_is_rm_judged_on_the_users_prompts(byod_run):
    run_dir, _ = byod_run
    rows = json.loads((run_dir / "summary.json").read_text())["versions"]
    assert [row["version"] for row in rows] == ["base", "sft", "v1", "v2", "v2+gatt"]
    assert not any("gold_combined" in row for row in rows)  # no ground truth for the user's prompts
    for row in rows[1:]:
        assert 0 <= row["rm_reward"] <= 1 and row["n_prompts"] == 16
    for row in rows[2:]:
        assert "rm_win_rate_vs_start" in row and "rm_reward_diff_vs_start_stderr" in row
    evaluation = json.loads((run_dir / "v2" / "eval" / "eval.json").read_text())
    assert evaluation["prompts"]["source"] == "tests/data/byod/prompts_heldout.jsonl"
    assert set(evaluation["models"]) == {"start", "v2"}
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "RM reward R_c" in summary and "No gold columns" in summary
