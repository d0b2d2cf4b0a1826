"""Train one reward model (helpfulness or safety) with TRL's RewardTrainer.

Flat recipe, numbered steps:

1. run folder: skip when a completed run with the same config and inputs exists;
2. data: load every source, draw the paper's mix for this RM (`reward.data_mix`),
   render each pair with the RM's own chat template and tokenize it (the exact
   function `RewardScorer` uses), attach `margin = margin_for(rating, scheme)`;
3. model: `AutoModelForSequenceClassification` with one output from `init_model`
   (the SFT checkpoint), `pad_token_id` set so the head finds the last token;
4. train: TRL's `RewardTrainer` on pre-tokenized `chosen_ids`/`rejected_ids` plus
   the `margin` column (loss `-log sigma(r_c - r_r - m)`, `reward.losses.ranking_loss`),
   resuming from the last checkpoint of an interrupted run;
5. save the RM folder `OUT/model` (tokenizer and chat template alongside);
6. held-out pairs, never the training ones: the user's (`eval_data`) and toyworld's
   when it trains on toyworld. (a) calibration: p = σ(a·r + b) fitted on them
   (`reward.calibration`) -> `OUT/model/calibration.json`, which the gate reads;
   (b) `OUT/eval.json` (keys "heldout", "toyworld"): accuracy per rating and category
   (Table 8), safety precision/recall at the gate threshold with the calibrated
   probabilities, beside σ(r)'s and the paper's 0.89 / 0.55;
7. manifest: status, data counts, outputs.

Under `accelerate launch` every process trains; only the main process writes.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

import torch

from core.errors import DataError, NumericError
from reward.config import RewardConfig

STAGE = "reward"


def load_pairs(config: RewardConfig, split: str = "train", reports: list | None = None, key: str = "data") -> list[dict]:
    """All preference pairs of the sources under `key` (`data`, or `eval_data` for the
    held-out pairs); toyworld: its `split` split.

    A file or hub source is read with its own keys (adapter, split, data_dir, subset,
    category, default_rating, rating_thresholds, on_bad, limit; `core.data.sources`).
    `reports`, when given, gets one `core.data.LoadReport` per source: rows read, loaded,
    and the bad ones `on_bad: skip` left out, which `run` writes to `data_report.json`."""
    from core.data import LoadReport, load_source

    pairs: list[dict] = []
    for index, source in enumerate(getattr(config, key)):
        report = LoadReport(source=source.source)
        if source.source == "toyworld":
            from core.sources import toyworld_preference_pairs

            n = config.toyworld_pairs if source.limit is None else min(source.limit, config.toyworld_pairs)
            rows = toyworld_preference_pairs(split, n, config.seed)
            report.adapter, report.n_records = "toyworld", len(rows)
            report.n_read = report.n_loaded = len(rows)
        else:
            located = load_source("preferences", source.source, source, report=report,
                                  adapter_key=f"{key}[{index}].adapter", default_rating=config.default_rating)
            rows = [row for _, row in located]
        if reports is not None:
            reports.append(report)
        pairs.extend(rows)
    return pairs


def tokenize_pairs(tokenizer, pairs: list[dict], margin_scheme: str, max_length: int | None) -> tuple[list[dict], int]:
    """Rows `{"chosen_ids", "rejected_ids", "margin"}` and the number of overlong pairs left out."""
    from reward.margins import margin_for
    from reward.scorer import encode_conversation

    rows, overlong = [], 0
    for index, pair in enumerate(pairs):
        try:
            margin = margin_for(pair["rating"], margin_scheme)
        except ValueError as exc:
            raise DataError(str(exc), path=pair.get("source"), line=index + 1, field="rating") from None
        chosen = encode_conversation(tokenizer, pair["prompt"], pair["chosen"])
        rejected = encode_conversation(tokenizer, pair["prompt"], pair["rejected"])
        if max_length is not None and (len(chosen) > max_length or len(rejected) > max_length):
            overlong += 1
            continue
        rows.append({"chosen_ids": chosen, "rejected_ids": rejected, "margin": float(margin),
                     "length": max(len(chosen), len(rejected))})  # what a batch pads to
    return rows, overlong


def warmup_steps(config: RewardConfig, total_steps: int) -> int:
    """Warm-up of `warmup_ratio` of the steps, at least `min_warmup_steps` (the paper's "3 %, at least 5")."""
    return max(config.min_warmup_steps, math.ceil(config.warmup_ratio * total_steps))


def load_reward_model(init_model: str, pad_token_id: int, dtype=torch.float32):
    """A one-output sequence-classification model from a causal-LM (or RM) folder."""
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from core.errors import ModelLoadError
    from core.models import resolve_model_path

    source = resolve_model_path(init_model)
    try:
        with suppress_seqcls_warning():  # the new head and the dropped lm_head are expected
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load '{init_model}' as a sequence-classification model: {exc}") from None
    model.config.pad_token_id = pad_token_id
    model.config.id2label, model.config.label2id = {0: "reward"}, {"reward": 0}
    return model


def make_callbacks(run, state):
    from transformers import TrainerCallback

    from core.diskspace import free_space_callback
    from core.numeric import finite_gradients_callback

    class MetricsToRun(TrainerCallback):
        """Forwards the trainer's logs to `metrics.jsonl` (main process only)."""

        def on_log(self, args, trainer_state, control, logs=None, **kwargs):
            if run is None or not state.is_main_process or not logs or "train_loss" in logs:
                # (the end-of-training summary: its train_loss averages only the steps since
                # the last (re)start, so a resumed run would log another number)
                return
            # TRL's `num_tokens` counts from the last (re)start; `num_input_tokens_seen` is checkpointed.
            scalars = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "num_tokens"}
            run.metrics.log(trainer_state.global_step, **scalars)

    return [MetricsToRun(), finite_gradients_callback("reward model"), free_space_callback("reward model")]


