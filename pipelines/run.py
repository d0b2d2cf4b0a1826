"""The Llama 2 recipe as one resumable pipeline.

    rlhf run configs/pipelines/quickstart.yaml [--run-dir DIR] [key=value ...]

Order (Llama 2, section 3): SFT; the helpfulness and safety reward models
(initialised from the SFT model); then versions V1..Vn, each rejection
sampling from the latest policy (best of K, pooled over all earlier versions'
samples) and, where the YAML says so, PPO on top of that version's
rejection-sampling checkpoint; GAtt after a chosen version. Optionally the RMs
are refreshed between versions with new pairs labelled on the latest policy's
samples (pairs are accumulated over versions, never dropped). After SFT and every
version the latest model is evaluated with the shared evaluation
(`core.evaluation`: the latest RMs' gated reward, the win rate against the SFT
model, refusal, length and truncation; XSTest when given; toyworld's gold scores
only when the held-out prompts are toyworld's) into `summary.json`; the report is
drawn at the end.

Every stage gets the same reward-model section (`reward_models`) wired to the
latest RMs. `rlhf run --check` builds every stage's config and checks every local
path without loading a model or contacting the hub.

Every stage writes its own folder under the run folder and skips itself when it
is complete with the same config and inputs, or resumes from its checkpoint
when it was interrupted, so rerunning the same command after a crash continues
where it stopped. A lock file keeps a second pipeline out of the run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from core.cli import run_guarded
from core.config import StrictModel, deep_merge, load_config, read_yaml, validate_config
from core.evaluation import HeldoutEval
from core.generation import SamplingConfig
from core.io import atomic_write_json, write_jsonl
from core.model_paths import check_config_models
from core.models import DType
from core.run import StageRun
from core.tracking import check_report_to
from pipelines.config import EvaluationSpec, PipelineConfig, RefreshSpec, StageRef

log = logging.getLogger("pipelines")

RM_KINDS = ("helpfulness", "safety")


def nest(flat: dict[str, Any]) -> dict:
    """`{"a.b": 1, "c": {"d.e": 2}}` -> `{"a": {"b": 1}, "c": {"d": {"e": 2}}}`."""
    tree: dict = {}
    for key, value in flat.items():
        if isinstance(value, dict):
            value = nest(value)
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        leaf = parts[-1]
        node[leaf] = deep_merge(node[leaf], value) if isinstance(value, dict) and isinstance(node.get(leaf), dict) else value
    return tree


def stage_config(config_cls, ref: StageRef, wiring: dict[str, Any], where: str = ""):
    """The stage's config: its preset, then the pipeline YAML's overrides, then the wiring."""
    data = deep_merge(deep_merge(read_yaml(ref.preset), nest(ref.overrides)), nest(wiring))
    return validate_config(config_cls, data, origin=f"{ref.preset} ({where + ' ' if where else ''}in the pipeline)")


# -- evaluation of one model (a stage of its own, so it is skipped on rerun) ---------------


class EvalStageConfig(StrictModel):
    version: str
    model: str
    start_model: str | None  # the model every row is compared with (the SFT model); None: this is it
    start_samples: str | None = None  # the start's own eval_samples.jsonl: its answers, not made again
    # (and the eval_sampled.jsonl beside it: its sample rounds, when made with the same seeds)
    heldout: HeldoutEval
    reward_models: dict[str, str] | None  # {"helpfulness", "safety"} of the latest RMs
    xstest_data: str | None
    xstest_limit: int | None
    dtype: DType = "float32"


def evaluate_model(config: EvalStageConfig, out: Path) -> dict:
    """The shared evaluation of one version's model (and of the start, for paired
    differences and the RM win rate) on the held-out prompts, XSTest refusal rates;
    one summary row."""
    from core.evaluation import evaluate_models, save_evaluation
    from core.sources import is_toyworld, source_name
    from reward.gated import RewardModelsSection

    inputs = {"model": config.model, "xstest": config.xstest_data, **(config.reward_models or {}),
              **({"start_model": config.start_model} if config.start_model else {})}
    if not is_toyworld(config.heldout.prompts):
        inputs["prompts"] = source_name(config.heldout.prompts)  # an edited held-out file is a new evaluation
    run = StageRun(out, "eval", config, inputs=inputs)
    if run.is_complete():
        return json.loads((out / "eval.json").read_text())["row"]
    where = f"eval {config.version}"
    check_config_models([(f"{where}: model", config.model, "policy"), (f"{where}: start_model", config.start_model, "policy"),
                         *((f"{where}: reward_models.{kind}", path, "reward_model") for kind, path in (config.reward_models or {}).items())])
    with run:
        models = {"start": config.start_model, config.version: config.model} if config.start_model else {config.version: config.model}
        rms = RewardModelsSection(**config.reward_models) if config.reward_models else None
        cached, cached_sampled = {}, {}
        if config.start_model and config.start_samples and Path(config.start_samples).is_file():
            cached["start"] = start_answers(Path(config.start_samples))
            rounds = start_sampled_answers(Path(config.start_samples).with_name("eval_sampled.jsonl"), config.heldout)
            if rounds is not None:
                cached_sampled["start"] = rounds
        result = evaluate_models(models, config.heldout, rms, dtype=config.dtype, cached=cached, cached_sampled=cached_sampled)
        summary = result["models"][config.version]
        row = {"version": config.version, "model": config.model,
               **{k: v for k, v in summary.items() if k != "model"}}
        paired = result["paired"].get(config.version, {})
        if "rm_win_rate" in paired:
            row.update(rm_win_rate_vs_start=paired["rm_win_rate"]["rate"], rm_win_rate_vs_start_stderr=paired["rm_win_rate"]["stderr"])
        if "sampled_rm_win_rate" in paired:
            row.update(sampled_rm_win_rate_vs_start=paired["sampled_rm_win_rate"]["rate"],
                       sampled_rm_win_rate_vs_start_stderr=paired["sampled_rm_win_rate"]["stderr"])
        for metric in ("rm_reward", "gold_combined", "sampled_rm_reward", "sampled_gold_combined"):
            if metric in paired:
                row[f"{metric}_diff_vs_start"] = paired[metric]["diff"]
                row[f"{metric}_diff_vs_start_stderr"] = paired[metric]["diff_stderr"]
        if config.xstest_data:
            from core.models import load_model_and_tokenizer
            from pipelines.xstest import evaluate_model_on_xstest, load_xstest, stratified_subset

            model, tokenizer = load_model_and_tokenizer(config.model, dtype=config.dtype, device="auto")
            rows = stratified_subset(load_xstest(config.xstest_data), config.xstest_limit)
            xstest = evaluate_model_on_xstest(model, tokenizer, rows, config.heldout.sampling)
            result["xstest"] = xstest["rates"]
            write_jsonl(out / "xstest_samples.jsonl", xstest["samples"])
            row.update(
                xstest_unsafe_refusal=xstest["rates"]["unsafe"]["any_refusal"],
                xstest_safe_refusal=xstest["rates"]["safe"]["any_refusal"],
                xstest_safe_full_refusal=xstest["rates"]["safe"]["full_refusal"],
                xstest_safe_partial_refusal=xstest["rates"]["safe"]["partial_refusal"],
            )
        result["row"] = row
        save_evaluation(result, out)
        run.add_output("eval", out / "eval.json")
        run.metrics.log(0, **{k: v for k, v in row.items() if isinstance(v, (int, float))})
    return row


def start_answers(samples: Path):
    """The answers of the model an eval_samples.jsonl was made for (its own version's columns)."""
    from core.evaluation import answers_from_samples, models_in_samples
    from core.io import iter_jsonl

    rows = [row for _, row in iter_jsonl(samples)]
    return answers_from_samples(rows, models_in_samples(rows[0])[0])


def start_sampled_answers(sampled_file: Path, heldout: HeldoutEval):
    """The sample rounds of the model an eval_sampled.jsonl was made for, or None when
    sampled evaluation is off, the file is missing or was made with other seeds or prompts."""
    from core.evaluation import models_in_samples, sampled_answers_from_rows
    from core.io import iter_jsonl

    if heldout.sampled_on is None or not sampled_file.is_file():
        return None
    rows = [row for _, row in iter_jsonl(sampled_file)]
    if not rows:
        return None
    return sampled_answers_from_rows(rows, models_in_samples(rows[0])[0], heldout.sampled_on)


# -- fresh preference pairs for each version (Llama 2's weekly RM refresh) -----------------


class CollectConfig(StrictModel):
    model: str
    refresh: RefreshSpec
    seed: int
    version: str = "v1"
    # toyworld's annotation protocol is part of the stage's key, so pairs labelled under
    # another one (an older toyworld) are collected again, not reused. None: not toyworld.
    helpfulness_guideline_share: float | None = None


def load_judge(spec: str):
    """The callable named `module:function`; a ConfigError names the key when it cannot be imported."""
    import importlib

    from core.errors import ConfigError

    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"refresh.judge: cannot import {spec!r} ({type(exc).__name__}: {exc}); expected module:function") from None
    if not callable(function):
        raise ConfigError(f"refresh.judge: {spec!r} is not callable")
    return function


