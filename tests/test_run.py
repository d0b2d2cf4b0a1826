"""Run folders: config + manifest written, skip when done and unchanged, atomic writes, lock."""

import json
import os

import pytest

from core.config import StrictModel
from core.io import atomic_write_text, file_hash, read_jsonl, write_jsonl
from core.run import RunLockedError, StageRun, read_metrics


class Cfg(StrictModel):
    lr: float = 0.1


def test_stage_writes_config_manifest_metrics(tmp_path):
    data = tmp_path / "train.jsonl"
    write_jsonl(data, [{"a": 1}])
    run = StageRun(tmp_path / "stage", "sft", Cfg(), inputs={"train": data})
    assert not run.is_complete()
    with run:
        run.metrics.log(1, loss=0.5)
        run.metrics.log(2, loss=float("nan"))
        out = tmp_path / "stage" / "out.txt"
        atomic_write_text(out, "x")
        run.add_output("out", out)
    manifest = json.loads((tmp_path / "stage" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["inputs"]["train"]["sha256"] == file_hash(data)
    assert manifest["outputs"] == {"out": str(out)}
    assert "lr: 0.1" in (tmp_path / "stage" / "config.yaml").read_text()
    assert [row["loss"] for row in read_metrics(tmp_path / "stage")] == [0.5, None]
    assert not (tmp_path / "stage" / ".lock").exists()

    assert StageRun(tmp_path / "stage", "sft", Cfg(), inputs={"train": data}).is_complete()
    assert not StageRun(tmp_path / "stage", "sft", Cfg(lr=0.2), inputs={"train": data}).is_complete()
    write_jsonl(data, [{"a": 2}])
    assert not StageRun(tmp_path / "stage", "sft", Cfg(), inputs={"train": data}).is_complete()


def test_failed_stage_is_marked_and_not_complete(tmp_path):
    run = StageRun(tmp_path / "s", "rm", Cfg())
    with pytest.raises(RuntimeError), run:
        raise RuntimeError("boom")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "boom" in manifest["error"]
    assert not StageRun(tmp_path / "s", "rm", Cfg()).is_complete()


def test_atomic_write_leaves_old_file_when_writer_dies(tmp_path):
    target = tmp_path / "data.jsonl"
    write_jsonl(target, [{"i": 0}])

    def rows():
        yield {"i": 1}
        raise KeyboardInterrupt  # the process is interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(target, rows())
    assert read_jsonl(target) == [{"i": 0}]
    assert os.listdir(tmp_path) == ["data.jsonl"]  # no temporary file left behind


def test_second_writer_is_locked_out(tmp_path):
    with StageRun(tmp_path / "s", "ppo", Cfg()):
        with pytest.raises(RunLockedError, match="in use by process"):
            with StageRun(tmp_path / "s", "ppo", Cfg()):
                pass


def test_stale_lock_from_dead_process_is_taken_over(tmp_path):
    import socket

    folder = tmp_path / "s"
    folder.mkdir()
    (folder / ".lock").write_text(f"999999999@{socket.gethostname()}")
    with StageRun(folder, "ppo", Cfg()):
        pass
    assert json.loads((folder / "manifest.json").read_text())["status"] == "completed"


def test_metrics_truncate_after_resume_point(tmp_path):
    with StageRun(tmp_path / "s", "ppo", Cfg()) as run:
        for step in range(1, 6):
            run.metrics.log(step, reward=step)
        run.metrics.truncate_after(3)
    assert [row["step"] for row in read_metrics(tmp_path / "s")] == [1, 2, 3]
