"""The Llama 2 recipe as one resumable pipeline.

    rlhf run configs/pipelines/quickstart.yaml [--run-dir DIR] [key=value ...]

Order (Llama 2, section 3): SFT; the helpfulness and safety reward models
(initialised from the SFT model); then versions V1..Vn, each rejection
sampling from the latest policy (best of K, pooled over all earlier versions'
samples) and, where the YAML says so, PPO on top of that version's
rejection-sampling checkpoint; GAtt after a chosen version. Optionally the RMs
are refreshed between versions with new pairs labelled on the latest policy's
samples. After SFT and every version the latest model is evaluated (gold scores
on held-out toyworld prompts, XSTest) into `summary.json`; the report is drawn
at the end.

Every stage writes its own folder under the run folder and skips itself when it
is complete with the same config and inputs, or resumes from its checkpoint
when it was interrupted, so rerunning the same command after a crash continues
where it stopped. A lock file keeps a second pipeline out of the run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from core.cli import run_guarded
from core.config import StrictModel, deep_merge, load_config, read_yaml, validate_config
from core.generation import SamplingConfig
from core.io import atomic_write_json, write_jsonl
from core.models import DType
from core.run import StageRun
from pipelines.config import EvaluationSpec, PipelineConfig, RefreshSpec, StageRef
from toyworld.annotators import HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS, guideline_for

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
    toyworld_prompts: int
    xstest_data: str | None
    xstest_limit: int | None
    sampling: SamplingConfig
    dtype: DType = "float32"
    seed: int = 0


def evaluate_model(config: EvalStageConfig, out: Path) -> dict:
    """Gold metrics on held-out toyworld prompts and XSTest refusal rates; one summary row."""
    from core.models import load_model_and_tokenizer
    from core.policy_eval import evaluate_policy
    from pipelines.xstest import evaluate_model_on_xstest, load_xstest, stratified_subset
    from toyworld.world import build_eval_prompts

    run = StageRun(out, "eval", config, inputs={"model": config.model, "xstest": config.xstest_data})
    if run.is_complete():
        return json.loads((out / "eval.json").read_text())["row"]
    with run:
        model, tokenizer = load_model_and_tokenizer(config.model, dtype=config.dtype)
        prompts = build_eval_prompts(config.toyworld_prompts, seed=config.seed)
        metrics, responses = evaluate_policy(model, tokenizer, prompts, config.sampling)
        row = {"version": config.version, "model": config.model, **metrics}
        result = {"toyworld": metrics}
        if config.xstest_data:
            rows = stratified_subset(load_xstest(config.xstest_data), config.xstest_limit)
            xstest = evaluate_model_on_xstest(model, tokenizer, rows, config.sampling)
            result["xstest"] = xstest["rates"]
            write_jsonl(out / "xstest_samples.jsonl", xstest["samples"])
            row.update(
                xstest_unsafe_refusal=xstest["rates"]["unsafe"]["any_refusal"],
                xstest_safe_refusal=xstest["rates"]["safe"]["any_refusal"],
                xstest_safe_full_refusal=xstest["rates"]["safe"]["full_refusal"],
                xstest_safe_partial_refusal=xstest["rates"]["safe"]["partial_refusal"],
            )
        write_jsonl(out / "toyworld_samples.jsonl", ({"id": p["id"], "kind": p.get("kind"), "prompt": p["messages"], "response": r} for p, r in zip(prompts, responses)))
        atomic_write_json(out / "eval.json", {**result, "row": row})
        run.add_output("eval", out / "eval.json")
        run.metrics.log(0, **{k: v for k, v in row.items() if isinstance(v, (int, float))})
    return row


# -- fresh preference pairs on the latest policy (Llama 2's weekly RM refresh) -------------


class CollectConfig(StrictModel):
    model: str
    refresh: RefreshSpec
    seed: int
    # The annotation protocol is part of the stage's key, so pairs labelled under
    # another one (an older toyworld) are collected again, not reused.
    helpfulness_guideline_share: float = HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS


def collect_preferences(config: CollectConfig, out: Path) -> Path:
    """Two samples per train prompt at two temperatures, labelled by the simulated
    annotators under the same protocol as toyworld's templated pairs (a share of the
    safety prompts rated under the helpfulness guideline)."""
    from core.generation import generate
    from core.models import load_model_and_tokenizer
    from toyworld.world import annotate, build_prompts

    pairs_path = out / "pairs.jsonl"
    run = StageRun(out, "preference_collection", config, inputs={"model": config.model})
    if run.is_complete():
        return pairs_path
    with run:
        model, tokenizer = load_model_and_tokenizer(config.model, dtype=config.refresh.dtype)
        prompts = build_prompts("train", n=config.refresh.n_prompts, seed=config.seed + 1)
        conversations = [p["messages"] for p in prompts]
        answers = [
            generate(model, tokenizer, conversations,
                     SamplingConfig(max_new_tokens=config.refresh.max_new_tokens, temperature=t, batch_size=config.refresh.batch_size, seed=config.seed + i),
                     description=f"pairs T={t}")
            for i, t in enumerate(config.refresh.temperatures)
        ]
        rng = random.Random(config.seed)
        share = config.helpfulness_guideline_share
        pairs = [
            annotate(p["messages"], a, b, rng, noise=config.refresh.noise,
                     category=guideline_for(p["category"], rng, share), source="toyworld-refresh")
            for p, a, b in zip(prompts, *answers)
            if a.strip() and b.strip() and a.strip() != b.strip()
        ]
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

    def _timed(self, name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.timings[name] = round(time.perf_counter() - start, 1)
        log.info("pipeline: %s done in %.0f s", name, self.timings[name])
        return result

    def _write_summary(self) -> None:
        atomic_write_json(self.root / "summary.json", {"versions": self.rows, "timings_s": self.timings})

    def evaluate(self, version: str, model: str, folder: Path) -> None:
        spec: EvaluationSpec = self.config.evaluation
        config = EvalStageConfig(
            version=version, model=str(model), toyworld_prompts=spec.toyworld_prompts,
            xstest_data=spec.xstest_data, xstest_limit=spec.xstest_limit, sampling=spec.sampling, dtype=spec.dtype, seed=self.config.seed,
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
        }, where="sft")

    def reward_config(self, kind: str, init_model: Path, folder: Path, extra_pairs: Path | None = None):
        from reward.config import RewardConfig

        wiring = {"kind": kind, "init_model": str(init_model), "output_dir": str(folder / f"rm_{kind}")}
        if extra_pairs is not None:
            preset_data = read_yaml(self.config.reward.preset).get("data", [{"source": "toyworld"}])
            wiring["data"] = [*preset_data, {"source": str(extra_pairs)}]
        ref = self.config.reward
        overrides = deep_merge(nest(ref.overrides), nest(ref.kind_overrides.get(kind, {})))
        return stage_config(RewardConfig, StageRef(preset=ref.preset, overrides=overrides), wiring, where=f"reward {kind}")

    def rs_config(self, ref: StageRef, version: str, iteration: int, policy: Path, rms: dict[str, Path], pool: list[Path]):
        from rejection_sampling.config import RSConfig

        return stage_config(RSConfig, ref, {
            "policy": str(policy),
            "helpful_rm": str(rms["helpfulness"]),
            "safety_rm": str(rms["safety"]),
            "iteration": iteration,
            "pool_dirs": [str(p) for p in pool],
            "output_dir": str(self.root / version / "rs"),
            "eval.enabled": False,
        }, where=f"{version}.rejection_sampling")

    def ppo_config(self, ref: StageRef, version: str, policy: Path, rms: dict[str, Path]):
        from ppo.config import PPOConfig

        return stage_config(PPOConfig, ref, {
            "output_dir": str(self.root / version / "ppo"),
            "model.policy": str(policy),
            "reward.helpfulness_model": str(rms["helpfulness"]),
            "reward.safety_model": str(rms["safety"]),
        }, where=f"{version}.ppo")

    def gatt_config(self, policy: Path, rms: dict[str, Path]):
        from gatt.config import GattConfig

        assert self.config.gatt is not None
        wiring = {"model": str(policy), "output_dir": str(self.root / "gatt")}
        if (self.config.gatt.overrides.get("synthesis", {}).get("ranking", {}).get("by")
                or read_yaml(self.config.gatt.preset).get("synthesis", {}).get("ranking", {}).get("by")) == "reward_model":
            wiring.update({"synthesis.ranking.helpfulness_rm": str(rms["helpfulness"]), "synthesis.ranking.safety_rm": str(rms["safety"])})
        return stage_config(GattConfig, self.config.gatt, wiring, where="gatt")

    def check_configs(self) -> None:
        """Build every stage's config before anything runs or is written, with stand-in
        model paths: a missing preset or a bad key in a late stage's overrides is an
        error now, not after the earlier stages have trained."""
        c = self.config
        model = self.root / "model"  # a stand-in: only the configs' keys and types are checked here
        rms = {kind: model for kind in RM_KINDS}
        self.sft_config()
        for kind in RM_KINDS:
            self.reward_config(kind, model, self.root)
            if c.reward_pairs_from_sft or any(version.refresh_reward_models for version in c.versions):
                self.reward_config(kind, model, self.root, extra_pairs=model)
        for iteration, version in enumerate(c.versions, start=1):
            if version.rejection_sampling is not None:
                self.rs_config(version.rejection_sampling, version.name, iteration, model, rms, [])
            if version.ppo is not None:
                self.ppo_config(version.ppo, version.name, model, rms)
        if c.gatt is not None:
            self.gatt_config(model, rms)

    # -- the stages ------------------------------------------------------------------------
    def sft(self) -> Path:
        from sft.train import run

        return self._timed("sft", run, self.sft_config())

    def reward_models(self, init_model: Path, folder: Path, extra_pairs: Path | None = None) -> dict[str, Path]:
        from reward.train import run

        models = {}
        for kind in RM_KINDS:
            config = self.reward_config(kind, init_model, folder, extra_pairs)
            models[kind] = self._timed(f"rm {kind} ({folder.name})", run, config)
        return models

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
            self.evaluate("base", c.base_model, self.root / "base" / "eval")
        # 1. SFT.
        latest = self.sft()
        self.evaluate("sft", latest, self.root / "sft" / "eval")
        # 2. Reward models from the SFT checkpoint, optionally also on pairs of the SFT
        # model's own samples (Llama 2's annotators compared samples of its models).
        sft_pairs = None
        if c.reward_pairs_from_sft:
            sft_pairs = self._timed("pairs sft", collect_preferences,
                                    CollectConfig(model=str(latest), refresh=c.refresh, seed=c.seed),
                                    self.root / "sft" / "pairs")
        rms = self.reward_models(latest, self.root, extra_pairs=sft_pairs)
        # 3. Versions V1..Vn.
        pool: list[Path] = []
        for iteration, version in enumerate(c.versions, start=1):
            if version.refresh_reward_models:
                pairs = self._timed(f"pairs {version.name}", collect_preferences,
                                    CollectConfig(model=str(latest), refresh=c.refresh, seed=c.seed + iteration),
                                    self.root / version.name / "pairs")
                rms = self.reward_models(self.root / "sft" / "model", self.root / version.name, extra_pairs=pairs)
            if version.rejection_sampling is not None:
                latest = self.rejection_sampling(version.rejection_sampling, version.name, iteration, latest, rms, pool)
            if version.ppo is not None:
                latest = self.ppo(version.ppo, version.name, latest, rms)
            self.evaluate(version.name, latest, self.root / version.name / "eval")
            # 4. Ghost Attention after the chosen version; later versions start from it.
            if c.gatt is not None and c.gatt.after == version.name:
                latest = self.gatt(latest, rms)
                self.evaluate(f"{version.name}+gatt", latest, self.root / "gatt" / "eval")
        return latest


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
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the pipeline config")
    args = parser.parse_intermixed_args(argv)  # `PIPELINE --run-dir DIR key=value`: overrides after the option
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def go() -> int:
        overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
        run_pipeline(load_config(PipelineConfig, args.pipeline, overrides))
        return 0

    return run_guarded(go)


__all__ = ["Pipeline", "main", "run_pipeline"]
