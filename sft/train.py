"""Stage 1, supervised fine-tuning: the loss is on answer tokens only.

`run(config) -> Path` is the whole stage as a flat loop with numbered steps:

1. run folder: skip if a completed run has the same config and inputs; resume
   from the last Trainer checkpoint if a run with the same config stopped midway;
2. data: load, check, tokenize with answer-only labels, report what was left out;
3. model and tokenizer (full fine-tuning or LoRA);
4. gold evaluation before training (held-out toyworld prompts);
5. train with TRL's `SFTTrainer` on the pre-tokenized examples (our labels as is);
6. save `OUT/model` (safetensors, LoRA merged unless `merge_lora: false`);
7. gold evaluation after training, `eval.json`;
8. manifest (outputs, data report, eval summary).

Other stages fine-tune through the same function: rejection sampling calls
`run(config)` with `data.train=<its best-of-K JSONL>`, Ghost Attention with
`data.learn=last` as well (see `finetune_on`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from core.config import load_config
from core.io import atomic_write_json, atomic_write_text
from core.run import FollowerRun, StageRun, read_manifest
from sft.config import SFTConfig
from sft.data import build_sft_dataset

log = logging.getLogger("sft")

STAGE = "sft"
TOYWORLD_FILE = "toyworld_train.jsonl"


# ---------------------------------------------------------------- helpers
def stage_inputs(config: SFTConfig) -> dict:
    """Inputs whose content decides whether a finished run can be skipped."""
    from core.models import resolve_model_path
    from core.sources import is_toyworld, toyworld_sft_examples

    train = config.data.train
    if is_toyworld(train):
        # The demonstrations are written to the run folder first, so the skip check
        # hashes their content (a change in toyworld's code changes the input) and a
        # bad row can be named by its line. Deterministic, so every process writes the same.
        path = Path(config.output_dir) / TOYWORLD_FILE
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in toyworld_sft_examples(
            config.data.toyworld_n, config.data.toyworld_seed, config.data.toyworld_family_weights))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
        train = str(path)
    return {"train": train, "model": resolve_model_path(config.model.name)}


def _trainer_callback_class():
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Forwards the Trainer's logs (loss, lr, grad norm, ...) to metrics.jsonl."""

        def __init__(self, metrics):
            self.metrics = metrics

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.metrics is None or not state.is_world_process_zero or not logs:
                return
            if "train_loss" in logs:
                # The end-of-training summary: its train_loss averages only the steps run
                # since the last (re)start, so a resumed run would log another number.
                return
            # TRL's `num_tokens` counts from the last (re)start (it is not checkpointed);
            # the Trainer's `num_input_tokens_seen` is, so a resumed run logs the same count.
            numbers = {f"train/{k}": v for k, v in logs.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "num_tokens"}
            if numbers:
                self.metrics.log(state.global_step, **numbers)

    return MetricsCallback


def make_trainer(config: SFTConfig, model, tokenizer, examples: list[dict], metrics=None):
    """TRL `SFTTrainer` on pre-tokenized `{"input_ids", "labels"}` rows.

    A dataset with a `labels` column is used as is by TRL (no re-tokenization, no
    re-masking); the collator pads labels with -100. With packing, TRL's
    best-fit-decreasing packer concatenates whole conversations into rows of
    `max_length` tokens (padding-free), the collator restarts `position_ids` at
    each conversation (attention stays within it, and the first token of each,
    a template token, gets -100 anyway).
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    t = config.training
    args = TRLSFTConfig(
        output_dir=str(Path(config.output_dir) / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a fraction of the steps
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        max_grad_norm=t.max_grad_norm,
        bf16=t.dtype == "bfloat16",
        use_cpu=not torch.cuda.is_available(),  # needed for bf16 autocast on CPU
        activation_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to="none",  # metrics.jsonl (+ the report_to sinks, via StageRun) is our one sink
        disable_tqdm=not config.progress,
        dataloader_pin_memory=False,
        max_length=t.max_length,
        include_num_input_tokens_seen="non_padding",  # checkpointed, unlike TRL's num_tokens
        packing=t.packing,
        packing_strategy="bfd",
        shuffle_dataset=False,  # the Trainer's sampler shuffles every epoch
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        completion_only_loss=False,  # our labels already hold the mask
        assistant_only_loss=False,
    )
    from core.diskspace import free_space_callback
    from core.numeric import finite_gradients_callback

    callbacks = [_trainer_callback_class()(metrics), finite_gradients_callback("SFT"), free_space_callback("SFT")]
    dataset = Dataset.from_list(examples)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    if not t.packing and len(trainer.train_dataset) != len(examples):
        # TRL drops rows it would truncate to nothing; we filtered them already, so a
        # difference means something was lost silently.
        raise RuntimeError(f"SFTTrainer kept {len(trainer.train_dataset)} of {len(examples)} examples")
    return trainer


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` in `folder` that was fully written, or None.

    The Trainer writes `trainer_state.json` last, so a checkpoint without a readable
    one was cut by a kill; it is removed (the step is simply redone on resume).
    """
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
        except (OSError, ValueError, KeyError):
            log.warning("SFT: removing incomplete checkpoint %s (cut by a kill)", path)
            shutil.rmtree(path, ignore_errors=True)
            continue
        return str(path)
    return None


