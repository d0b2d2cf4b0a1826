"""What the stage benchmarks share: device choice, peak memory, timing of Trainer
steps, the reward models they score with, and the note on how loaded the box was.

Every benchmark sets OMP_WAIT_POLICY=PASSIVE before it imports torch, unless the
environment already says otherwise (see benchmarks/generation.py: on a shared box GNU
OpenMP's spin-waiting makes every parallel op wait for a descheduled partner
thread); this module does the same for anything that imports it first.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

# ----------------------------------------------------------------- device


def choose_device(requested: str | None) -> str:
    """`cuda` when asked for (or available and nothing was asked), else `cpu`.

    `cpu` on a GPU machine hides the GPU (CUDA_VISIBLE_DEVICES=""), because the
    Trainer-based stages pick the GPU by themselves whenever they can see one; CUDA
    reads that variable when it first initialises, which has not happened yet here.
    """
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: no CUDA device is visible")
    return requested


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------- memory

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: str) -> None:
    """Start a new high-water mark: CUDA's allocator peak, or the process's RSS peak
    (VmHWM; Linux resets it when "5" is written to /proc/self/clear_refs)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass  # no reset: peak_memory() then covers the whole process (see peak_memory_kind)


def peak_memory(device: str) -> int:
    """Bytes: CUDA max_memory_allocated, or the RSS high-water mark since the last reset."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def process_peak_memory(device: str) -> int:
    """Bytes: the whole process's peak (loading included), never reset."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()  # reset like peak_memory: the allocator keeps no other peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_kind(device: str) -> str:
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated"
    return "RSS high-water mark (VmHWM, reset once the models are loaded)" if _CLEAR_REFS.exists() else "RSS high-water mark (ru_maxrss, whole process)"


def gib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 30):.2f}"


# ----------------------------------------------------------------- load note


class LoadNote:
    """Load average before and after, threads and OpenMP policy, for the table's notes."""

    def __init__(self):
        self.before = os.getloadavg()[0]

    def __str__(self) -> str:
        return (
            f"Threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
            f"load average {self.before:.1f} before and {os.getloadavg()[0]:.1f} after "
            f"({os.cpu_count()} cores; on a shared box absolute figures move with the load, ratios within one run are the comparable numbers)."
        )


# ----------------------------------------------------------------- Trainer steps


def step_meter(device: str, warmup_steps: int):
    """A TrainerCallback that times optimizer steps and counts the tokens they saw.

    Install it with `meter.attach(trainer)`: it wraps `trainer.training_step` to count,
    per step, the real tokens (attention_mask ones; every token of a padding-free packed
    row) and the padded tokens (input_ids elements). The first `warmup_steps` steps are
    not timed (allocator warm-up, first-call overheads); the rate is over the rest,
    from the end of the last warm-up step to the end of the last step.
    """
    from transformers import TrainerCallback

    class StepMeter(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.real: list[int] = []
            self.padded: list[int] = []
            self._real = self._padded = 0

        def attach(self, trainer) -> None:
            inner = trainer.training_step

            def counted(model, inputs, *args, **kwargs):
                ids = inputs["input_ids"]
                mask = inputs.get("attention_mask")
                self._real += int(mask.sum()) if mask is not None else ids.numel()
                self._padded += ids.numel()
                return inner(model, inputs, *args, **kwargs)

            trainer.training_step = counted
            trainer.add_callback(self)

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            self.ends.append(time.perf_counter())
            self.real.append(self._real)
            self.padded.append(self._padded)
            self._real = self._padded = 0

        def result(self) -> dict:
            if len(self.ends) <= warmup_steps or warmup_steps < 1:
                raise RuntimeError(f"need at least one warm-up step and one timed step, got {len(self.ends)} steps")
            seconds = self.ends[-1] - self.ends[warmup_steps - 1]
            steps = len(self.ends) - warmup_steps
            real = sum(self.real[warmup_steps:])
            padded = sum(self.padded[warmup_steps:])
            return {"seconds": seconds, "steps": steps, "real_tokens": real, "padded_tokens": padded,
                    "tokens_per_s": real / seconds, "seconds_per_step": seconds / steps}

    return StepMeter()


# ----------------------------------------------------------------- reward models


def make_untrained_rm(base: str, folder: Path, seed: int) -> Path:
    """A one-output reward model on `base`'s body with a random scalar head (std 0.05),
    saved with its tokenizer: costs exactly what a trained RM costs to run, which is
    all a speed benchmark needs (the scores only steer what PPO learns)."""
    from core.models import load_tokenizer
    from reward.train import load_reward_model

    tokenizer = load_tokenizer(base)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = load_reward_model(base, tokenizer.pad_token_id)
        with torch.no_grad():
            model.score.weight.normal_(0, 0.05)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