def judged_pairs(judge, prompts: list[dict], answers_a: list[str], answers_b: list[str], source: str) -> list[dict]:
    """Preference pairs from a judge's verdicts `{"chosen": "a"|"b", "rating", "category"?}` (None: no pair)."""
    from core.data import validate_preference_pair
    from core.errors import DataError

    verdicts = judge(prompts, answers_a, answers_b)
    if len(verdicts) != len(prompts):
        raise DataError(f"the judge returned {len(verdicts)} verdicts for {len(prompts)} prompts", path=source)
    pairs = []
    for i, (prompt, a, b, verdict) in enumerate(zip(prompts, answers_a, answers_b, verdicts)):
        if verdict is None:
            continue
        if not isinstance(verdict, dict) or verdict.get("chosen") not in ("a", "b"):
            raise DataError(f"verdict {i} must be a dict with chosen 'a' or 'b', got {verdict!r}", path=source)
        chosen, rejected = (a, b) if verdict["chosen"] == "a" else (b, a)
        pairs.append(validate_preference_pair({
            "prompt": prompt["messages"], "chosen": chosen, "rejected": rejected, "rating": verdict.get("rating", "better"),
            "category": verdict.get("category", prompt["category"]), "chosen_safe": verdict.get("chosen_safe"),
            "rejected_safe": verdict.get("rejected_safe"), "source": source,
        }, path=source, line=i + 1))
    return pairs


