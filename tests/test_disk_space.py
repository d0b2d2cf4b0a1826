"""Free-space checks: too little room for a checkpoint or a model folder is a clear error
raised before anything is written, and the last complete checkpoint is kept."""

import json
from types import SimpleNamespace

import pytest
import torch

from core import diskspace
from core.diskspace import checkpoint_bytes, ensure_free_space, free_bytes, tensor_bytes
from core.errors import DiskSpaceError

MIB = 2**20


def fake_free(monkeypatch, *free_bytes_per_call):
    """shutil.disk_usage reports these free sizes, one per call (the last one repeats)."""
    calls = []

    def usage(path):
        calls.append(path)
        return SimpleNamespace(total=2**40, used=0, free=free_bytes_per_call[min(len(calls), len(free_bytes_per_call)) - 1])

    monkeypatch.setattr(diskspace.shutil, "disk_usage", usage)
    return calls


def test_sizes_by_hand():
    weights = [torch.zeros(10), torch.zeros(4, dtype=torch.bfloat16)]  # 40 + 8 bytes
    assert tensor_bytes(weights) == 48
    # + AdamW's two float32 moments for the 10 trainable values: 2 * 4 * 10
    assert checkpoint_bytes(weights, weights[:1]) == 48 + 80


def test_ensure_free_space_names_the_folder_and_the_sizes(tmp_path, monkeypatch):
    fake_free(monkeypatch, 100 * MIB)
    ensure_free_space(tmp_path, 30 * MIB, "test write")  # 30 MiB * 1.1 + 64 MiB margin fits in 100
    with pytest.raises(DiskSpaceError, match=rf"test write: {tmp_path} has 100 MiB free, the write needs about 174 MiB"):
        ensure_free_space(tmp_path, 100 * MIB, "test write")
    ensure_free_space(tmp_path, 100 * MIB, "test write", replaced=80 * MIB)  # the old copy it deletes counts as free


def test_free_bytes_of_a_folder_not_made_yet_asks_its_nearest_parent(tmp_path, monkeypatch):
    calls = fake_free(monkeypatch, 5)
    assert free_bytes(tmp_path / "a" / "b") == 5
    assert calls == [tmp_path]


def test_save_model_keeps_the_old_folder_when_the_disk_is_full(tmp_path, monkeypatch, tiny_model_and_tokenizer):
    from core.models import save_model

    model, tokenizer = tiny_model_and_tokenizer
    out = tmp_path / "model"
    save_model(model, tokenizer, out)
    before = sorted(p.name for p in out.iterdir())
    fake_free(monkeypatch, 0)
    with pytest.raises(DiskSpaceError, match="saving the model to"):
        save_model(model, tokenizer, out)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing deleted, nothing half-written


def test_ppo_checkpoint_is_not_started_without_room(tmp_path, monkeypatch):
    from ppo.checkpoint import save_checkpoint

    models = SimpleNamespace(policy_params={"w": torch.nn.Parameter(torch.zeros(8))}, critic_params={})
    fake_free(monkeypatch, 0)
    with pytest.raises(DiskSpaceError, match="PPO checkpoint of iteration 3"):
        save_checkpoint(accelerator=None, folder=tmp_path / "ckpt", iteration=3, models=models, optimizer=None, state={})
    assert not (tmp_path / "ckpt").exists()


def test_sft_stops_before_the_checkpoint_that_does_not_fit(tmp_path, monkeypatch):
    """Room for the first checkpoint, none for the second: the run stops with the error
    and checkpoint 1 is left complete for a resume."""
    from core.config import load_config
    from sft.config import SFTConfig
    from sft.train import run

    data = tmp_path / "sft.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]}
            for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    config = load_config(SFTConfig, "configs/sft/smoke.yaml",
                         [f"data.train={data}", f"output_dir={out}", "training.max_steps=3", "training.save_steps=1",
                          "eval.enabled=false"])
    fake_free(monkeypatch, 2**40, 0)
    with pytest.raises(DiskSpaceError, match="SFT: checkpoint at step 2"):
        run(config)
    saved = sorted(p.name for p in out.rglob("checkpoint-*") if p.is_dir())
    assert saved == ["checkpoint-1"]
    assert any(p.name.endswith(".safetensors") for p in next(out.rglob("checkpoint-1")).iterdir())
    assert not (out / "model").exists()
