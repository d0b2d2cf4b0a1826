"""Rejection-sampling fine-tuning (Llama 2, arXiv 2307.09288, section 3.2.3), pooled over iterations.

Hand-written because no maintained library does it: TRL dropped its best-of-n
sampler, OpenRLHF dropped rejection sampling, NeMo-Aligner is archived, and none
of them pooled the best answer over every iteration so far, which is the fix the
paper made after regressions when only the last iteration's samples were used.

One call of `run(config)` is one iteration (RLHF version V<iteration>):

1. run folder: skip if a completed run with the same config and inputs exists;
2. prompts: a prompt source (a file of Prompt records, or toyworld's train split);
3. sample K answers per prompt from the policy, shard by shard (shard i = a chunk
   of `shard_size` prompts, seeded from (seed, iteration, i)); a shard file that
   exists is whole (atomic write) and is never sampled again, so a killed run
   resumes where it stopped and ends with the same samples;
4. score every answer with the gated scoring service (`reward.gated`: both RMs and
   Llama 2's gate R_c; done per shard, before the shard is written, so every sample
   on disk has its scores);
5. pool this iteration's samples with those of `pool_dirs` (re-scored with the
   current RMs when they came from other RMs) and keep the best per prompt id:
   OUT/best.jsonl, the SFT dataset, with provenance;
6. the max/median reward curve against k (the paper's Figure 7): curve.json/png;
7. fine-tune `init_model` on best.jsonl with the SFT stage's code (OUT/sft/),
   published as OUT/model;
8. the shared before/after evaluation (`core.evaluation`) of the policy and
   OUT/model on the same held-out prompts: eval.json; then the manifest is
   closed by StageRun.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.errors import ConfigError, DataError
from core.io import atomic_write_json, iter_jsonl, write_jsonl
from core.run import StageRun, read_manifest
from rejection_sampling.config import RSConfig
from rejection_sampling.core import (
    chosen_vs_median,
    max_median_curve,
    select_best,
)
from reward.gated import GatedScorer

STAGE = "rejection_sampling"
SAMPLES = "samples"
SPEC = "spec.json"
SHARD_GLOB = "shard-*.jsonl"
FINETUNE_DATA = "finetune_data.jsonl"  # the pooled best answers plus replayed demonstrations


# --------------------------------------------------------------------------- small helpers


def shard_path(samples_dir: Path, index: int) -> Path:
    return samples_dir / f"shard-{index:05d}.jsonl"


def shard_seed(seed: int, iteration: int, shard: int) -> int:
    """A 31-bit seed from (seed, iteration, shard): a shard's samples do not depend on
    which other shards ran before it, so a resumed run samples exactly what an
    uninterrupted one would."""
    digest = hashlib.sha256(f"rejection_sampling:{seed}:{iteration}:{shard}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def load_prompts(config: RSConfig) -> list[dict]:
    """Step 2: Prompt records `{"messages", "category", "id", ...}`, ids unique."""
    from core.sources import load_prompt_source

    return load_prompt_source(config.prompts, "train", config.prompts.n, config.prompts.seed, key="prompts")


def check_inputs(config: RSConfig) -> None:
    """Fail before anything is written when a model or a pool folder is not what it should be:
    the policy and init_model must be causal LMs (a reward-model folder, a stage folder, an
    unmerged adapter or a corrupt weight file is one line naming the key and the path), both
    reward models one-output reward models, every pool shard readable. Loads no model."""
    from core.model_paths import check_config_models
    from reward.gated import check_reward_models

    check_config_models([("policy", config.policy, "policy"), ("init_model", config.init_model, "policy")])
    check_reward_models(config.reward_models)
    for pool_dir in config.pool_dirs:
        read_samples(pool_dir)  # every shard parses and holds the fields pooling needs


def sampling_spec(config: RSConfig, prompts: list[dict], policy_id: str, rm_id: str) -> dict:
    """Everything that decides what the shards hold. A resumed run must match it exactly."""
    ids = hashlib.sha256("\n".join(p["id"] for p in prompts).encode()).hexdigest()
    return {
        "policy": config.policy, "policy_id": policy_id, "rm_id": rm_id, "prompt_ids_sha256": ids,
        "n_prompts": len(prompts), "iteration": config.iteration, "k": config.k,
        "temperature": config.temperature, "top_p": config.top_p, "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size, "shard_size": config.shard_size, "seed": config.seed,
        "dtype": config.dtype, "safety_threshold": config.reward_models.safety_threshold,
    }


def check_spec(samples_dir: Path, spec: dict) -> None:
    """Write the spec on first use; on resume refuse shards sampled under other settings."""
    path = samples_dir / SPEC
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in set(old) | set(spec) if old.get(key) != spec.get(key))
        if changed and any(samples_dir.glob(SHARD_GLOB)):
            raise ConfigError(
                f"{samples_dir} holds samples made with other settings ({', '.join(changed)} changed); "
                "use a fresh output_dir, or delete that samples folder to sample again"
            )
    atomic_write_json(path, spec)


def read_samples(folder: str | os.PathLike) -> list[dict]:
    """Every sample record of a stage folder (or of its samples/ folder), shards in order."""
    folder = Path(folder)
    samples_dir = folder / SAMPLES if (folder / SAMPLES).is_dir() else folder
    shards = sorted(samples_dir.glob(SHARD_GLOB))
    if not shards:
        raise DataError("no sample shards (shard-*.jsonl) found", path=samples_dir)
    rows = []
    for shard in shards:
        for line, row in iter_jsonl(shard):
            for field in ("prompt_id", "messages", "category", "response", "reward", "iteration", "sample_index"):
                if field not in row:
                    raise DataError("missing field", path=shard, line=line, field=field)
            row["source"] = str(shard)
            rows.append(row)
    return rows


def sample_shard(policy, tokenizer, scorer: GatedScorer, rm_id: str, config: RSConfig, prompts: list[dict], shard: int) -> list[dict]:
    """Steps 3-4 for one shard: K answers per prompt (batched), each scored by both RMs."""
    from core.generation import SamplingConfig, generate

    seed = shard_seed(config.seed, config.iteration, shard)
    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              top_p=config.top_p, batch_size=config.batch_size, seed=seed)
    # K copies of each prompt in one list: generate() sorts by length, so the copies
    # share batches (and the KV-cache work on one prompt length).
    flat = [(prompt, j) for prompt in prompts for j in range(config.k)]
    responses = generate(policy, tokenizer, [p["messages"] for p, _ in flat], sampling,
                         progress=config.progress, description=f"shard {shard}")
    scores = scorer.score([p for p, _ in flat], responses, where=f"shard {shard}").rows()
    rows = []
    for (prompt, j), response, score in zip(flat, responses, scores):
        rows.append({
            "prompt_id": prompt["id"], "iteration": config.iteration, "shard": shard, "sample_index": j,
            "messages": prompt["messages"], "category": prompt["category"], "kind": prompt.get("kind"),
            "response": response, **score, "rm_id": rm_id,
            "temperature": config.temperature, "top_p": config.top_p, "seed": seed, "policy": config.policy,
        })
    return rows


def rescore(rows: list[dict], scorer: GatedScorer, rm_id: str) -> int:
    """Re-score pooled samples that other reward models scored; returns how many were re-scored."""
    stale = [row for row in rows if row.get("rm_id") != rm_id]
    for start in range(0, len(stale), 256):
        chunk = stale[start:start + 256]
        new = scorer.score(chunk, [r["response"] for r in chunk], where="re-scoring the pool").rows()  # rows carry messages and category
        for row, score in zip(chunk, new):
            row["original_reward"] = row["reward"]
            row.update(score, rm_id=rm_id, rescored=True)
    return len(stale)


def best_record(sample: dict) -> dict:
    """An SFT row (`messages` = prompt + the chosen answer) with its provenance."""
    provenance = {key: sample.get(key) for key in (
        "category", "kind", "reward", "reward_from", "helpful_prob", "safety_prob", "iteration", "shard",
        "sample_index", "temperature", "policy", "source", "original_reward")}
    return {"messages": list(sample["messages"]) + [{"role": "assistant", "content": sample["response"]}],
            "id": sample["prompt_id"], **{k: v for k, v in provenance.items() if v is not None}}


def publish_model(source: Path, target: Path) -> None:
    """OUT/model: the fine-tuned folder, hard-linked (or copied) into place atomically."""
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, tmp, copy_function=link_or_copy)
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)


# --------------------------------------------------------------------------- the loop


class _Follower:
    """What non-main processes of a multi-process launch get instead of the StageRun:
    only the main process writes the run folder's config, manifest and metrics."""

    metrics = None

    def __init__(self):
        self.extra: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def add_output(self, name, path):
        pass


