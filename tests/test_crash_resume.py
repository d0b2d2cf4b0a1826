"""Kill anywhere, lose nothing: the smoke pipeline killed with SIGKILL at eight points,
resumed each time, ends exactly where an uninterrupted run with the same seed ends.

One uninterrupted reference run, then one run that is killed and restarted with the
same command (`rlhf run configs/pipelines/smoke.yaml --run-dir DIR`) eight times:

- inside SFT, right after its checkpoint-2 (the test polls for the file, then kills);
- inside SFT again, in the middle of writing checkpoint-4's weights (half a file on disk);
- inside the helpfulness RM's training, after its first logged step;
- while the safety RM's final model folder is being written (half a file on disk);
- inside V1's rejection sampling, after its first shard;
- inside V2's PPO, after its iteration-2 checkpoint;
- inside V2's PPO again, in the middle of writing its iteration-4 checkpoint;
- inside GAtt, after its synthesis, before its fine-tune.

The "in the middle of writing" kills are exact: the child process is started through
a wrapper that swaps `safetensors.torch.save_file` for one that writes the first half
of the matching file and then sends SIGKILL to its own process. The others are SIGKILL
from this test as soon as the polled file appears; each checks that the stage it
targets was still unfinished at that moment, and the next start's log shows that it
resumed (from a checkpoint, or from the shards on disk) rather than starting over.

Then: every model weight file, every samples/data JSONL, every JSON result (eval,
curves, summaries, checkpoint state) and every metrics row equals the reference run's
(paths and wall-clock timings aside), and no file is half-written: every visible
.json/.jsonl parses line by line, every .safetensors and .pt file loads, and no
hidden temporary file is left.

Several minutes of CPU: marked slow (`bash scripts/test.sh -m slow`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "configs/pipelines/smoke.yaml"

# Run `rlhf run ...` in a child process; with KILL_DURING_WRITE set, the first
# safetensors file whose path contains it is written half-way, then the process
# SIGKILLs itself (patched before transformers and the stages import save_file).
WRAPPER = """
import os, signal, sys
target = os.environ.get("KILL_DURING_WRITE")
if target:
    import safetensors.torch as st
    original = st.save_file
    def save_file(tensors, filename, metadata=None):
        if target in str(filename):
            data = st.save(tensors, metadata=metadata)
            with open(filename, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
            print(f"KILLED WHILE WRITING {filename}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(tensors, filename, metadata=metadata)
    st.save_file = save_file
from core.cli import main
sys.exit(main(["run", *sys.argv[1:]]))
"""


def start(run_dir: Path, log: Path, kill_during_write: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}  # a killed child keeps its log
    env.pop("KILL_DURING_WRITE", None)
    if kill_during_write:
        env["KILL_DURING_WRITE"] = kill_during_write
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "-c", WRAPPER, PIPELINE, "--run-dir", str(run_dir)],
                            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


# ------------------------------------------------------------------- kill points
def file_appears(relative: str) -> Callable[[Path], bool]:
    return lambda run: (run / relative).is_file()


def json_complete(relative: str) -> Callable[[Path], bool]:
    """The file exists and parses (the Trainer writes trainer_state.json in place, last)."""
    def ready(run: Path) -> bool:
        try:
            json.loads((run / relative).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return True
    return ready


def logged_a_step(stage: str, key: str) -> Callable[[Path], bool]:
    def ready(run: Path) -> bool:
        path = run / stage / "metrics.jsonl"
        return path.is_file() and f'"{key}"' in path.read_text(encoding="utf-8", errors="replace")
    return ready


@dataclass
class Kill:
    name: str
    stage: str  # the stage folder that must be unfinished when the process dies
    poll: Callable[[Path], bool] | None = None  # SIGKILL from outside when this turns true
    during_write: str | None = None  # or: the child kills itself half-way through this file
    resumed: tuple[str, ...] = ()  # what the next start's log must say
    not_redone: tuple[str, ...] = ()  # and must not say, between the two markers of `within`
    within: tuple[str, str] = ("", "")


KILLS = [
    Kill("inside SFT, after checkpoint-2", "sft", poll=json_complete("sft/checkpoints/checkpoint-2/trainer_state.json"),
         resumed=("SFT: resuming from", "checkpoint-2")),
    Kill("inside SFT, writing checkpoint-4", "sft", during_write="sft/checkpoints/checkpoint-4/",
         resumed=("removing incomplete checkpoint", "checkpoint-4", "SFT: resuming from")),
    Kill("inside the helpfulness RM's training", "rm_helpfulness", poll=logged_a_step("rm_helpfulness", "loss")),
    Kill("writing the safety RM's model folder", "rm_safety", during_write="rm_safety/.model."),
    Kill("inside V1 rejection sampling, after shard 0", "v1/rs", poll=file_appears("v1/rs/samples/shard-00000.jsonl"),
         resumed=("[rs] shard 2/3 sampled",), not_redone=("[rs] shard 1/3 sampled",),
         within=("[rs] iteration 1:", "pipeline: rs v1 done")),
    Kill("inside V2 PPO, after iteration 2's checkpoint", "v2/ppo", poll=file_appears("v2/ppo/checkpoints/iter-000002/state.json"),
         resumed=("ppo: resuming from", "iter-000002")),
    Kill("inside V2 PPO, writing iteration 4's checkpoint", "v2/ppo", during_write="v2/ppo/checkpoints/.tmp-iter-000004/critic",
         resumed=("ppo: resuming from", "iter-000002")),
    Kill("inside GAtt, after synthesis", "gatt", poll=file_appears("gatt/synthesis.json"),
         resumed=("GAtt: reusing the synthesised data",)),
]


def stage_status(run: Path, stage: str) -> str | None:
    try:
        return json.loads((run / stage / "manifest.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def kill_at(run: Path, kill: Kill, log: Path, timeout: float = 900) -> None:
    proc = start(run, log, kill.during_write)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None:
            if kill.poll is not None and kill.poll(run):
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.time() < deadline, f"{kill.name}: not reached in {timeout} s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"{kill.name}: the run was not killed (exit status {proc.returncode}); log:\n{log.read_text()[-3000:]}")
    assert stage_status(run, kill.stage) != "completed", f"{kill.name}: {kill.stage} had already finished"


# ------------------------------------------------------------------- comparison
VOLATILE = re.compile(r"time|timing|per_second|_at$")  # wall-clock numbers and dates


def visible_files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(run).parts))


def normalize(obj, run: Path):
    """Paths of this run replaced by <RUN>; wall-clock keys dropped."""
    if isinstance(obj, dict):
        return {k: normalize(v, run) for k, v in obj.items() if not VOLATILE.search(k)}
    if isinstance(obj, list):
        return [normalize(v, run) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(run), "<RUN>")
    return obj


def read_rows(path: Path) -> list:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{path}, line {number}: half-written or malformed ({exc})") from None
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_whole(run: Path) -> None:
    """No half-written file: everything visible parses or loads; no temporary file is left."""
    import torch
    from safetensors.torch import load_file

    hidden = [str(p.relative_to(run)) for p in run.rglob(".*")]
    assert not hidden, f"temporary files left behind: {hidden}"
    for path in visible_files(run):
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            read_rows(path)
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)


def assert_same_tensors(a, b, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def compare(reference: Path, crashed: Path) -> list[str]:
    """Every difference between the two runs' results (an empty list when they are equal)."""
    import torch

    ref_files = {str(p.relative_to(reference)) for p in visible_files(reference)}
    our_files = {str(p.relative_to(crashed)) for p in visible_files(crashed)}
    differences = []
    if ref_files != our_files:
        differences.append(f"file sets differ: only in reference {sorted(ref_files - our_files)}, only after crashes {sorted(our_files - ref_files)}")
    for name in sorted(ref_files & our_files):
        a, b = reference / name, crashed / name
        if a.name == "manifest.json":  # bookkeeping (times, attempts); its status is checked below
            continue
        if a.suffix == ".safetensors":
            if sha256(a) != sha256(b):
                differences.append(f"{name}: weights differ")
        elif a.suffix == ".pt":
            try:
                assert_same_tensors(torch.load(a, weights_only=True), torch.load(b, weights_only=True), name)
            except AssertionError as exc:
                differences.append(f"{name}: differs at {exc}")
        elif a.suffix == ".jsonl":
            if normalize(read_rows(a), reference) != normalize(read_rows(b), crashed):
                differences.append(f"{name}: rows differ")
        elif a.suffix == ".json":
            if normalize(json.loads(a.read_text()), reference) != normalize(json.loads(b.read_text()), crashed):
                differences.append(f"{name}: contents differ")
        elif a.suffix in (".yaml", ".txt", ".jinja"):
            if a.read_text().replace(str(reference), "<RUN>") != b.read_text().replace(str(crashed), "<RUN>"):
                differences.append(f"{name}: text differs")
    return differences


# -------------------------------------------------------------------------- test
@pytest.mark.slow
def test_killed_at_eight_points_and_resumed_equals_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference" / "run"
    crashed = tmp_path / "crashed" / "run"
    logs = tmp_path / "logs"
    logs.mkdir()

    proc = start(reference, logs / "reference.log")
    assert proc.wait(timeout=1800) == 0, (logs / "reference.log").read_text()[-4000:]

    # Start i is killed at KILLS[i]; start i + 1 (the next kill's, or the final one)
    # resumes from what start i left, and its log must show it.
    for index, kill in enumerate(KILLS):
        kill_at(crashed, kill, logs / f"{index}.log")
    proc = start(crashed, logs / f"{len(KILLS)}.log")
    assert proc.wait(timeout=1800) == 0, (logs / f"{len(KILLS)}.log").read_text()[-4000:]
    for index, kill in enumerate(KILLS):
        log = (logs / f"{index + 1}.log").read_text()
        for words in kill.resumed:
            assert words in log, f"after the kill {kill.name}: {words!r} not in the next start's log"
        start_at = log.find(kill.within[0])
        section = log[start_at:log.find(kill.within[1], start_at)] if kill.within[1] else log
        for words in kill.not_redone:
            assert words not in section, f"after the kill {kill.name}: {words!r} in the next start's log"

    for run in (reference, crashed):
        check_whole(run)
        for manifest in run.rglob("manifest.json"):
            assert json.loads(manifest.read_text())["status"] == "completed", manifest
    differences = compare(reference, crashed)
    assert not differences, "\n".join(differences)
