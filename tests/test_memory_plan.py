"""The PPO memory plan (core/memory_plan.py) against byte counts worked out by hand.

The tiny shape used throughout: hidden h = 8, 2 layers, intermediate I = 16, vocab V = 10,
2 heads and 1 kv head (head_dim 4, so the k/v width kv = 4), LM head not tied.

  projections of one layer (in x out): q 8x8 = 64, k 8x4 = 32, v 8x4 = 32, o 8x8 = 64,
      gate 8x16 = 128, up 8x16 = 128, down 16x8 = 128                      -> 576
  layer = 576 + two RMSNorm weights (2 x 8)                                  -> 592
  root  = embeddings 10 x 8 + LM head 10 x 8 + final norm 8 = 80 + 80 + 8    -> 168
  causal LM (policy, reference) = 2 x 592 + 168                              -> 1352
  scalar model (critic, RM) = 1352 - LM head 80 + score head 8 + bias 1      -> 1281
  LoRA r = 2 on the seven projections, per layer r x (in + out):
      q 2x16 = 32, k 2x12 = 24, v 24, o 32, gate 2x24 = 48, up 48, down 48   -> 256
      x 2 layers                                                             -> 512
  activations of one layer per token, bf16 compute and float32 residual:
      (4h + 2kv + 4I) x 2 + 4h x 4 = (32 + 8 + 64) x 2 + 32 x 4 = 208 + 128  -> 336

Settings common to the cases: 2 GPUs, minibatch 4 (2 rows per process per forward,
micro-batch 8 notwithstanding), prompts of 5 tokens and 3 new tokens (8 tokens a row),
rollout chunks of 3 rows, bfloat16 compute and RMs.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.memory_plan import (
    LLAMA2_7B,
    LLAMA2_70B,
    LlamaShape,
    PPOMemorySettings,
    llama2_shape,
    ppo_memory_plan,
    ppo_memory_warning,
)

TINY = LlamaShape("tiny", hidden=8, layers=2, intermediate=16, vocab=10, heads=2, kv_heads=1)
BASE = PPOMemorySettings(memory="separate", dtype="bfloat16", rm_dtype="bfloat16", distributed="none", n_gpus=2,
                         batch_size=8, minibatch_size=4, micro_batch_size=8, chunk_size=3, prompt_tokens=5,
                         response_tokens=3, lora_r=2)


def test_parameter_counts_from_the_shapes():
    assert TINY.layer_params == 592
    assert TINY.params == 1352
    assert TINY.scalar_params == 1281
    assert TINY.lora_params(2) == 512
    assert TINY.layer_activation_bytes(2, 4) == 336
    # Llama-2-7B: layer = 4 x 4096^2 (attention) + 3 x 4096 x 11008 (MLP) + 2 x 4096
    #   = 67,108,864 + 135,266,304 + 8,192 = 202,383,360; x 32 = 6,476,267,520;
    #   + 2 x 32000 x 4096 + 4096 = 262,148,096 -> 6,738,415,616 (the published 6.74B).
    assert LLAMA2_7B.params == 6_738_415_616
    # Llama-2-70B (8 kv heads of 128): attention 2 x 8192^2 + 2 x 8192 x 1024 = 150,994,944;
    #   MLP 3 x 8192 x 28672 = 704,643,072; norms 16,384 -> 855,654,400 a layer; x 80 =
    #   68,452,352,000; + 2 x 32000 x 8192 + 8192 = 524,296,192 -> 68,976,648,192 (68.98B).
    assert LLAMA2_70B.params == 68_976_648_192


def test_separate_models_replicated():
    plan = ppo_memory_plan(TINY, BASE)
    by_name = {m.name: m for m in plan.models}
    # trained: float32 master 4 B, float32 gradient 4 B, two AdamW moments 8 B a parameter
    assert (by_name["policy"].weights, by_name["policy"].grads, by_name["policy"].optimizer) == (5408, 5408, 10816)  # 1352 x 4, x 4, x 8
    assert (by_name["critic"].weights, by_name["critic"].grads, by_name["critic"].optimizer) == (5124, 5124, 10248)  # 1281 x 4, x 4, x 8
    # frozen, bfloat16: 2 B a parameter, nothing else
    assert (by_name["reference"].weights, by_name["reference"].grads, by_name["reference"].optimizer) == (2704, 0, 0)  # 1352 x 2
    assert by_name["helpfulness RM"].weights == by_name["safety RM"].weights == 2562  # 1281 x 2
    assert plan.resident == 39424  # 5408 + 10816 + 5124 + 10248 + 2704 + 2 x 2562
    assert plan.grads == 10532  # 5408 + 5124
    assert plan.autocast_copies == 2704  # bf16 copy of every policy weight: 2 x 1352
    assert plan.fsdp_working == 0
    assert plan.settings.rows_per_forward == 2  # min(micro 8, minibatch 4 / 2 GPUs)
    assert plan.activations == 10752  # 2 rows x 8 tokens x 2 layers x 336
    assert plan.logits == 800  # 2 rows x (3 + 1) tokens x V 10 x (2 + 4 + 4)
    assert plan.rollout_kv == 768  # 3 rows x 8 tokens x 2 layers x (k, v) 2 x kv 4 x 2 B
    assert plan.rollout_peak == 40192  # 39424 + 768
    assert plan.train_peak == plan.peak == 64212  # 39424 + 10532 + 2704 + 10752 + 800


def test_fsdp2_shards_every_model_and_checkpointing_keeps_layer_inputs():
    plan = ppo_memory_plan(TINY, replace(BASE, distributed="fsdp2", gradient_checkpointing=True))
    by_name = {m.name: m for m in plan.models}
    assert (by_name["policy"].weights, by_name["policy"].grads, by_name["policy"].optimizer) == (2704, 2704, 5408)  # halves
    assert (by_name["critic"].weights, by_name["critic"].grads, by_name["critic"].optimizer) == (2562, 2562, 5124)
    assert by_name["reference"].weights == 1352 and by_name["safety RM"].weights == 1281
    assert plan.resident == 19712  # 2704 + 5408 + 2562 + 5124 + 1352 + 2 x 1281
    assert plan.grads == 5266  # 2704 + 2562
    assert plan.autocast_copies == 1184  # one recomputed layer's bf16 copy: 2 x 592
    assert plan.fsdp_working == 5408  # (2 gathered layers 2 x 592 + root 168) x 4 B
    assert plan.activations == 6400  # 2 rows x 8 tokens x (2 layer inputs x h 8 x 4 B + one layer 336)
    assert plan.train_peak == 38770  # 19712 + 5266 + 5408 + 1184 + 6400 + 800
    assert plan.gathered_policy == 5408  # generation on the whole float32 policy: 1352 x 4 B
    assert plan.rollout_peak == 25888  # 19712 + max(gathered policy 5408, gathered layers 5408) + KV 768


def test_generating_on_gathered_or_sharded_weights():
    gathered = ppo_memory_plan(TINY, replace(BASE, memory="lora", distributed="fsdp2"))
    # resident, halves: base 1352 + policy adapter (1024 + AdamW 2048) + critic adapter and
    # head (521 x 4 / 2 = 1042 + 2084) + RMs 2 x 1281
    assert gathered.resident == 10112
    # the whole bf16 base 1352 x 2 B and both adapters in the compute dtype 2 x 512 x 2 B
    assert gathered.gathered_policy == 4752
    assert gathered.fsdp_working == 2704  # (2 layers 2 x 592 + root 168) x 2 B
    assert gathered.rollout_peak == 15632  # 10112 + 4752 + KV 768
    sharded = ppo_memory_plan(TINY, replace(BASE, memory="lora", distributed="fsdp2", generation_weights="sharded"))
    assert sharded.gathered_policy == 0
    assert sharded.rollout_peak == 13584  # 10112 + one layer at a time (the working set 2704) + 768
    assert sharded.train_peak == gathered.train_peak
    # whole models on every process: nothing to gather, whatever the key says
    assert ppo_memory_plan(TINY, replace(BASE, memory="lora", distributed="ddp")).gathered_policy == 0


def test_lora_shared_base_under_ddp():
    plan = ppo_memory_plan(TINY, replace(BASE, memory="lora", distributed="ddp"))
    by_name = {m.name: m for m in plan.models}
    assert by_name["LoRA base (= reference)"].weights == 2704  # 1352 x 2, frozen
    # adapters: float32 masters; DDP's gradient buckets double the gradients
    assert (by_name["policy adapter"].weights, by_name["policy adapter"].grads, by_name["policy adapter"].optimizer) == (2048, 4096, 4096)
    # critic adapter 512 + value head 8 + 1 = 521 parameters
    assert (by_name["critic adapter + head"].weights, by_name["critic adapter + head"].grads) == (2084, 4168)
    assert plan.autocast_copies == 0  # the base is already bf16: autocast makes no copy
    # the bf16 base keeps a bf16 residual stream: 208 + 32 x 2 = 272 a layer and token
    assert plan.activations == 8704  # 2 rows x 8 tokens x 2 layers x 272
    assert plan.resident == 20224  # 2704 + 2048 + 4096 + 2084 + 4168 + 2 x 2562
    assert plan.train_peak == 37992  # 20224 + grads 4096 + 4168 + 8704 + 800


def test_offload_moves_the_shards_to_the_host():
    plan = ppo_memory_plan(TINY, replace(BASE, distributed="fsdp2", offload=True, gradient_checkpointing=True))
    assert plan.resident == plan.grads == 0
    # every model's full bytes on the host of the node (2 processes x their halves):
    # policy 21632 + critic 20496 + reference 2704 + RMs 2 x 2562
    assert plan.cpu_per_node == 49956
    assert plan.train_peak == 5408 + 1184 + 6400 + 800  # gathered layers, one layer's copies, activations, logits
    with pytest.raises(ValueError, match="needs distributed: fsdp2"):
        replace(BASE, offload=True)


def test_training_only_the_top_layers_counts_gradients_moments_copies_and_activations_of_those():
    # model.trainable_layers: 1 (core.models.freeze_lower_layers): the top layer, the final
    # norm and what is outside the body train; every weight stays a float32 master.
    plan = ppo_memory_plan(TINY, replace(BASE, trainable_layers=1))
    by_name = {m.name: m for m in plan.models}
    assert TINY.trained_params(1) == 680  # layer 592 + final norm 8 + untied LM head 80
    assert TINY.trained_params(1, scalar_head=True) == 609  # 592 + 8 + score head 8 + bias 1
    assert (by_name["policy"].weights, by_name["policy"].grads, by_name["policy"].optimizer) == (5408, 2720, 5440)  # 1352 x 4; 680 x 4, x 8
    assert (by_name["critic"].weights, by_name["critic"].grads, by_name["critic"].optimizer) == (5124, 2436, 4872)  # 1281 x 4; 609 x 4, x 8
    assert plan.resident == 28672  # 5408 + 5440 + 5124 + 4872 + reference 2704 + RMs 2 x 2562
    assert plan.grads == 5156  # 2720 + 2436
    assert plan.autocast_copies == 1360  # bf16 copies of the trained policy weights only: 2 x 680
    assert plan.activations == 5376  # 2 rows x 8 tokens x 1 layer x 336: the backward stops at the top layer
    assert plan.train_peak == 41364  # 28672 + 5156 + 1360 + 5376 + logits 800 (all layers: 64212)
    assert plan.rollout_peak == 29440  # 28672 + KV 768
    assert "top 1 layers trained" in plan.settings.describe()


def test_trainable_layers_beyond_the_depth_or_with_lora_is_refused():
    with pytest.raises(ValueError, match="trainable_layers: 3, but tiny has 2 decoder layers"):
        ppo_memory_plan(TINY, replace(BASE, trainable_layers=3))
    with pytest.raises(ValueError, match="memory: separate"):
        replace(BASE, memory="lora", trainable_layers=1)


def test_the_plan_reads_trainable_layers_from_a_ppo_config():
    from core.config import load_config
    from core.memory_plan import settings_from_ppo_config
    from ppo.config import PPOConfig

    quickstart = load_config(PPOConfig, "configs/ppo/quickstart.yaml")
    assert quickstart.model.trainable_layers is not None
    assert settings_from_ppo_config(quickstart, n_gpus=1).trainable_layers == quickstart.model.trainable_layers
    assert settings_from_ppo_config(load_config(PPOConfig, "configs/ppo/paper.yaml"), n_gpus=8).trainable_layers is None


def test_the_llama2_sizes_by_name():
    assert llama2_shape("meta-llama/Llama-2-7b-hf") is LLAMA2_7B
    assert llama2_shape("meta-llama/Llama-2-70b-chat-hf") is LLAMA2_70B
    assert llama2_shape("runs/llama2-70b/v4/rs/model") is LLAMA2_70B
    assert llama2_shape("embedded:smollm2-135m") is None
    assert llama2_shape("meta-llama/Llama-2-7b0") is None


def test_warning_for_the_paper_preset_at_7b_and_none_for_unknown_sizes():
    from core.config import load_config
    from ppo.config import PPOConfig

    paper = load_config(PPOConfig, "configs/ppo/paper.yaml", ["model.policy=meta-llama/Llama-2-7b-hf"])
    assert ppo_memory_warning(paper, n_gpus=8, gpu_gb=80) is None  # fsdp2 + gradient checkpointing fits 7B
    whole = load_config(PPOConfig, "configs/ppo/paper.yaml", ["model.policy=meta-llama/Llama-2-7b-hf", "distributed=ddp",
                                                              "model.gradient_checkpointing=false"])
    warning = ppo_memory_warning(whole, n_gpus=8, gpu_gb=80)
    assert warning is not None and "Llama-2-7B" in warning and "distributed=ddp" in warning
    assert "fits with" in warning  # and names a configuration that fits
    at_70b = ppo_memory_warning(paper, n_gpus=8, gpu_gb=80, model_name="meta-llama/Llama-2-70b-hf")
    assert at_70b.startswith("PPO at Llama-2-70B") and "model.memory: lora, distributed: fsdp2" in at_70b
    assert "model.generation_weights: sharded" in at_70b  # the bf16 base cannot be gathered whole
    smoke = load_config(PPOConfig, "configs/ppo/smoke.yaml")
    assert ppo_memory_warning(smoke, n_gpus=8, gpu_gb=80) is None


def test_rlhf_run_check_warns_for_ppo_on_llama2_only():
    from core.config import load_config
    from pipelines.config import PipelineConfig
    from pipelines.run import check_pipeline, format_check

    assert not [row for row in check_pipeline(load_config(PipelineConfig, "configs/pipelines/llama2-7b.yaml"))
                if row[3] == "warning"]  # the paper preset (fsdp2, gradient checkpointing) fits 7B
    rows = check_pipeline(load_config(PipelineConfig, "configs/pipelines/llama2-70b.yaml"))
    warnings = [row for row in rows if row[3] == "warning"]
    assert [row[0] for row in warnings] == ["v4.ppo", "v5.ppo"]
    assert all("PPO at Llama-2-70B needs" in row[2] for row in warnings)
    assert "v4.ppo: memory" in format_check(rows)
    smoke = check_pipeline(load_config(PipelineConfig, "configs/pipelines/smoke.yaml"))
    assert not [row for row in smoke if row[3] == "warning"]


def test_the_readme_table_is_what_the_function_prints(capsys):
    from pathlib import Path

    from core.memory_plan import main

    main([])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    assert printed and all(line in readme for line in printed), "rerun `python -m core.memory_plan` and paste its tables into the README"
