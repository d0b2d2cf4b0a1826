"""Stage run folders: resolved config, manifest, metrics, skip-if-done, lock.

A stage folder (for example `runs/quickstart/v2/ppo/`) holds:

- `config.yaml`: the full resolved config, written before any work starts;
- `manifest.json`: inputs with content hashes, outputs, package version, git
  commit, start and end times and a status (`running`, `completed`, `failed`);
- `metrics.jsonl`: one JSON object per logged step (`{"step", "stage", ...}`);
- a model card (`README.md`, `core.model_card`) in the folder of an output named
  "model", written when the stage completes;
- the sinks named by `report_to` (`core.tracking`): TensorBoard events under
  `tensorboard/`, a wandb run under `wandb/`, an MLflow run (under `mlruns/` by default);
- the stage's outputs.

A stage whose manifest says `completed`, whose config is the same and whose
inputs hash the same is skipped on rerun (`StageRun.is_complete`). A lock file
keeps a second process from writing into a folder that is in use.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.config import config_to_dict, dump_config
from core.errors import RLHFError
from core.io import atomic_write_json, atomic_write_text, file_hash, pid_alive
from core.tracking import (
    Sink,
    check_report_to,
    close_sinks,
    open_sinks,
    push_to_hub,
    tracked_scalars,
)

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LOCK = ".lock"


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-rlhf")
    except Exception:  # not installed as a distribution (running from a source tree)
        return "0+unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def hash_inputs(inputs: Mapping[str, str | os.PathLike | None]) -> dict[str, dict]:
    """Content hash of each local input; non-local inputs (hub ids, embedded names) by name."""
    hashed = {}
    for name, value in inputs.items():
        if value is None:
            continue
        path = Path(value)
        if path.exists():
            hashed[name] = {"path": str(value), "sha256": file_hash(path)}
        else:
            hashed[name] = {"path": str(value), "sha256": None}
    return hashed


def read_manifest(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


class RunLockedError(RLHFError):
    pass


class MetricsLogger:
    """Appends one JSON object per step to `metrics.jsonl`; sends its numbers to the
    open sinks of `core.tracking` (TensorBoard, wandb, MLflow), named `<stage>/<key>` in each.

    Appending line by line (flushed each time) means a killed run keeps every
    line it logged; a resumed run truncates lines past its checkpoint step with
    `truncate_after` so the file never holds the same step twice.
    """

    def __init__(self, folder: str | os.PathLike, stage: str, sinks: list[Sink] | None = None):
        self.path = Path(folder) / METRICS
        self.stage = stage
        self.sinks = list(sinks or [])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                # A process killed mid-row left a torn last line: cut it, so that the rows
                # appended now start on a line of their own and every line parses.
                atomic_write_text(self.path, data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace"))

    def log(self, step: int, **metrics: Any) -> None:
        clean = {}
        for key, value in metrics.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None  # JSON has no NaN; a None makes the gap visible in plots
            clean[key] = value
        row = {"step": int(step), "stage": self.stage, **clean}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.sinks:
            scalars = tracked_scalars(self.stage, clean)
            for sink in self.sinks:
                sink.log(int(step), scalars)

    def truncate_after(self, step: int) -> None:
        """Drop logged rows with a step greater than `step` (used when resuming)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a torn last line from a killed process
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def close(self, failed: bool = False) -> None:
        sinks, self.sinks = self.sinks, []
        close_sinks(sinks, failed)


def read_metrics(folder: str | os.PathLike) -> list[dict]:
    path = Path(folder) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class FollowerRun:
    """What the other processes of a multi-process launch hold instead of the StageRun:
    only the main process locks and writes the run folder (config, manifest, metrics);
    the others run the same stage body against this, which writes nothing."""

    metrics = None

    def __init__(self):
        self.extra: dict = {}

    def __enter__(self) -> FollowerRun:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_output(self, name: str, path) -> None:
        pass