def make_trainer_class():
    from trl import RewardTrainer

    class CheckedRewardTrainer(RewardTrainer):
        """TRL's RewardTrainer that stops on a NaN/inf loss before anything is saved."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = result[0] if return_outputs else result
            if not torch.isfinite(loss).all():
                raise NumericError(
                    f"reward-model loss is {loss.item()} at step {self.state.global_step}; "
                    "lower the learning rate, check the data for empty responses, or disable bf16"
                )
            return result

    return CheckedRewardTrainer


def trainer_args(config: RewardConfig, checkpoints: Path, n_rows: int, num_processes: int = 1, is_main_process: bool = True):
    """TRL's `RewardConfig` for one RM run. The global batch (pairs per step) is fixed;
    gradient accumulation makes up what the processes do not hold at once."""
    from trl import RewardConfig as TRLRewardConfig

    accumulation = config.batch_size // (config.per_device_batch_size * num_processes)
    total_steps = max(1, math.ceil(config.epochs * n_rows / config.batch_size))
    return TRLRewardConfig(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_rate},
        warmup_steps=warmup_steps(config, total_steps),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=config.gradient_checkpointing,  # TRL turns it on by default
        max_length=None,  # overlong pairs were already counted and left out by tokenize_pairs
        logging_steps=config.logging_steps,
        logging_nan_inf_filter=False,
        include_num_input_tokens_seen="non_padding",  # checkpointed, unlike TRL's num_tokens
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=not is_main_process,
        dataloader_drop_last=False,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
        # Keep the rows' `length` column for the sampler: TRL would drop every column
        # but chosen_ids, rejected_ids and margin; its collator ignores the rest.
        remove_unused_columns=False,
        ddp_find_unused_parameters=False if num_processes > 1 else None,
    )


def own_accuracy(table: dict, kind: str, key: str = "accuracy") -> float | None:
    """Accuracy on the pairs of the RM's own guideline (the paper's Table 8), else on all pairs.
    An RM is judged on its own guideline's pairs: on the other one's it is wrong by design
    where the two guidelines disagree."""
    return table["per_category"].get(kind, table["overall"])[key]


def heldout_sets(config: RewardConfig, eval_data: list[dict]) -> list[tuple[str, str, list[dict], list | None]]:
    """(eval.json key, file-name stem, pairs, noise-free judge agreement or None) of each
    held-out set: the user's `eval_data` and, when the RM trains on toyworld,
    `eval_pairs` of toyworld's held-out pairs."""
    sets = []
    if eval_data:
        sets.append(("heldout", f"{config.kind}_eval_data", eval_data, None))
    if config.trains_on_toyworld and config.eval_pairs > 0:
        from core.sources import toyworld_gold_agreement, toyworld_preference_pairs

        pairs = toyworld_preference_pairs("heldout", config.eval_pairs, config.eval_seed)
        sets.append(("toyworld", f"{config.kind}_heldout", pairs, toyworld_gold_agreement(pairs)))
    return sets