def _fresh_or_resume(folder: Path, config: SFTConfig, inputs: dict, previous: dict | None) -> str | None:
    """The checkpoint to resume from, or None. A previous run (`previous`: its manifest)
    with another config or other inputs leaves nothing to resume: its checkpoints and
    evaluations are removed."""
    from core.config import config_to_dict
    from core.run import hash_inputs

    checkpoints = folder / "checkpoints"
    same = previous is not None and previous.get("config") == config_to_dict(config) and previous.get("inputs") == hash_inputs(inputs)
    if not same:
        shutil.rmtree(checkpoints, ignore_errors=True)
        for name in ("eval_before.json", "metrics.jsonl", "eval.json", "data_report.json", "eval_samples.jsonl"):
            (folder / name).unlink(missing_ok=True)
        return None
    return last_complete_checkpoint(checkpoints)


def _heldout_prompts(config: SFTConfig) -> list[dict]:
    from core.sources import load_prompt_source

    return load_prompt_source(config.eval.prompts, "heldout", config.eval.n_prompts, config.eval.seed, key="eval.prompts")


def _answer(model, tokenizer, config: SFTConfig):
    from core.evaluation import answer_prompts

    return answer_prompts(model, tokenizer, _heldout_prompts(config), config.eval.sampling, progress=config.progress)