class StageRun:
    """One stage's folder. Use as a context manager around the stage's work.

    >>> run = StageRun(out_dir, "sft", config, inputs={"train": path},
    ...                report_to=config.report_to, push_to_hub=config.push_to_hub)
    >>> if run.is_complete(): return
    >>> with run:
    ...     run.metrics.log(step, loss=0.3)
    ...     run.add_output("model", out_dir / "model")

    `report_to` names the sinks (`core.tracking`) besides metrics.jsonl; a missing
    package is a ConfigError here, before anything is written. `push_to_hub` (a hub
    repo id) uploads the output named "model", with its card, once the stage completes.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        stage: str,
        config: BaseModel,
        inputs: Mapping[str, str | os.PathLike | None] | None = None,
        report_to: tuple[str, ...] | list[str] = (),
        push_to_hub: str | None = None,
    ):
        self.folder = Path(folder)
        self.stage = stage
        self.config = config
        self.inputs = dict(inputs or {})
        self.report_to = tuple(dict.fromkeys(report_to))
        check_report_to(self.report_to)
        self.push_to_hub = push_to_hub
        self.outputs: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.metrics: MetricsLogger | None = None
        self._manifest: dict | None = None
        self._locked = False

    # -- skip logic -----------------------------------------------------------
    def is_complete(self) -> bool:
        """True if a previous run completed with the same config and unchanged inputs."""
        manifest = read_manifest(self.folder)
        if not manifest or manifest.get("status") != "completed":
            return False
        if manifest.get("config") != config_to_dict(self.config):
            return False
        if manifest.get("inputs") != hash_inputs(self.inputs):
            return False
        return all(Path(path).exists() for path in manifest.get("outputs", {}).values())

    def previous_manifest(self) -> dict | None:
        return read_manifest(self.folder)

    # -- lifecycle ------------------------------------------------------------
    def _acquire_lock(self) -> None:
        lock = self.folder / LOCK
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock.read_text(encoding="utf-8", errors="replace").strip()
            pid = owner.split("@")[0]
            if owner.endswith("@" + socket.gethostname()) and pid.isdigit() and not pid_alive(int(pid)):
                lock.unlink(missing_ok=True)  # left by a process that was killed
                return self._acquire_lock()
            raise RunLockedError(
                f"{self.folder} is in use by process {owner} (lock file {lock}); "
                "wait for it to finish, or delete the lock file if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}@{socket.gethostname()}")
        self._locked = True

    def __enter__(self) -> StageRun:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            sinks = open_sinks(self.report_to, self.folder, self.stage, config_to_dict(self.config))
        except BaseException:
            self._release_lock()  # __exit__ is not called when __enter__ raises
            raise
        atomic_write_text(self.folder / CONFIG, dump_config(self.config))
        previous = read_manifest(self.folder) or {}
        self._manifest = {
            "stage": self.stage,
            "status": "running",
            "package_version": package_version(),
            "git_commit": git_commit(),
            "started_at": previous.get("started_at") if previous.get("status") == "running" else now(),
            "resumed_at": now() if previous.get("status") in ("running", "failed") else None,
            "finished_at": None,
            "config": config_to_dict(self.config),
            "inputs": hash_inputs(self.inputs),
            "outputs": {},
        }
        atomic_write_json(self.folder / MANIFEST, self._manifest)
        self.metrics = MetricsLogger(self.folder, self.stage, sinks=sinks)
        return self

    @property
    def input_hashes(self) -> dict[str, dict]:
        """The inputs' content hashes as this run's manifest records them (hashed once, on entering)."""
        return self._manifest["inputs"]

    def add_output(self, name: str, path: str | os.PathLike) -> None:
        self.outputs[name] = str(path)

    def _write_model_card(self, model_dir: Path) -> None:
        """README.md in the model folder from the final manifest (core.model_card); a
        card that cannot be written is logged, never a failed stage."""
        from core.model_card import write_model_card

        try:
            write_model_card(model_dir, self.folder, manifest=self._manifest)
        except Exception as exc:  # noqa: BLE001 - the model is saved and the manifest says completed
            logging.getLogger("core.run").warning("no model card for %s: %s: %s", model_dir, type(exc).__name__, exc)

    def _push(self) -> None:
        """Upload the model folder to `push_to_hub`, after the manifest says completed (a
        failed upload leaves a completed stage, and says how to upload by hand)."""
        model_dir = self.outputs.get("model")
        if not model_dir or not Path(model_dir).is_dir():
            raise RLHFError(f"push_to_hub: stage {self.stage} saved no model folder to upload")
        try:
            url = push_to_hub(model_dir, self.push_to_hub, self.stage)
        except Exception as exc:
            raise RLHFError(f"push_to_hub: uploading {model_dir} to {self.push_to_hub} failed ({type(exc).__name__}: {exc}); "
                            f"the stage is complete; upload by hand with `hf upload {self.push_to_hub} {model_dir}`") from exc
        assert self._manifest is not None
        self._manifest["pushed_to_hub"] = {"repo_id": self.push_to_hub, "commit": url}
        atomic_write_json(self.folder / MANIFEST, self._manifest)

    def _release_lock(self) -> None:
        if self._locked:
            (self.folder / LOCK).unlink(missing_ok=True)
            self._locked = False

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.metrics is not None:
                try:
                    self.metrics.close(failed=exc_type is not None)
                except Exception as close_exc:  # noqa: BLE001 - the manifest must still say how the stage ended
                    logging.getLogger("core.run").warning("closing report_to sinks of %s: %s: %s",
                                                          self.folder, type(close_exc).__name__, close_exc)
            assert self._manifest is not None
            self._manifest.update(
                status="completed" if exc_type is None else "failed",
                finished_at=now(),
                outputs=self.outputs,
                **({"error": f"{exc_type.__name__}: {exc}"} if exc_type is not None else {}),
                **self.extra,
            )
            if exc_type is None and "model" in self.outputs and Path(self.outputs["model"]).is_dir():
                # before the manifest says completed: a process killed in between reruns the stage
                self._write_model_card(Path(self.outputs["model"]))
            atomic_write_json(self.folder / MANIFEST, self._manifest)
            if exc_type is None and self.push_to_hub:
                self._push()
        finally:
            self._release_lock()
