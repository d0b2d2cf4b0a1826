"""Training: tokens/s and model FLOPs utilisation (MFU) of SFT and reward-model
training, against this machine's matmul FLOP/s measured in the same run.

Both trainers are built by the stages' own code: SFT through `sft.train.make_trainer`
on `sft.data.build_sft_dataset`'s answer-only examples (toyworld demonstrations), the
reward model through `reward.train`'s `load_pairs` / `mix_pairs` / `tokenize_pairs` /
`load_reward_model` and its NaN-checking `RewardTrainer` subclass, with the
speed-relevant `RewardConfig` arguments of `reward.train.run` (batch, precision, no
gradient checkpointing). Each row runs `--warmup` optimizer steps untimed, then
`--steps` timed ones (see `benchmarks.harness.step_meter`).

How FLOPs are counted: 6 x N x tokens (2N forward, 4N backward per token), where
tokens are the real tokens of the timed steps (padding excluded: padded positions
are computed but wasted, which is what packing removes) and N is the parameters that
take part in matrix products: every parameter except the input-embedding lookup,
with a tied LM head counted once as the matmul it is (SFT), and no LM head for the
reward model (its head is a hidden x 1 vector). The attention-score term
(12 x layers x hidden x context per token) is left out; for SmolLM2 (30 layers, 576
wide) at about 100 tokens of context it is about 2 % of 6N. MFU = achieved FLOP/s /
matmul FLOP/s of the precision the matmuls run in (bf16 autocast -> the bf16 peak).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: see benchmarks/harness.py

import argparse  # noqa: E402
import gc  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.harness import LoadNote, choose_device, step_meter  # noqa: E402
from benchmarks.machine import matmul_flops  # noqa: E402
from benchmarks.results import markdown_table, report  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def matmul_params(model) -> int:
    """N of 6N: parameters used in matrix products (the embedding lookup is not one;
    a tied LM head is, once)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    n = sum(p.numel() for p in model.parameters() if p is not embed)
    if head is not None and head.weight is embed:
        n += embed.numel()
    return n


def sft_trainer(args, dtype: str, packing: bool, out: Path):
    """The SFT stage's Trainer on toyworld demonstrations (answer-only labels)."""
    from core.config import validate_config
    from core.models import load_causal_lm, load_tokenizer
    from sft.config import SFTConfig
    from sft.data import build_sft_dataset
    from sft.train import make_trainer, stage_inputs

    config = validate_config(SFTConfig, {
        "model": {"name": args.model},
        "data": {"train": "toyworld", "toyworld_n": args.sft_examples},
        "training": {
            "max_steps": args.warmup + args.steps,
            "batch_size": args.pack_batch_size if packing else args.batch_size,
            "max_length": args.pack_length,
            "packing": packing,
            "dtype": dtype,
            "logging_steps": 10**6,
            "save_steps": 10**6,
        },
        "eval": {"enabled": False},
        "output_dir": str(out),
        "progress": False,
    }, origin="benchmarks.training")
    inputs = stage_inputs(config)  # writes the toyworld demonstrations into out/
    tokenizer = load_tokenizer(config.model.name, config.model.chat_template)
    examples, _ = build_sft_dataset(config, tokenizer, train_path=inputs["train"])
    model = load_causal_lm(config.model.name, dtype="float32")  # fp32 master weights, as the stage
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return make_trainer(config, model, tokenizer, examples), model


def rm_trainer(args, dtype: str, out: Path, checkpointing: bool | None = None):
    """The reward stage's RewardTrainer (margin column, NaN check) on the helpfulness mix.

    `checkpointing=None` passes no activation-checkpointing argument, exactly as
    `reward.train.run` does when `gradient_checkpointing: false`; TRL's configs then
    default it to ON. `False` turns it off explicitly (what the stage's config means).
    """
    from accelerate import PartialState
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig

    from core.models import load_tokenizer
    from reward.config import RewardConfig
    from reward.data_mix import mix_pairs
    from reward.train import (
        load_pairs,
        load_reward_model,
        make_callbacks,
        make_trainer_class,
        tokenize_pairs,
    )

    n_pairs = args.rm_batch_size * (args.warmup + args.steps)
    config = RewardConfig(kind="helpfulness", output_dir=str(out), init_model=args.model, toyworld_pairs=max(2 * n_pairs, 64),
                          batch_size=args.rm_batch_size, per_device_batch_size=args.rm_batch_size,
                          bf16=dtype == "bfloat16", eval_pairs=0)
    tokenizer = load_tokenizer(config.init_model, chat_template=config.chat_template)
    tokenizer.padding_side = "right"
    mixed = mix_pairs(load_pairs(config), config.kind, config.mix.helpfulness_other_ratio, config.mix.safety_main_fraction, config.seed)
    rows, _ = tokenize_pairs(tokenizer, mixed, config.margin, config.max_length)
    model = load_reward_model(config.init_model, tokenizer.pad_token_id)
    trl_args = TRLRewardConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=args.warmup + args.steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=1,
        adam_beta1=config.adam_beta1, adam_beta2=config.adam_beta2, adam_epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        seed=config.seed, data_seed=config.seed,
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        max_length=None,
        **({} if checkpointing is None else {"activation_checkpointing": checkpointing}),
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    trainer = make_trainer_class()(model=model, args=trl_args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                   callbacks=make_callbacks(None, PartialState()))  # the stage's callbacks (no run folder)
    return trainer, model