# ---------------------------------------------------------------- the stage
def run(config: SFTConfig) -> Path:
    """Run the SFT stage; returns the path of the trained model folder (`OUT/model`)."""
    from transformers import set_seed

    from core.distributed import process_state
    from core.model_paths import check_config_models
    from core.models import load_causal_lm, load_tokenizer, save_model

    state = process_state()  # under `accelerate launch` on a CPU box this joins the gloo group
    out = Path(config.output_dir)
    model_dir = out / "model"

    # 1. Run folder: skip a finished run, resume a stopped one, start fresh otherwise.
    #    The model (its kind and weight files), the tokenizer (chat template) and the data
    #    are checked before anything is written: bad input is an error that leaves the
    #    folder as it was. The model first: stage_inputs writes the toyworld file.
    check_config_models([("model.name", config.model.name, "policy")])
    if config.eval.enabled and config.reward_models.configured:  # scored with after training
        from reward.gated import check_reward_models

        check_reward_models(config.reward_models)
    tokenizer = load_tokenizer(config.model.name, config.model.chat_template, config.model.trust_remote_code)
    inputs = stage_inputs(config)
    stage = StageRun(out, STAGE, config, inputs=inputs, report_to=config.report_to, push_to_hub=config.push_to_hub)
    if stage.is_complete():
        log.info("SFT: %s is complete with the same config and inputs; skipping", out)
        return model_dir
    examples, report = build_sft_dataset(config, tokenizer, train_path=inputs["train"])
    previous = read_manifest(out)  # before StageRun replaces it with a "running" one
    state.wait_for_everyone()  # every process has read the old manifest before it changes
    with stage if state.is_main_process else FollowerRun() as run_:
        resume_from = _fresh_or_resume(out, config, inputs, previous) if state.is_main_process else None
        state.wait_for_everyone()
        if not state.is_main_process:
            resume_from = last_complete_checkpoint(out / "checkpoints")
        # metrics.jsonl keeps what the checkpoint had logged (the data and eval-before
        # rows at step 0 included); without a checkpoint the run starts over from nothing.
        if resume_from:
            log.info("SFT: resuming from %s", resume_from)
            if run_.metrics is not None:
                run_.metrics.truncate_after(json.loads((Path(resume_from) / "trainer_state.json").read_text())["global_step"])
        elif state.is_main_process:
            (out / "metrics.jsonl").unlink(missing_ok=True)

        # 2. Data (tokenized with answer-only labels in step 1): what was left out.
        if state.is_main_process:
            atomic_write_json(out / "data_report.json", report.to_dict())
            run_.add_output("data_report", out / "data_report.json")
            run_.extra["data_report"] = report.to_dict()
            if not resume_from:
                run_.metrics.log(0, **report.metrics())

        # 3. Model: full fine-tuning, or a fresh LoRA adapter on the frozen base.
        set_seed(config.training.seed)
        model = load_causal_lm(
            config.model.name,
            dtype="float32",  # master weights; bfloat16 means bf16 autocast in the Trainer
            lora=config.lora,
            trust_remote_code=config.model.trust_remote_code,
            allow_pickle_weights=config.model.allow_pickle_weights,
        )
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id

        # 4. The starting model's answers to the held-out prompts (cached, so a resumed
        #    run does not answer again); scored with the trained model's in step 7.
        before = None
        if config.eval.enabled and state.is_main_process:
            from core.evaluation import Answers

            cached = out / "eval_before.json"
            if cached.is_file():
                before = Answers.from_rows(json.loads(cached.read_text(encoding="utf-8")))
            else:
                before = _answer(model, tokenizer, config)
                atomic_write_json(cached, before.to_rows())
        state.wait_for_everyone()

        # 5. Train.
        trainer = make_trainer(config, model, tokenizer, examples, metrics=run_.metrics)
        trainer.train(resume_from_checkpoint=resume_from)
        final_step = trainer.state.global_step

        # 6. Save the model folder (atomically; LoRA merged unless asked not to).
        state.wait_for_everyone()
        trained = trainer.model
        if state.is_main_process:
            save_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer, model_dir, merge_lora=config.merge_lora)
            if not (config.lora.enabled and not config.merge_lora):
                # evaluate what later stages will load (also proves the folder loads)
                trained = load_causal_lm(str(model_dir), dtype="float32")
            run_.add_output("model", model_dir)
            run_.extra["train"] = {"global_step": final_step, "n_examples": report.n_kept}

        # 7. The shared before/after evaluation (core.evaluation) on the same held-out prompts.
        if config.eval.enabled and state.is_main_process:
            from core.evaluation import evaluate_models, format_table, save_evaluation

            after = _answer(trained, tokenizer, config)
            result = evaluate_models({"before": config.model.name, "after": str(model_dir)}, config.eval, config.reward_models,
                                     progress=config.progress, cached={"before": before, "after": after},
                                     prompts=_heldout_prompts(config))
            save_evaluation(result, out)
            run_.add_output("eval", out / "eval.json")
            after_summary = result["models"]["after"]
            run_.metrics.log(final_step, **{f"eval_after/{k}": v for k, v in after_summary.items() if isinstance(v, float)})
            run_.extra["eval"] = {"models": result["models"], "paired": result["paired"]}
            log.info("SFT: evaluation on %d held-out prompts\n%s", result["prompts"]["n"], format_table(result))

        # 8. Manifest: written by StageRun on leaving this block (status completed).
        if state.is_main_process:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the final model is saved
    state.wait_for_everyone()
    if state.is_main_process:
        print(f"sft: model: {model_dir}")
    return model_dir


def finetune_on(train: str | Path, output_dir: str | Path, base: SFTConfig | str | Path | None = None, **overrides) -> Path:
    """Fine-tune on a JSONL file of `{"messages": [...]}` rows; the entry point for other stages.

    `base` is an `SFTConfig`, a YAML preset path, or None (defaults). `overrides` are
    dotted keys with `__` for dots, e.g. `data__learn="last"`, `model__name=str(folder)`.
    Rejection sampling: `finetune_on(pool.jsonl, out, base=cfg, model__name=...)`;
    Ghost Attention: the same with `data__learn="last"`.
    """
    if isinstance(base, SFTConfig):
        data = base.model_dump(mode="json")
    else:
        data = load_config(SFTConfig, base).model_dump(mode="json") if base is not None else SFTConfig().model_dump(mode="json")
    data.setdefault("data", {})["train"] = str(train)
    data["output_dir"] = str(output_dir)
    for key, value in overrides.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    from core.config import validate_config

    return run(validate_config(SFTConfig, data, origin="sft.finetune_on"))


__all__ = ["SFTConfig", "finetune_on", "make_trainer", "run"]