def _log(stage, step: int, **metrics) -> None:
    if stage.metrics is not None:
        stage.metrics.log(step, **metrics)


def run(config: RSConfig, after_shard: Callable[[int], None] | None = None) -> Path:
    """One rejection-sampling iteration; returns the model the next stage starts from:
    OUT/model (the fine-tuned folder), or the policy itself when `finetune_enabled` is false.

    Under `accelerate launch` every process samples the shards with
    `index % num_processes == process_index` (a shard's seed depends on its index
    only, so the samples are those of one process); the main process pools,
    writes and evaluates, and all of them take part in the fine-tune.
    `after_shard(i)` is called after shard i is on disk (tests use it to kill the
    run midway and check that resuming gives the same samples).
    """
    from accelerate import PartialState

    from core.device import resolve_device

    state = PartialState()
    main = state.is_main_process
    device = resolve_device(config.device)
    if state.num_processes > 1 and device.startswith("cuda"):
        device = str(state.device)  # each process on its own GPU
    out = Path(config.output_dir)
    samples_dir = out / SAMPLES
    timings: dict[str, float] = {}

    # 1. run folder: skip when done with the same config and inputs ------------------
    inputs = {"policy": config.policy, "helpful_rm": config.reward_models.helpfulness, "safety_rm": config.reward_models.safety}
    if config.init_model and config.init_model != config.policy:
        inputs["init_model"] = config.init_model  # hashed once more only when it is another model
    from core.sources import is_toyworld

    if not is_toyworld(config.prompts.source):
        inputs["prompts"] = config.prompts.source
    for i, pool_dir in enumerate(config.pool_dirs):
        if Path(pool_dir).resolve() in (out.resolve(), samples_dir.resolve()):
            raise ConfigError(f"pool_dirs[{i}] is this run's own folder {pool_dir}; list earlier iterations only")
        pool_samples = Path(pool_dir) / SAMPLES
        inputs[f"pool_{i}"] = str(pool_samples if pool_samples.is_dir() else pool_dir)
    stage = StageRun(out, STAGE, config, inputs=inputs, report_to=config.report_to, push_to_hub=config.push_to_hub)
    if stage.is_complete():
        if main:
            print(f"[rs] {out} is complete with this config and these inputs; skipping")
        return result_model(config)

    # 2. models, pools and prompts, checked before the run folder is touched -------------
    #    (constructing the StageRun and asking is_complete only read the folder)
    check_inputs(config)
    prompts = load_prompts(config)
    state.wait_for_everyone()  # every process has read the old manifest before it changes

    with stage if main else _Follower() as stage:
        if stage.metrics is not None:
            # Every metric is recomputed from the files, so a resumed run starts a clean log.
            stage.metrics.truncate_after(-1)
        started = time.perf_counter()
        shards = [prompts[i:i + config.shard_size] for i in range(0, len(prompts), config.shard_size)]
        state.wait_for_everyone()  # the main process has hashed the inputs into the manifest
        hashed = (read_manifest(out) or {}).get("inputs", {})

        def identity(name: str) -> str:  # a model's content hash (a name when not local)
            return (hashed.get(name) or {}).get("sha256") or inputs[name]

        rm_id = f"{identity('helpful_rm')[:16]}:{identity('safety_rm')[:16]}"
        if main:
            check_spec(samples_dir, sampling_spec(config, prompts, identity("policy"), rm_id))
            print(f"[rs] iteration {config.iteration}: {len(prompts)} prompts x K={config.k} at T={config.temperature} "
                  f"in {len(shards)} shards -> {samples_dir}")
        state.wait_for_everyone()  # no process samples before the settings are checked

        # 3-4. sample and score this process's missing shards; a shard on disk is never resampled
        policy = tokenizer = scorer = None

        def get_scorer() -> GatedScorer:
            nonlocal scorer
            if scorer is None:
                scorer = GatedScorer(config.reward_models, device=device)
            return scorer

        n_sampled = 0
        t0 = time.perf_counter()
        for index, shard_prompts in enumerate(shards):
            path = shard_path(samples_dir, index)
            if index % state.num_processes == state.process_index and not path.is_file():
                if policy is None:
                    from core.models import load_model_and_tokenizer

                    policy, tokenizer = load_model_and_tokenizer(config.policy, dtype=config.dtype, device=device)
                shard_started = time.perf_counter()
                write_jsonl(path, sample_shard(policy, tokenizer, get_scorer(), rm_id, config, shard_prompts, index))  # whole or absent
                n_sampled += 1
                print(f"[rs] shard {index + 1}/{len(shards)} sampled and scored in {time.perf_counter() - shard_started:.1f}s")
            if after_shard is not None:
                after_shard(index)
        policy = tokenizer = None  # free the sampler before the fine-tune loads its own model
        gc.collect()
        state.wait_for_everyone()  # every shard is on disk
        timings["sample_and_score_s"] = time.perf_counter() - t0

        best_path = out / "best.jsonl"
        if main:
            current = []
            for index, shard_prompts in enumerate(shards):
                path = shard_path(samples_dir, index)
                rows = [row for _, row in iter_jsonl(path)]
                expected = [(p["id"], j) for p in shard_prompts for j in range(config.k)]
                if [(r["prompt_id"], r["sample_index"]) for r in rows] != expected:
                    raise DataError("shard does not hold the expected prompts and samples; delete it to resample", path=path)
                rewards = [r["reward"] for r in rows]
                _log(stage, index, kind="shard", reward_mean=sum(rewards) / len(rewards), reward_max=max(rewards),
                     empty_responses=sum(not r["response"].strip() for r in rows),
                     mean_response_chars=sum(len(r["response"]) for r in rows) / len(rows))
                for row in rows:
                    row["source"] = str(path)
                current.extend(rows)

            # 5. pool with earlier iterations and keep the best per prompt id -----------
            t0 = time.perf_counter()
            pooled = list(current)
            n_rescored = 0
            for pool_dir in config.pool_dirs:
                rows = read_samples(pool_dir)
                if config.rescore_pool:
                    n_rescored += rescore(rows, get_scorer(), rm_id)
                pooled.extend(rows)
            best = select_best(pooled)
            if config.min_reward is not None:
                best = {pid: s for pid, s in best.items() if s["reward"] >= config.min_reward}
            write_jsonl(best_path, [best_record(sample) for sample in best.values()])
            if config.replay_toyworld:
                from sft.data import with_toyworld_replay

                with_toyworld_replay(best_path, out / FINETUNE_DATA, config.replay_toyworld, config.seed,
                                     config.replay_family_weights)
                stage.add_output("finetune_data", out / FINETUNE_DATA)
            from_iteration: dict[str, int] = {}
            for sample in best.values():
                from_iteration[str(sample["iteration"])] = from_iteration.get(str(sample["iteration"]), 0) + 1
            pool_stats = {"n_current_samples": len(current), "n_pooled_samples": len(pooled), "n_rescored": n_rescored,
                          "n_best": len(best), "best_from_iteration": from_iteration,
                          "best_reward_mean": sum(s["reward"] for s in best.values()) / max(len(best), 1)}
            timings["pool_s"] = time.perf_counter() - t0
            print(f"[rs] pooled {len(pooled)} samples ({n_rescored} re-scored) -> {len(best)} targets "
                  f"(by iteration: {from_iteration}) in {best_path}")

            # 6. Figure 7: max and median reward against k; the gold check of the choice
            by_prompt: dict[str, list[dict]] = {}
            for row in current:
                by_prompt.setdefault(row["prompt_id"], []).append(row)
            matrix = torch.tensor([[r["reward"] for r in by_prompt[p["id"]]] for p in prompts], dtype=torch.float64)
            curve = max_median_curve(matrix)  # rows are in sample_index order (checked above)
            atomic_write_json(out / "curve.json", {"iteration": config.iteration, "k": config.k,
                                                   "temperature": config.temperature, "n_prompts": len(prompts),
                                                   "curve": curve})
            from rejection_sampling.plot import plot_curve

            plot_curve(out / "curve.json", out / "curve.png")
            for point in curve:  # step = k here (rows of kind "shard" count shards)
                _log(stage, point["k"], kind="curve", **{key: v for key, v in point.items() if key != "k"})
            print("[rs] max/median reward against k:\n" + format_curve(curve))

            from core.sources import gold_judge

            judge = gold_judge(config.prompts.source)  # ground truth exists only for toyworld's prompts
            samples_gold = None
            if judge is not None:
                gold = {(r["prompt_id"], r["iteration"], r["sample_index"]): judge.combined(r, r["response"]) for r in current}
                samples_gold = chosen_vs_median(by_prompt, gold)
                print(f"[rs] gold of this iteration's samples: chosen {samples_gold['chosen']:.3f} ± {samples_gold['chosen_stderr']:.3f}, "
                      f"median {samples_gold['median']:.3f} ± {samples_gold['median_stderr']:.3f}, all {samples_gold['all_samples']:.3f}")
            stage.add_output("samples", samples_dir)
            stage.add_output("best", best_path)
            stage.add_output("curve", out / "curve.json")
            stage.extra.update(pool=pool_stats, curve=curve, samples_gold=samples_gold)
        scorer = None
        gc.collect()
        state.wait_for_everyone()  # best.jsonl is on disk
        stage.extra["shards_sampled_now"] = n_sampled

        # 7. fine-tune the starting checkpoint on the pooled best answers (the SFT stage;
        #    every process takes part, it splits the batches itself) --------------------
        model_dir = out / "model"
        if config.finetune_enabled:
            t0 = time.perf_counter()
            sft_out = finetune(config, best_path, out / "sft")
            if main:
                publish_model(sft_out, model_dir)
                stage.add_output("model", model_dir)
            timings["finetune_s"] = time.perf_counter() - t0

        # 8. the shared evaluation on held-out prompts, before (the policy) and after ----
        if config.eval.enabled and main:
            from core.evaluation import evaluate_models, format_table, save_evaluation

            t0 = time.perf_counter()
            models = {"before": config.policy, **({"after": str(model_dir)} if config.finetune_enabled else {})}
            result = evaluate_models(models, config.eval, config.reward_models, dtype=config.dtype, device=device, progress=config.progress)
            result["samples_gold"] = samples_gold
            save_evaluation(result, out)
            stage.add_output("eval", out / "eval.json")
            stage.extra["eval"] = {"models": result["models"], "paired": result["paired"]}
            timings["eval_s"] = time.perf_counter() - t0
            print(f"[rs] held-out evaluation ({result['prompts']['n']} prompts from {config.eval.prompts}):\n{format_table(result)}")
        timings["total_s"] = time.perf_counter() - started
        stage.extra["timings"] = timings
        state.wait_for_everyone()
    if main:
        print(f"[rs] model: {result_model(config)}")
    return result_model(config)