def measure(trainer, model, device: str, warmup: int) -> dict:
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import SaveStrategy

    trainer.args.save_strategy = SaveStrategy.NO  # no final checkpoint: nothing here is kept
    trainer.remove_callback(PrinterCallback)
    meter = step_meter(device, warmup)
    meter.attach(trainer)
    trainer.train()
    result = meter.result()
    result["n_params"] = matmul_params(model)
    result["checkpointing"] = bool(trainer.args.activation_checkpointing)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks training")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when visible")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="float32 and/or bfloat16 (bf16 autocast, fp32 master weights)")
    parser.add_argument("--stages", default="sft,rm")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps per row")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per row")
    parser.add_argument("--batch-size", type=int, default=8, help="SFT examples per step without packing")
    parser.add_argument("--pack-length", type=int, default=256, help="SFT max_length: tokens per packed row")
    parser.add_argument("--pack-batch-size", type=int, default=2, help="packed rows per SFT step")
    parser.add_argument("--sft-examples", type=int, default=300, help="toyworld demonstrations built (and packed)")
    parser.add_argument("--no-packing-rows", action="store_true", help="skip the packed SFT rows")
    parser.add_argument("--rm-batch-size", type=int, default=8, help="preference pairs per RM step")
    parser.add_argument("--rm-stage-only", action="store_true", help="skip the RM row with activation checkpointing turned off")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    device = choose_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = LoadNote()
    dtypes = [d for d in args.dtypes.split(",") if d]
    peaks = {d: matmul_flops(DTYPES[d], device=device) for d in dtypes}

    runs: list[dict] = []  # {"stage", "how", "dtype", "packing", **measure()}
    for dtype in dtypes:
        if "sft" in args.stages:
            for packing in ([False] if args.no_packing_rows else [False, True]):
                with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
                    trainer, model = sft_trainer(args, dtype, packing, Path(tmp))
                    runs.append({"stage": "SFT", "how": "sft.train.make_trainer", "dtype": dtype, "packing": "on" if packing else "off",
                                 **measure(trainer, model, device, args.warmup)})
                    del trainer, model
                    gc.collect()
        if "rm" in args.stages:
            # as reward.train.run configures it today, and with checkpointing off as its config says
            for how, checkpointing in (("reward.train's trainer setup", None), ("same, activation_checkpointing=False", False)):
                if checkpointing is False and args.rm_stage_only:
                    continue
                with tempfile.TemporaryDirectory(prefix="bench-rm-") as tmp:
                    trainer, model = rm_trainer(args, dtype, Path(tmp), checkpointing)
                    runs.append({"stage": "reward model", "how": how, "dtype": dtype, "packing": "-",
                                 **measure(trainer, model, device, args.warmup)})
                    del trainer, model
                    gc.collect()

    rows = []
    for r in runs:
        r["flops"] = 6 * r["n_params"] * r["real_tokens"] / r["seconds"]
        padding = 1 - r["real_tokens"] / r["padded_tokens"]
        rows.append([
            f"{r['stage']} ({r['how']})", r["dtype"], r["packing"], "on" if r["checkpointing"] else "off",
            f"{r['seconds_per_step']:.2f}", f"{r['real_tokens'] / r['steps']:.0f}", f"{padding:.0%}",
            f"{r['tokens_per_s']:.0f}", f"{r['flops'] / 1e9:.1f}", f"{peaks[r['dtype']] / 1e9:.0f}", f"{r['flops'] / peaks[r['dtype']]:.1%}",
        ])
    table = markdown_table(
        ["stage", "precision", "packing", "activation checkpointing", "s/step", "real tokens/step", "padding", "tokens/s",
         "achieved GFLOP/s (6N)", "matmul GFLOP/s", "MFU"],
        rows,
    )

    def find(**keys) -> dict | None:
        return next((r for r in runs if all(r[k] == v for k, v in keys.items())), None)

    ratios = []
    for r in runs:
        off = find(stage=r["stage"], how=r["how"], dtype=r["dtype"], packing="off")
        if r["packing"] == "on" and off:
            ratios.append(f"SFT packing on/off ({r['dtype']}) {r['tokens_per_s'] / off['tokens_per_s']:.2f}x")
        fp32 = find(stage=r["stage"], how=r["how"], dtype="float32", packing=r["packing"])
        if r["dtype"] == "bfloat16" and fp32:
            ratios.append(f"{r['stage']} bf16/fp32 ({r['how']}, packing {r['packing']}) {r['tokens_per_s'] / fp32['tokens_per_s']:.2f}x")
        stage_rm = find(stage="reward model", dtype=r["dtype"], checkpointing=True)
        if r["stage"] == "reward model" and not r["checkpointing"] and stage_rm:
            ratios.append(f"RM checkpointing off/on ({r['dtype']}) {r['tokens_per_s'] / stage_rm['tokens_per_s']:.2f}x")
    n_params = {r["stage"]: r["n_params"] for r in runs}
    notes = (
        f"Model {args.model} on {device}; N (matmul parameters) = "
        + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in n_params.items())
        + ". FLOPs = 6 x N x real tokens (padding excluded, attention-score term left out). "
        f"{args.warmup} warm-up + {args.steps} timed optimizer steps per row; SFT without packing {args.batch_size} examples per step, "
        f"with packing {args.pack_batch_size} rows of {args.pack_length} tokens (TRL best-fit packing, padding-free); "
        f"RM {args.rm_batch_size} pairs (chosen + rejected) per step. bf16 = autocast with fp32 master weights. "
        "reward.train passes no activation-checkpointing argument when its config says gradient_checkpointing: false, "
        "and TRL's RewardConfig defaults it to on, so the stage trains with checkpointing on (the row below it turns it off). "
        f"Same run: {'; '.join(ratios) if ratios else 'no ratios'}. {load}"
    )
    report(f"Training throughput ({device})", table, notes)