def calibrate(config: RewardConfig, model_dir: Path, scored: dict, sources: list[str]):
    """Step 6a: Platt scaling on every held-out set's responses (`reward.calibration`) ->
    `model_dir/calibration.json`. Returns (the calibration or None, what eval.json
    records about it)."""
    from reward.calibration import (
        CALIBRATION_FILE,
        calibration_data,
        cross_fitted_logits,
        data_hash,
        fit_calibration,
        write_calibration,
    )
    from reward.evaluate import SAFETY_THRESHOLD, safety_precision_recall

    pairs = [pair for s in scored.values() for pair in s.pairs]
    chosen = [value for s in scored.values() for value in s.chosen]
    rejected = [value for s in scored.values() for value in s.rejected]
    data = calibration_data(pairs, chosen, rejected, config.kind)
    try:
        calibration = fit_calibration(data, config.kind, sources, data_hash(pairs))
    except ValueError as exc:
        print(f"[reward] not calibrated ({exc}): the gate will use σ(raw) for this RM")
        return None, {"file": None, "why_not": str(exc)}
    path = write_calibration(model_dir, calibration)
    record = {"file": str(path), "a": calibration.a, "b": calibration.b, "method": calibration.method,
              "basis": calibration.basis, "target": calibration.target, "n": calibration.n,
              "log_loss_before": calibration.log_loss_before, "log_loss_after": calibration.log_loss_after,
              "log_loss_cross_fitted": calibration.log_loss_cross_fitted}
    if data.basis == "safety_labels":
        # the gate's P/R on responses each scored by a calibration fitted on the other half of the pairs
        logits = cross_fitted_logits(data.scores, data.labels, data.folds)
        if logits is not None:
            record["safety_cross_fitted"] = safety_precision_recall(torch.sigmoid(logits).tolist(),
                                                                    (data.labels < 0.5).tolist(), SAFETY_THRESHOLD)
    print(f"[reward] calibration ({calibration.method} on {calibration.n} held-out responses, {calibration.target}): "
          f"p = σ({calibration.a:.3f}·r + {calibration.b:.3f}); log-loss {calibration.log_loss_before:.3f} -> "
          f"{calibration.log_loss_after:.3f} -> {model_dir / CALIBRATION_FILE}")
    return calibration, record