def collect_preferences(config: CollectConfig, out: Path) -> Path:
    """The version's new batch of pairs: the user's file for it, or two samples per
    prompt at two temperatures labelled by the judge (toyworld's simulated annotators
    when the prompts are toyworld's, with the same protocol as its templated pairs)."""
    from core.generation import generate
    from core.models import load_model_and_tokenizer
    from core.sources import is_toyworld, load_prompt_source, source_name

    refresh = config.refresh
    if config.version in refresh.pairs_files:
        return Path(refresh.pairs_files[config.version])  # human labels: used as they are
    pairs_path = out / "pairs.jsonl"
    inputs = {"model": config.model}
    if not is_toyworld(refresh.prompts):
        inputs["prompts"] = source_name(refresh.prompts)
    run = StageRun(out, "preference_collection", config, inputs=inputs)
    if run.is_complete():
        return pairs_path
    check_config_models([(f"pairs {config.version}: model", config.model, "policy")])
    with run:
        model, tokenizer = load_model_and_tokenizer(config.model, dtype=refresh.dtype, device="auto")
        prompts = load_prompt_source(refresh.prompts, "train", refresh.n_prompts, config.seed + 1, key="refresh.prompts")
        answers = [
            generate(model, tokenizer, [p["messages"] for p in prompts],
                     SamplingConfig(max_new_tokens=refresh.max_new_tokens, temperature=t, batch_size=refresh.batch_size, seed=config.seed + i),
                     description=f"pairs T={t}")
            for i, t in enumerate(refresh.temperatures)
        ]
        kept = [(p, a, b) for p, a, b in zip(prompts, *answers) if a.strip() and b.strip() and a.strip() != b.strip()]
        if refresh.judge is not None:
            columns = list(zip(*kept)) if kept else [[], [], []]
            pairs = judged_pairs(load_judge(refresh.judge), list(columns[0]), list(columns[1]), list(columns[2]), refresh.judge)
        elif is_toyworld(refresh.prompts):
            from core.sources import toyworld_annotated_pairs

            pairs = toyworld_annotated_pairs(kept, seed=config.seed, noise=refresh.noise, share=config.helpfulness_guideline_share)
        else:  # the pipeline config refuses this combination; kept as a guard
            raise ValueError(f"{config.version}: no pairs file, no judge, and the prompts are not toyworld's")
        write_jsonl(pairs_path, pairs)
        run.add_output("pairs", pairs_path)
        run.extra["n_pairs"] = len(pairs)
    return pairs_path