def result_model(config: RSConfig) -> Path:
    return Path(config.output_dir) / "model" if config.finetune_enabled else Path(config.policy)


def format_curve(curve: list[dict]) -> str:
    lines = [f"{'k':>5} {'max':>8} {'median':>8} {'gap':>8}"]
    lines += [f"{p['k']:>5} {p['max']:>8.4f} {p['median']:>8.4f} {p['gap']:>8.4f}" for p in curve]
    return "\n".join(lines)


def finetune(config: RSConfig, best_path: Path, sft_dir: Path) -> Path:
    """Step 7 through the SFT stage (its own run folder, skip and resume): returns its model folder.
    With `replay_toyworld` it trains on `finetune_data.jsonl` (the targets and the
    replayed demonstrations, written in step 5) instead of `best_path`."""
    from sft.config import DataSection, ModelSection, SFTConfig
    from sft.config import EvalSection as SFTEval
    from sft.train import run as sft_run

    data_path = best_path.with_name(FINETUNE_DATA) if config.replay_toyworld else best_path
    sft_config = SFTConfig(
        model=ModelSection(name=config.start_model),
        data=DataSection(train=str(data_path), on_bad_example="skip"),
        training=config.finetune,
        lora=config.lora,
        eval=SFTEval(enabled=False),  # evaluated below, before against after, on the same prompts
        output_dir=str(sft_dir),
        report_to=config.report_to,
        progress=config.progress,
    )
    model = Path(sft_run(sft_config))
    if not (model / "config.json").is_file():
        raise DataError("the SFT stage finished without a model folder", path=model)
    return model