def evaluate_heldout(config: RewardConfig, model, tokenizer, model_dir: Path, eval_data: list[dict], eval_reports: list,
                     active) -> dict | None:
    """Step 6: score every held-out set once; fit the calibration on them all
    (`calibrate`: `model_dir/calibration.json`), then `eval.json` with the user's
    held-out pairs (`eval_data`) under "heldout" and, when the RM trains on toyworld,
    `eval_pairs` of toyworld's held-out pairs under "toyworld" (with its noise-free
    judge's ceiling); each holds accuracy overall, per rating, per category and per
    category x rating, and the safety precision/recall at the Llama 2 gate threshold
    with the calibrated probabilities, beside σ(r)'s and the paper's (pairs with
    `chosen_safe`/`rejected_safe` labels); "calibration" records the fit.
    Returns what was written (None: nothing to evaluate on)."""
    from core.data import data_report
    from core.io import atomic_write_json
    from reward.evaluate import SAFETY_THRESHOLD, evaluate_scored, safety_line, score_pairs
    from reward.scorer import RewardScorer

    out = Path(config.output_dir)
    result: dict = {"model": str(model_dir), "kind": config.kind}
    sets = heldout_sets(config, eval_data)
    if not sets:
        print("[reward] no held-out evaluation: set eval_data to held-out pairs for eval.json (and calibration.json)")
        return None
    scorer = RewardScorer.from_model(model.eval(), tokenizer, batch_size=config.eval_batch_size)
    scored = {key: score_pairs(scorer, pairs, max_length=config.max_length if key == "heldout" else None)
              for key, _, pairs, _ in sets}
    sources = [source.source for source in config.eval_data] if eval_data else []
    if "toyworld" in scored:
        sources.append(f"toyworld:heldout (eval_pairs={config.eval_pairs}, eval_seed={config.eval_seed})")
    calibration, result["calibration"] = calibrate(config, model_dir, scored, sources)
    if calibration is not None:
        active.add_output("calibration", model_dir / "calibration.json")
    for key, stem, _, agreement in sets:
        table = evaluate_scored(scored[key], out, name=stem, threshold=SAFETY_THRESHOLD,
                                judge_agreement=None if agreement is None else scored[key].pick(agreement),
                                calibration=calibration)
        if key == "heldout":
            result["heldout"] = {**table, "sources": [source.source for source in config.eval_data],
                                 "load_report": data_report(eval_reports)}
            own, every = own_accuracy(table, config.kind), table["overall"]["accuracy"]
            active.extra["heldout_accuracy"], active.extra["heldout_accuracy_all_pairs"] = own, every
            by_rating = ", ".join(f"{rating} {value['accuracy']:.3f}" for rating, value in table["per_rating"].items())
            print(f"[reward] held-out accuracy (eval_data, {table['overall']['n']} pairs) on {config.kind} pairs {own:.3f}, "
                  f"on all pairs {every:.3f}; by rating: {by_rating}")
        else:
            result["data"], result["toyworld"] = "toyworld:heldout", table
            own, ceiling = own_accuracy(table, config.kind), own_accuracy(table["judge_ceiling"], config.kind)
            prefix = "toyworld_" if eval_data else ""  # the user's held-out pairs come first
            active.extra[f"{prefix}heldout_accuracy"] = own
            active.extra[f"{prefix}heldout_accuracy_all_pairs"] = table["overall"]["accuracy"]
            print(f"[reward] held-out toyworld accuracy on {config.kind} pairs {own:.3f} (noise-free judge: {ceiling:.3f}); "
                  f"on all pairs {table['overall']['accuracy']:.3f}")
        line = safety_line(table)
        if line and config.kind == "safety":
            print(f"[reward] {key}: {line}")
    cross = result["calibration"].get("safety_cross_fitted")
    if cross:
        from reward.combine import LLAMA2_SAFETY_PRECISION, LLAMA2_SAFETY_RECALL

        print(f"[reward] safety RM @ {cross['threshold']}, each response calibrated on the other half of the held-out pairs: "
              f"precision {cross['precision']}, recall {cross['recall']} (paper: {LLAMA2_SAFETY_PRECISION}, {LLAMA2_SAFETY_RECALL})")
    atomic_write_json(out / "eval.json", result)
    active.add_output("eval", out / "eval.json")
    return result


