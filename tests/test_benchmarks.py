"""The stage benchmarks' helpers and tables on the tiny model (benchmarks/training.py,
ppo.py, rs.py). The figures themselves come from `python -m benchmarks <name>`,
never from tests: here only the counting, the memory meter and the table shapes."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_matmul_params_counts_a_tied_head_once_and_no_embedding_lookup():
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from benchmarks.training import matmul_params

    config = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, pad_token_id=0)
    tied = LlamaForCausalLM(config)
    total = sum(p.numel() for p in tied.parameters())  # the tied matrix once
    assert matmul_params(tied) == total  # the lookup is free, the head matmul is not

    config.tie_word_embeddings = False
    untied = LlamaForCausalLM(config)
    assert matmul_params(untied) == sum(p.numel() for p in untied.parameters()) - 100 * 16

    config.num_labels = 1
    rm = LlamaForSequenceClassification(config)
    assert matmul_params(rm) == sum(p.numel() for p in rm.parameters()) - 100 * 16


def test_peak_memory_sees_an_allocation_after_the_reset():
    """In a fresh process: in this one, earlier tests' peaks and freed-but-resident
    memory would decide whether a new block moves the high-water mark."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from benchmarks.harness import peak_memory, reset_peak_memory\n"
        "reset_peak_memory('cpu')\n"
        "before = peak_memory('cpu')\n"
        "block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched\n"
        "print(peak_memory('cpu') - before)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    grown = int(subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, check=True).stdout)
    assert grown >= 48 << 20


def test_step_meter_times_only_the_steps_after_warm_up():
    from benchmarks.harness import step_meter

    meter = step_meter("cpu", warmup_steps=1)
    meter.ends, meter.real, meter.padded = [10.0, 12.0, 16.0], [5, 6, 10], [8, 8, 16]
    result = meter.result()
    assert result == {"seconds": 6.0, "steps": 2, "real_tokens": 16, "padded_tokens": 24,
                      "tokens_per_s": 16 / 6.0, "seconds_per_step": 3.0}
    meter.ends = meter.ends[:1]
    with pytest.raises(RuntimeError, match="timed step"):
        meter.result()


def _capture(monkeypatch, module) -> dict:
    captured = {}
    monkeypatch.setattr(module, "report", lambda title, table, notes="": captured.update(title=title, table=table, notes=notes))
    return captured


def test_training_benchmark_reports_sft_with_and_without_packing_and_the_rm(monkeypatch):
    import benchmarks.training as bench

    captured = _capture(monkeypatch, bench)
    monkeypatch.setattr(bench, "matmul_flops", lambda dtype, device="cpu": 100e9)
    bench.main(["--model", "embedded:tiny-llama", "--dtypes", "float32", "--steps", "1",
                "--sft-examples", "24", "--batch-size", "2", "--pack-length", "64", "--pack-batch-size", "1", "--rm-batch-size", "2"])
    lines = captured["table"].splitlines()
    assert "MFU" in lines[0] and "tokens/s" in lines[0]
    assert len(lines) == 2 + 4  # SFT packing off/on, RM as the stage sets it up, RM checkpointing off
    assert "| off |" in lines[2] and "| on |" in lines[3]
    assert "packing on/off" in captured["notes"] and "6 x N" in captured["notes"]


def test_rs_benchmark_reports_one_row_per_k(monkeypatch):
    import benchmarks.rs as bench

    captured = _capture(monkeypatch, bench)
    bench.main(["--model", "embedded:tiny-llama", "--ks", "2,3", "--prompts", "2", "--new-tokens", "3"])
    lines = captured["table"].splitlines()
    assert "samples/s" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["2", "3"]
    assert [line.split("|")[3].strip() for line in lines[2:]] == ["4", "6"]  # prompts x K samples
    assert all(float(line.split("|")[8]) <= 3 for line in lines[2:])  # at most --new-tokens per answer


@pytest.mark.slow
def test_ppo_benchmark_compares_both_memory_modes_with_rloo(monkeypatch):
    import benchmarks.ppo as bench

    captured = _capture(monkeypatch, bench)
    bench.main(["--model", "embedded:tiny-llama", "--batch-size", "4", "--minibatch-size", "2",
                "--new-tokens", "3", "--n-prompts", "8", "--iterations", "1", "--modes", "separate,top_layers,lora,rloo",
                "--trainable-layers", "1"])
    lines = captured["table"].splitlines()
    assert len(lines) == 2 + 4
    assert "separate" in lines[2] and "top 1 layers" in lines[3] and "LoRA" in lines[4] and "RLOOTrainer" in lines[5]
    assert lines[5].split("|")[8].strip() == "1.00x"  # RLOO against itself