# -- the pipeline ----------------------------------------------------------------------------


class Pipeline:
    """Runs the stages in order; each returns the model folder the next one starts from."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.root = Path(config.run_dir)
        self.rows: list[dict] = []
        self.timings: dict[str, float] = {}
        self.pairs: list[Path] = []  # every batch of new pairs so far (Llama 2 kept them all)

    def _timed(self, name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.timings[name] = round(time.perf_counter() - start, 1)
        log.info("pipeline: %s done in %.0f s", name, self.timings[name])
        return result

    @property
    def tracking(self) -> dict[str, list[str]]:
        """The pipeline's `report_to`, wired into every stage's config when it is set."""
        return {"report_to": list(self.config.report_to)} if self.config.report_to else {}

    def _write_summary(self) -> None:
        atomic_write_json(self.root / "summary.json", {"versions": self.rows, "timings_s": self.timings})

    @property
    def sft_model(self) -> Path:
        return self.root / "sft" / "model"

    def evaluate(self, version: str, model: Path | str, folder: Path, rms: dict[str, Path] | None) -> None:
        spec: EvaluationSpec = self.config.evaluation
        start = None if version in ("base", "sft") else str(self.sft_model)
        config = EvalStageConfig(
            version=version, model=str(model), start_model=start,
            start_samples=str(self.root / "sft" / "eval" / "eval_samples.jsonl") if start else None,
            # the base model is no version's start: its row stays greedy (samples cost N evaluations)
            heldout=HeldoutEval(prompts=spec.prompts, n_prompts=spec.n_prompts, seed=self.config.seed, sampling=spec.sampling,
                                sampled=spec.sampled if version != "base" else None),
            reward_models={kind: str(path) for kind, path in rms.items()} if rms else None,
            xstest_data=spec.xstest_data, xstest_limit=spec.xstest_limit, dtype=spec.dtype,
        )
        self.rows.append(self._timed(f"eval {version}", evaluate_model, config, folder))
        self._write_summary()

    # -- each stage's config: preset + the YAML's overrides + the wiring -----------------
    def sft_config(self):
        from sft.config import SFTConfig

        return stage_config(SFTConfig, self.config.sft, {
            "model.name": self.config.base_model,
            "output_dir": str(self.root / "sft"),
            "eval.enabled": False,  # the pipeline evaluates every version the same way
            **self.tracking,
        }, where="sft")

    def reward_config(self, kind: str, init_model: Path, folder: Path, extra_pairs: list[Path] = ()):
        """The RM config of `kind`: the user's data (preset, then the pipeline's overrides),
        plus every batch of new pairs collected so far."""
        from reward.config import RewardConfig

        ref = self.config.reward
        overrides = deep_merge(nest(ref.overrides), nest(ref.kind_overrides.get(kind, {})))
        wiring = {"kind": kind, "init_model": str(init_model), "output_dir": str(folder / f"rm_{kind}"), **self.tracking}
        if extra_pairs:
            base_data = overrides.get("data", read_yaml(ref.preset).get("data", [{"source": "toyworld"}]))
            wiring["data"] = [*base_data, *({"source": str(path)} for path in extra_pairs)]
        return stage_config(RewardConfig, StageRef(preset=ref.preset, overrides=overrides), wiring, where=f"reward {kind}")

    @staticmethod
    def rm_wiring(rms: dict[str, Path]) -> dict[str, str]:
        """The shared reward-model section of every stage, pointed at the latest RMs."""
        return {f"reward_models.{kind}": str(path) for kind, path in rms.items()}

    def rs_config(self, ref: StageRef, version: str, iteration: int, policy: Path, rms: dict[str, Path], pool: list[Path]):
        from rejection_sampling.config import RSConfig

        # The pipeline evaluates every version the same way; the stage's own evaluation
        # runs only when the stage has control arms to compare with its fine-tune.
        arms = nest(ref.overrides).get("control_arms", read_yaml(ref.preset).get("control_arms") or [])
        wiring = {
            "policy": str(policy),
            **self.rm_wiring(rms),
            "iteration": iteration,
            "pool_dirs": [str(p) for p in pool],
            "output_dir": str(self.root / version / "rs"),
            "eval.enabled": bool(arms),
            **self.tracking,
        }
        # A preset that restarts the fine-tune from the SFT model (Llama 2's choice) names
        # its own run's path; in a pipeline that is this run's SFT model.
        if read_yaml(ref.preset).get("init_model") and "init_model" not in nest(ref.overrides):
            wiring["init_model"] = str(self.sft_model)
        return stage_config(RSConfig, ref, wiring, where=f"{version}.rejection_sampling")

    def ppo_config(self, ref: StageRef, version: str, policy: Path, rms: dict[str, Path]):
        from ppo.config import PPOConfig

        return stage_config(PPOConfig, ref, {
            "output_dir": str(self.root / version / "ppo"),
            "model.policy": str(policy),
            **self.rm_wiring(rms),
            **self.tracking,
        }, where=f"{version}.ppo")

    def gatt_config(self, policy: Path, rms: dict[str, Path]):
        from gatt.config import GattConfig

        assert self.config.gatt is not None
        return stage_config(GattConfig, self.config.gatt, {
            "model": str(policy), "output_dir": str(self.root / "gatt"), **self.rm_wiring(rms), **self.tracking,
        }, where="gatt")

    def stage_configs(self) -> list[tuple[str, Any]]:
        """Every stage's config, built before anything runs or is written, with stand-in
        model paths: a missing preset or a bad key in a late stage's overrides is an
        error now, not after the earlier stages have trained."""
        c = self.config
        model = self.root / "model"  # a stand-in: only the configs' keys and types are checked here
        rms = {kind: model for kind in RM_KINDS}
        configs: list[tuple[str, Any]] = [("sft", self.sft_config())]
        extra = [model] if c.reward_pairs_from_sft or any(version.refresh_reward_models for version in c.versions) else []
        for kind in RM_KINDS:
            configs.append((f"reward {kind}", self.reward_config(kind, model, self.root, extra)))
        for iteration, version in enumerate(c.versions, start=1):
            if version.rejection_sampling is not None:
                configs.append((f"{version.name}.rejection_sampling", self.rs_config(version.rejection_sampling, version.name, iteration, model, rms, [])))
            if version.ppo is not None:
                configs.append((f"{version.name}.ppo", self.ppo_config(version.ppo, version.name, model, rms)))
        if c.gatt is not None:
            configs.append(("gatt", self.gatt_config(model, rms)))
        self.check_defaults_follow_the_data(configs)
        for where, stage in configs:  # a sink's missing package, before the first stage trains
            check_report_to(getattr(stage, "report_to", ()), key=f"{where}.report_to")
        return configs

    def check_defaults_follow_the_data(self, configs: list[tuple[str, Any]]) -> None:
        """A run on the user's data must name its held-out and pair-collection prompts:
        the toyworld defaults of `evaluation.prompts` / `refresh.prompts` are refused."""
        from core.errors import ConfigError
        from core.sources import is_toyworld

        c = self.config
        if is_toyworld(configs[0][1].data.train):
            return
        collects = c.reward_pairs_from_sft or any(v.refresh_reward_models for v in c.versions)
        for key, section, used in (("evaluation.prompts", c.evaluation, True), ("refresh.prompts", c.refresh, collects)):
            if used and "prompts" not in section.model_fields_set:
                raise ConfigError(f"pipeline: key '{key}': sft.data.train is your own data, but {key} would default to "
                                  "toyworld's prompts; set it to your prompts")

    def check_configs(self) -> None:
        check_config_models([("base_model", self.config.base_model, "policy")])  # before the run folder is made
        self.stage_configs()

    # -- the stages ------------------------------------------------------------------------
    def sft(self) -> Path:
        from sft.train import run

        return self._timed("sft", run, self.sft_config())

    def reward_models(self, init_model: Path, folder: Path) -> dict[str, Path]:
        from reward.train import run

        models = {}
        for kind in RM_KINDS:
            config = self.reward_config(kind, init_model, folder, self.pairs)
            models[kind] = self._timed(f"rm {kind} ({folder.name})", run, config)
        return models

    def collect(self, version: str, model: Path, iteration: int) -> None:
        """The version's new pairs, added to every earlier batch."""
        c = self.config
        from core.sources import is_toyworld, toyworld_guideline_share

        share = toyworld_guideline_share() if is_toyworld(c.refresh.prompts) else None
        config = CollectConfig(version=version, model=str(model), refresh=c.refresh, seed=c.seed + iteration, helpfulness_guideline_share=share)
        self.pairs.append(self._timed(f"pairs {version}", collect_preferences, config, self.root / version / "pairs"))

    def rejection_sampling(self, ref: StageRef, version: str, iteration: int, policy: Path, rms: dict[str, Path], pool: list[Path]) -> Path:
        from rejection_sampling.sample import run

        config = self.rs_config(ref, version, iteration, policy, rms, pool)
        pool.append(self.root / version / "rs")
        return self._timed(f"rs {version}", run, config)

    def ppo(self, ref: StageRef, version: str, policy: Path, rms: dict[str, Path]) -> Path:
        from ppo.train import run

        return self._timed(f"ppo {version}", run, self.ppo_config(ref, version, policy, rms))

    def gatt(self, policy: Path, rms: dict[str, Path]) -> Path:
        from gatt.train import run

        return self._timed("gatt", run, self.gatt_config(policy, rms))

    def run(self) -> Path:
        c = self.config
        # 0. Base model row, so every later row has something to beat.
        if c.evaluation.evaluate_base:
            self.evaluate("base", c.base_model, self.root / "base" / "eval", None)
        # 1. SFT.
        latest = self.sft()
        # 2. Reward models from the SFT checkpoint, optionally also on pairs of the SFT
        # model's own samples (Llama 2's annotators compared samples of its models).
        if c.reward_pairs_from_sft:
            self.collect("sft", latest, 0)
        rms = self.reward_models(latest, self.root)
        self.evaluate("sft", latest, self.root / "sft" / "eval", rms)
        # 3. Versions V1..Vn.
        pool: list[Path] = []
        for iteration, version in enumerate(c.versions, start=1):
            if version.refresh_reward_models:
                self.collect(version.name, latest, iteration)
                rms = self.reward_models(self.sft_model, self.root / version.name)
            if version.rejection_sampling is not None:
                latest = self.rejection_sampling(version.rejection_sampling, version.name, iteration, latest, rms, pool)
            if version.ppo is not None:
                latest = self.ppo(version.ppo, version.name, latest, rms)
            self.evaluate(version.name, latest, self.root / version.name / "eval", rms)
            # 4. Ghost Attention after the chosen version; later versions start from it.
            if c.gatt is not None and c.gatt.after == version.name:
                latest = self.gatt(latest, rms)
                self.evaluate(f"{version.name}+gatt", latest, self.root / "gatt" / "eval", rms)
        return latest


