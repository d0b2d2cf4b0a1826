"""A NaN or inf in a reward, a loss or a gradient stops PPO, the reward-model trainer and
the SFT trainer with a clear error, before any checkpoint is written or overwritten.

Each test first leaves a checkpoint on disk (a run that stopped after its first
step or iteration), then resumes from it with a fault injected into the very next
step, through the real `rlhf` command (in-process). It checks exit status 2, one
error line that says what was not finite and where, and that every file under the
checkpoints folder is byte for byte as it was, with the same modification time: no
new checkpoint, no rewritten one, no model folder, the manifest marked failed.

tests/test_ppo_loop.py checks the NaN guard inside a fresh PPO run; this file checks
the guarantee a resumed run depends on, for all three trainers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.run import read_manifest, read_metrics

REPO = Path(__file__).resolve().parents[1]

# The CLIs run in this process: keep library log handlers off pytest's closed streams.
pytestmark = pytest.mark.usefixtures("library_log_handlers_on_real_stderr")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under `folder`: contents and modification time (ns)."""
    assert folder.is_dir(), f"{folder} is missing"
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def one_error_line(capsys) -> str:
    """The one error line on stderr (progress bars around it are fine; a traceback is not)."""
    err = capsys.readouterr().err
    errors = [line.strip("\r") for line in err.splitlines() if line.strip("\r").startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def poison_first_gradient(parameters) -> None:
    """Put an inf into the first gradient there is (what an overflow in backward leaves)."""
    for param in parameters:
        if param.grad is not None:
            param.grad.view(-1)[0] = float("inf")
            return
    raise AssertionError("no gradient to poison")


# ------------------------------------------------------------------ Trainer stages
def hf_faults(monkeypatch, trainer_cls, kind: str, from_step: int) -> None:
    """Make the Hugging Face Trainer step `from_step + 1` (and later) non-finite:
    `loss`: the loss is NaN; `gradient`: one gradient is inf after clipping."""
    import transformers

    if kind == "loss":
        original = trainer_cls.compute_loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = original(self, model, inputs, return_outputs, num_items_in_batch)
            if self.state.global_step < from_step:
                return result
            return (result[0] * float("nan"), *result[1:]) if return_outputs else result * float("nan")

        monkeypatch.setattr(trainer_cls, "compute_loss", compute_loss)
    else:
        original = transformers.Trainer._clip_grad_norm

        def clip(self, model):
            norm = original(self, model)
            if self.state.global_step >= from_step:
                poison_first_gradient(model.parameters())
            return norm

        monkeypatch.setattr(transformers.Trainer, "_clip_grad_norm", clip)


def assert_stopped_before_the_checkpoint_changed(out: Path, checkpoints_before: dict, final_model: Path) -> None:
    assert snapshot(out / "checkpoints") == checkpoints_before, "a checkpoint was written or overwritten"
    assert not final_model.exists()
    assert read_manifest(out)["status"] == "failed"
    assert max(row["step"] for row in read_metrics(out)) <= 1  # nothing logged past the checkpoint


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_sft_stops_before_overwriting_its_checkpoint(kind, tmp_path, monkeypatch, capsys):
    import trl

    out = tmp_path / "sft"
    argv = ["sft", "--config", str(REPO / "configs/sft/smoke.yaml"), f"output_dir={out}", "eval.enabled=false",
            "data.toyworld_n=12", "training.max_steps=3", "training.save_steps=1", "training.save_total_limit=1"]
    hf_faults(monkeypatch, trl.SFTTrainer, kind, from_step=1)
    assert main(argv) == 2  # step 1 is saved as checkpoint-1; step 2 is poisoned
    one_error_line(capsys)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1"]
    before = snapshot(out / "checkpoints")

    assert main(argv) == 2  # resumes from checkpoint-1; step 2 is poisoned again
    error = one_error_line(capsys)
    assert "SFT: non-finite gradient (NaN or inf) at step 2" in error
    assert "the last checkpoint is left as it was" in error
    assert_stopped_before_the_checkpoint_changed(out, before, out / "model")


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_reward_trainer_stops_before_overwriting_its_checkpoint(kind, tmp_path, monkeypatch, capsys):
    import trl

    out = tmp_path / "rm"
    argv = ["reward", "train", "--config", str(REPO / "configs/reward/smoke.yaml"), f"output_dir={out}",
            "toyworld_pairs=24", "eval_pairs=0", "save_steps=1"]
    hf_faults(monkeypatch, trl.RewardTrainer, kind, from_step=1)
    assert main(argv) == 2
    one_error_line(capsys)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1"]
    before = snapshot(out / "checkpoints")

    assert main(argv) == 2
    error = one_error_line(capsys)
    if kind == "loss":  # the trainer's own loss check fires first
        assert "reward-model loss is nan at step 1" in error
    else:
        assert "reward model: non-finite gradient (NaN or inf) at step 2" in error
    assert_stopped_before_the_checkpoint_changed(out, before, out / "model")


# ---------------------------------------------------------------------------- PPO
def make_reward_model(folder: Path, seed: int) -> Path:
    """A random one-output reward model on the tiny-llama body, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models import resolve_model_path

    source = resolve_model_path("embedded:tiny-llama")
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.05)
    model.config.pad_token_id = model.config.pad_token_id or model.config.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def ppo_argv(out: Path, rms: tuple[Path, Path], **extra) -> list[str]:
    settings = {
        "output_dir": out, "model.policy": "embedded:tiny-llama", "model.critic_init": "policy",
        "reward_models.helpfulness": rms[0], "reward_models.safety": rms[1],
        "data.n_prompts": 8, "eval.n_prompts": 2, "sampling.max_new_tokens": 6, "eval.sampling.max_new_tokens": 6,
        "eval.every": 0, "ppo.batch_size": 4, "ppo.minibatch_size": 2, "ppo.chunk_size": 2, "ppo.micro_batch_size": 2,
        "ppo.ppo_epochs": 1, "iterations": 3, "checkpoint_every": 1, "progress": False, **extra,
    }
    return ["ppo", *(f"{key}={value}" for key, value in settings.items())]


@pytest.fixture(scope="module")
def ppo_checkpointed(tmp_path_factory):
    """A PPO run stopped after iteration 1 (its checkpoint on disk), and a pristine copy of it."""
    root = tmp_path_factory.mktemp("ppo_faults")
    rms = (make_reward_model(root / "rm_helpful", 1), make_reward_model(root / "rm_safety", 2))
    out = root / "ppo"
    assert main(ppo_argv(out, rms, stop_after_iteration=1)) == 2  # "stopped after iteration 1; rerun to resume"
    pristine = root / "pristine"
    shutil.copytree(out, pristine)  # copy2: contents and modification times
    return out, pristine, rms


def restore(out: Path, pristine: Path) -> None:
    shutil.rmtree(out)
    shutil.copytree(pristine, out)


def ppo_fault(monkeypatch, kind: str) -> str:
    """Inject `kind` into every step of the resumed run; returns what the error must say."""
    import ppo.train
    from reward.scorer import RewardScorer, ScoreBatch

    if kind == "reward-nan":
        original = RewardScorer.score
        monkeypatch.setattr(RewardScorer, "score", lambda self, p, r: ScoreBatch(original(self, p, r).raw, torch.full((len(r),), float("nan"))))
        return "non-finite helpfulness RM score at iteration 2"
    if kind == "reward-inf":
        monkeypatch.setattr(RewardScorer, "score_ids", lambda self, sequences: torch.full((len(sequences),), float("inf")))
        return "produced a NaN or inf score at iteration 2; the last checkpoint is left as it was"
    if kind == "loss-nan":
        original_loss = ppo.train.value_loss

        def value_loss(*args, **kwargs):
            loss, stats = original_loss(*args, **kwargs)
            return loss * float("nan"), stats

        monkeypatch.setattr(ppo.train, "value_loss", value_loss)
        return "non-finite loss at iteration 2"
    original_clip = ppo.train.clip_gradients

    def clip_gradients(models, grad_clip):
        poison_first_gradient(models.trainable())
        return original_clip(models, grad_clip)

    monkeypatch.setattr(ppo.train, "clip_gradients", clip_gradients)
    return "non-finite gradient at iteration 2"


@pytest.mark.parametrize("kind", ["reward-nan", "reward-inf", "loss-nan", "gradient-inf"])
def test_ppo_stops_before_overwriting_its_checkpoint(kind, ppo_checkpointed, monkeypatch, capsys):
    out, pristine, rms = ppo_checkpointed
    restore(out, pristine)
    capsys.readouterr()
    before = snapshot(out / "checkpoints")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["iter-000001"]
    expected = ppo_fault(monkeypatch, kind)

    assert main(ppo_argv(out, rms)) == 2  # resumes at iteration 2, which is poisoned
    error = one_error_line(capsys)
    assert expected in error
    assert snapshot(out / "checkpoints") == before, "a checkpoint was written or overwritten"
    assert not (out / "model").exists() and not (out / "eval.json").exists()
    assert read_manifest(out)["status"] == "failed"
    assert max(row["step"] for row in read_metrics(out)) == 1
    state = json.loads((out / "checkpoints" / "iter-000001" / "state.json").read_text())
    assert state["iteration"] == 1