def run(config: RewardConfig) -> Path:
    from datasets import Dataset

    from core.distributed import process_state
    from core.model_paths import check_config_models
    from core.models import load_tokenizer, save_model
    from core.run import StageRun
    from reward.data_mix import mix_pairs, mix_summary

    out = Path(config.output_dir)
    state = process_state()

    # 1. run folder: skip when done and unchanged; only the main process writes.
    stage = StageRun(out, STAGE, config, inputs={"init_model": config.init_model, **{
        f"data_{i}": s.source for i, s in enumerate(config.data) if s.source != "toyworld"}, **{
        f"eval_data_{i}": s.source for i, s in enumerate(config.eval_data)}},
        report_to=config.report_to, push_to_hub=config.push_to_hub)
    if stage.is_complete():
        if state.is_main_process:
            print(f"[reward] {out} is complete and up to date; skipping")
        return out / "model"
    # 2. init model (its kind and weight files), data + the paper's mix for this RM,
    #    tokenized with the RM's template. Checked before the run folder is touched: bad
    #    input leaves it as it was.
    check_config_models([("init_model", config.init_model, "reward_init")])
    tokenizer = load_tokenizer(config.init_model, chat_template=config.chat_template)
    tokenizer.padding_side = "right"  # the collator and the scorer pad on the right
    load_reports: list = []
    pairs = load_pairs(config, reports=load_reports)
    if not pairs:
        raise DataError("no preference pairs in the configured data sources", field="data")
    mixed = mix_pairs(pairs, config.kind, config.mix.helpfulness_other_ratio, config.mix.safety_main_fraction, config.seed)
    if not mixed:
        raise DataError(f"the {config.kind} mix is empty: no pair has category '{config.kind}'", field="data")
    rows, overlong = tokenize_pairs(tokenizer, mixed, config.margin, config.max_length)
    if not rows:
        raise DataError(f"all {len(mixed)} pairs are longer than max_length={config.max_length} tokens", field="max_length")
    # the user's held-out pairs, read now so that a bad row stops the run before training
    eval_reports: list = []
    eval_data = load_pairs(config, reports=eval_reports, key="eval_data") if config.eval_data else []
    if eval_data and not tokenize_pairs(tokenizer, eval_data, "none", config.max_length)[0]:
        raise DataError(f"all {len(eval_data)} eval_data pairs are longer than max_length={config.max_length} tokens",
                        field="eval_data")
    per_step = config.per_device_batch_size * state.num_processes
    if config.batch_size % per_step:
        raise DataError(
            f"batch_size={config.batch_size} is not a multiple of per_device_batch_size x processes = {per_step}", field="batch_size"
        )

    run_ctx = stage if state.is_main_process else contextlib.nullcontext()
    with run_ctx:
        active = stage if state.is_main_process else None
        if state.is_main_process:
            print(f"[reward] {config.kind} RM: {len(rows)} pairs {mix_summary(mixed)}, {overlong} overlong left out, margin={config.margin}")
            active.extra["data"] = {"loaded": len(pairs), "mix": mix_summary(mixed), "trained": len(rows), "overlong": overlong,
                                    "bad_rows_skipped": sum(r.n_skipped for r in load_reports)}
            # what each source gave and the bad rows `on_bad: skip` left out (file, line, reason)
            from core.data import data_report, write_data_report

            held_out = {"eval_data": data_report(eval_reports)} if eval_reports else {}
            active.add_output("data_report", write_data_report(out, load_reports, **held_out))
            for report in load_reports + eval_reports:
                if report.n_skipped:
                    print(f"[reward] {report.source}: {report.n_skipped} bad rows left out (on_bad=skip), first: "
                          f"{report.first_skipped}; listed in {out / 'data_report.json'}")
        train_dataset = Dataset.from_list(rows)

        # 3. model: scalar head on the SFT checkpoint; pad id set for the head. Seeded here:
        #    the new head's initial weights must not depend on what ran before in this process
        #    (a pipeline resumed after a kill skips the earlier stages).
        from transformers import set_seed

        set_seed(config.seed)
        model = load_reward_model(config.init_model, tokenizer.pad_token_id)
        if config.trainable_layers is not None:
            from core.models import freeze_lower_layers

            freeze_lower_layers(model, config.trainable_layers)
        if config.lora.enabled:
            from core.models import apply_lora

            model = apply_lora(model, config.lora, task_type="SEQ_CLS")  # PEFT keeps `score` trainable

        # 4. RewardTrainer with the margin column.
        checkpoints = out / "checkpoints"
        args = trainer_args(config, checkpoints, len(rows), state.num_processes, state.is_main_process)
        trainer = make_trainer_class()(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            callbacks=make_callbacks(active, state),
        )
        resume = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
        if resume and state.is_main_process:
            last = max(int(p.name.split("-")[-1]) for p in checkpoints.glob("checkpoint-*"))
            active.metrics.truncate_after(last)
            print(f"[reward] resuming from {checkpoints} (step {last})")
        elif state.is_main_process:
            active.metrics.truncate_after(-1)  # rows of an attempt killed before its first checkpoint
        trainer.train(resume_from_checkpoint=True if resume else None)

        state.wait_for_everyone()
        model_dir = out / "model"
        if state.is_main_process:
            # 5. save the RM folder (merged if LoRA) with its tokenizer and template.
            trained = trainer.model
            if hasattr(trained, "merge_and_unload"):
                trained = trained.merge_and_unload()
            for param in trained.parameters():
                param.requires_grad_(True)  # frozen flags are not saved; keep the folder plain
            save_model(trained, tokenizer, model_dir)
            active.add_output("model", model_dir)

            # 6. held-out pairs -> model/calibration.json and eval.json (accuracy per rating
            #    and category, safety P/R with calibrated probabilities).
            evaluate_heldout(config, trained, tokenizer, model_dir, eval_data, eval_reports, active)

            # 7. manifest (written by the run folder on exit); checkpoints are no longer needed.
            shutil.rmtree(checkpoints, ignore_errors=True)
        state.wait_for_everyone()
    return model_dir