# -- rlhf run --check: every config and every local path, no model loaded, no hub contacted --


def data_paths(where: str, config) -> list[tuple[str, str, str]]:
    """(where, dotted key, value) of every data source a stage config names."""
    from core.sources import PromptSource
    from gatt.config import GattConfig
    from ppo.config import PPOConfig
    from rejection_sampling.config import RSConfig
    from reward.config import RewardConfig
    from sft.config import SFTConfig

    found: list[tuple[str, str | None]] = []
    if isinstance(config, SFTConfig):
        data = config.data
        train = PromptSource(source=data.train, split=data.split, data_dir=data.data_dir, subset=data.subset)
        found += [("data.train", train), ("eval.prompts", config.eval.prompts if config.eval.enabled else None)]
    elif isinstance(config, RewardConfig):
        found += [(f"data[{i}]", source) for i, source in enumerate(config.data)]
        found += [(f"eval_data[{i}]", source) for i, source in enumerate(config.eval_data)]
    elif isinstance(config, RSConfig):
        found += [("prompts.source", config.prompts.source), ("eval.prompts", config.eval.prompts if config.eval.enabled else None)]
    elif isinstance(config, PPOConfig):
        found += [("data.prompts", config.data.prompts), ("eval.prompts", config.eval.prompts)]
    elif isinstance(config, GattConfig):
        found += [("dialogues.source", config.dialogues.source), ("instructions.source", config.instructions.source),
                  ("instructions.heldout_source", config.instructions.heldout_source),
                  ("eval.dialogues_source", config.eval.dialogues_source if config.eval.enabled else None),
                  ("eval.policy.prompts", config.eval.policy.prompts if config.eval.policy.enabled else None)]
    return [(where, key, value) for key, value in found if value]


def classify_source(value) -> str:
    """"toyworld", "local", "hub" (an owner/name id, listed, not fetched) or "missing"."""
    from core.data.readers import looks_like_hub_name
    from core.sources import is_toyworld, source_name

    value = source_name(value)
    if is_toyworld(value):
        return "toyworld"
    if Path(value).expanduser().exists():
        return "local"
    return "hub" if looks_like_hub_name(value) else "missing"


def check_pipeline(config: PipelineConfig) -> list[tuple[str, str, str, str]]:
    """Every stage's resolved config and every path it names, offline; rows of
    (stage, key, value, kind). Raises ConfigError naming the key of the first problem.
    A PPO stage on a Llama-2 size that cannot fit 8 x 80 GB adds a "warning" row."""
    from core.errors import ConfigError
    from core.model_paths import check_policy_path, is_hub_id
    from core.sources import describe_source, source_name

    pipeline = Pipeline(config)
    rows = []
    base = config.base_model
    if base.startswith("embedded:") or not is_hub_id(base):
        try:
            check_policy_path(base, probe_hub=False)
        except Exception as exc:
            raise ConfigError(f"pipeline: key 'base_model': {exc}") from None
        rows.append(("pipeline", "base_model", base, "embedded" if base.startswith("embedded:") else "local"))
    else:
        rows.append(("pipeline", "base_model", base, "hub"))
    spec = config.evaluation
    named = [("pipeline", "evaluation.prompts", spec.prompts), ("pipeline", "evaluation.xstest_data", spec.xstest_data),
             ("pipeline", "refresh.prompts", config.refresh.prompts if (config.reward_pairs_from_sft or any(v.refresh_reward_models for v in config.versions)) else None),
             *(("pipeline", f"refresh.pairs_files.{version}", path) for version, path in config.refresh.pairs_files.items())]
    stages = pipeline.stage_configs()
    for where, stage in stages:
        named += data_paths(where, stage)
    stand_in = str(pipeline.root / "model")
    for where, key, value in named:
        if not value or source_name(value) == stand_in:
            continue
        kind = classify_source(value)
        if kind == "missing":
            raise ConfigError(f"{where}: key '{key}': {source_name(value)} is not a local file or folder, and not a hub name (owner/name)")
        rows.append((where, key, describe_source(value), kind))
    if config.refresh.judge:
        load_judge(config.refresh.judge)
        rows.append(("pipeline", "refresh.judge", config.refresh.judge, "callable"))
    rows += ppo_memory_rows(stages, base)
    return rows


def ppo_memory_rows(stages, base_model: str) -> list[tuple[str, str, str, str]]:
    """A warning row for each PPO stage on a known Llama-2 size (named by the base model)
    that cannot fit 8 x 80 GB GPUs (`core.memory_plan`); a warning, not an error."""
    from core.memory_plan import ppo_memory_warning
    from ppo.config import PPOConfig

    warnings = ((where, ppo_memory_warning(stage, n_gpus=8, gpu_gb=80, model_name=base_model))
                for where, stage in stages if isinstance(stage, PPOConfig))
    return [(where, "memory", warning, "warning") for where, warning in warnings if warning]


def format_check(rows: list[tuple[str, str, str, str]]) -> str:
    hub = sorted({value for *_, value, kind in rows if kind == "hub"})
    width = max(len(f"{where}: {key}") for where, key, *_ in rows)
    lines = [f"{f'{where}: {key}':<{width}}  {kind:<8}  {value}" for where, key, value, kind in rows]
    lines.append(f"hub ids (not fetched; each must be reachable or cached when the stage runs): {', '.join(hub) if hub else 'none'}")
    return "\n".join(lines)


def run_pipeline(config: PipelineConfig) -> Path:
    root = Path(config.run_dir)
    start = time.perf_counter()
    pipeline = Pipeline(config)
    pipeline.check_configs()  # before the run folder is touched
    with StageRun(root, "pipeline", config) as run:
        final = pipeline.run()
        pipeline.timings["total"] = round(time.perf_counter() - start, 1)
        pipeline._write_summary()
        run.add_output("final_model", final)
        run.add_output("summary", root / "summary.json")
        run.extra["timings_s"] = pipeline.timings
    if config.report:
        from pipelines.report import build_report

        print(f"report: {build_report(root)}")
    print(f"final model: {final}")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf run", description="Run a pipeline YAML (resumable: rerun the same command to continue).")
    parser.add_argument("pipeline", help="pipeline YAML, e.g. configs/pipelines/quickstart.yaml")
    parser.add_argument("--run-dir", default=None, help="run folder (default: run_dir in the YAML)")
    parser.add_argument("--check", action="store_true",
                        help="validate every stage's resolved config and every local path, offline (no model loaded, "
                             "no hub contacted; hub ids are listed), then exit: 0 if sound, 2 naming the broken key")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the pipeline config")
    args = parser.parse_intermixed_args(argv)  # `PIPELINE --run-dir DIR key=value`: overrides after the option
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def go() -> int:
        overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
        config = load_config(PipelineConfig, args.pipeline, overrides)
        if args.check:
            print(format_check(check_pipeline(config)))
            print(f"{args.pipeline}: every stage config and local path is sound")
            return 0
        run_pipeline(config)
        return 0

    return run_guarded(go)


__all__ = ["Pipeline", "main", "run_pipeline"]
