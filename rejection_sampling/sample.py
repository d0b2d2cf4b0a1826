"""Rejection-sampling fine-tuning (Llama 2, arXiv 2307.09288, section 3.2.3), pooled over iterations.

Hand-written because no maintained library does it: TRL dropped its best-of-n
sampler, OpenRLHF dropped rejection sampling, NeMo-Aligner is archived, and none
of them pooled the best answer over every iteration so far, which is the fix the
paper made after regressions when only the last iteration's samples were used.

One call of `run(config)` is one iteration (RLHF version V<iteration>):

1. run folder: skip if a completed run with the same config and inputs exists;
2. prompts: a prompt source (a file of Prompt records, or toyworld's train split);
   with `temperature_grid`, the temperature is chosen on a probe of the first
   prompts by the largest mean (max - median) reward gap (temperature_probe.json);
3. sample K answers per prompt from the policy, shard by shard (shard i = a chunk
   of `shard_size` prompts, seeded from (seed, iteration, i)); a shard file that
   exists is whole (atomic write) and is never sampled again, so a killed run
   resumes where it stopped and ends with the same samples; each sample records
   whether it ended with its end-of-turn token (`finished`);
4. score every answer with the gated scoring service (`reward.gated`: both RMs and
   Llama 2's gate R_c; done per shard, before the shard is written, so every sample
   on disk has its scores);
5. pool this iteration's samples with those of `pool_dirs` (re-scored with the
   current RMs when they came from other RMs) and keep the best per prompt id,
   never a truncated or empty answer (counted): OUT/best.jsonl, with provenance;
   OUT/finetune_data.jsonl adds the replayed demonstrations (drawn from ones SFT
   did not train on), and each control arm gets its own file;
6. the max/median reward curve against k (the paper's Figure 7): curve.json/png;
7. fine-tune `init_model` on finetune_data.jsonl with the SFT stage's code
   (OUT/sft/; the loss on the last assistant turn of each row only), published as
   OUT/model; then each control arm from the same init (OUT/arms/<arm>/sft/);
8. the shared evaluation (`core.evaluation`) of the policy, OUT/model, the init
   and the arms on the same held-out prompts: eval.json, with RS's paired
   differences against each (`controls`); then the manifest is closed by StageRun.
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

from core.errors import ConfigError, DataError, RLHFError
from core.io import atomic_write_json, iter_jsonl, write_jsonl
from core.run import FollowerRun, StageRun, read_manifest
from rejection_sampling.config import RSConfig
from rejection_sampling.core import (
    choose_temperature,
    chosen_vs_greedy,
    chosen_vs_median,
    harvest_gap,
    is_eligible,
    last_turn_rows,
    max_median_curve,
    ranking_agreement,
    select_best,
    target_counts,
    user_turns,
)
from reward.gated import GatedScorer

STAGE = "rejection_sampling"
SAMPLES = "samples"
SPEC = "spec.json"
SHARD_GLOB = "shard-*.jsonl"
FINETUNE_DATA = "finetune_data.jsonl"  # the pooled best answers plus replayed demonstrations
PROBE = "temperature_probe.json"
GREEDY = "greedy.jsonl"  # the policy's greedy answers to the sampled prompts, gold-judged (greedy_check)
ARMS = "arms"
# Version of the sample records: 2 added `finished`. A samples folder of another
# version is refused on resume by the spec check (its samples cannot be told apart).
RECORD_VERSION = 2


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


def sampling_spec(config: RSConfig, prompts: list[dict], policy_id: str, rm_id: str, temperature: float) -> dict:
    """Everything that decides what the shards hold. A resumed run must match it exactly.
    `temperature` is the one sampled with (`config.temperature`, or the probe's choice)."""
    ids = hashlib.sha256("\n".join(p["id"] for p in prompts).encode()).hexdigest()
    return {
        "policy": config.policy, "policy_id": policy_id, "rm_id": rm_id, "prompt_ids_sha256": ids,
        "n_prompts": len(prompts), "iteration": config.iteration, "k": config.k,
        "temperature": temperature, "top_p": config.top_p, "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size, "shard_size": config.shard_size, "seed": config.seed,
        "dtype": config.dtype, "safety_threshold": config.reward_models.safety_threshold,
        "calibrated": config.reward_models.calibrated,  # the gate's probabilities, so the pool's scores
        "record_version": RECORD_VERSION,
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


def sample_shard(policy, tokenizer, scorer: GatedScorer, rm_id: str, config: RSConfig, prompts: list[dict], shard: int,
                 temperature: float | None = None, seed: int | None = None) -> list[dict]:
    """Steps 3-4 for one shard: K answers per prompt (batched), each scored by both RMs.
    `temperature` and `seed` default to the config's temperature and the shard's seed."""
    from core.generation import SamplingConfig, generate

    temperature = config.temperature if temperature is None else temperature
    seed = shard_seed(config.seed, config.iteration, shard) if seed is None else seed
    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=temperature,
                              top_p=config.top_p, batch_size=config.batch_size, seed=seed)
    # K copies of each prompt in one list: generate() sorts by length, so the copies
    # share batches (and the KV-cache work on one prompt length).
    flat = [(prompt, j) for prompt in prompts for j in range(config.k)]
    responses, finished = generate(policy, tokenizer, [p["messages"] for p, _ in flat], sampling,
                                   progress=config.progress, description=f"shard {shard}", with_finished=True)
    scores = scorer.score([p for p, _ in flat], responses, where=f"shard {shard}").rows()
    rows = []
    for (prompt, j), response, done, score in zip(flat, responses, finished, scores):
        rows.append({
            "prompt_id": prompt["id"], "iteration": config.iteration, "shard": shard, "sample_index": j,
            "messages": prompt["messages"], "category": prompt["category"], "kind": prompt.get("kind"),
            "response": response, "finished": bool(done), **score, "rm_id": rm_id,
            "temperature": temperature, "top_p": config.top_p, "seed": seed, "policy": config.policy,
        })
    return rows


def greedy_answers(policy, tokenizer, config: RSConfig, prompts: list[dict], judge, path: Path) -> dict[str, float]:
    """Step 6's greedy check: the policy's greedy answer to each prompt (the sampling
    dtype and length), written to `path` with its gold score; returns {prompt_id: gold}."""
    from core.evaluation import answer_prompts
    from core.generation import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=0.0, batch_size=config.batch_size)
    answers = answer_prompts(policy, tokenizer, prompts, sampling, progress=config.progress, description="greedy")
    rows = [{"prompt_id": p["id"], "messages": p["messages"], "category": p["category"], "kind": p.get("kind"),
             **answer, "gold": judge.combined(p, answer["response"])} for p, answer in zip(prompts, answers.to_rows())]
    write_jsonl(path, rows)
    return {row["prompt_id"]: row["gold"] for row in rows}


def probe_temperatures(policy, tokenizer, scorer: GatedScorer, rm_id: str, config: RSConfig, prompts: list[dict]) -> dict:
    """Step 2b: K samples of the first `temperature_probe_prompts` prompts at every
    temperature of the grid; the choice is the largest mean (max - median) gated
    reward, the max over samples that could be targets (`harvest_gap`)."""
    probe = prompts[:config.temperature_probe_prompts]
    gaps, stats = {}, []
    for index, temperature in enumerate(config.temperature_grid):
        seed = shard_seed(config.seed, config.iteration, -1 - index)  # never a shard's seed
        rows = sample_shard(policy, tokenizer, scorer, rm_id, config, probe, -1 - index, temperature=temperature, seed=seed)
        rewards = torch.tensor([[r["reward"] for r in rows[i * config.k:(i + 1) * config.k]] for i in range(len(probe))])
        eligible = torch.tensor([[is_eligible(r) for r in rows[i * config.k:(i + 1) * config.k]] for i in range(len(probe))])
        gaps[temperature] = harvest_gap(rewards, eligible)
        stats.append({"temperature": temperature, "gap": gaps[temperature], "reward_mean": rewards.double().mean().item(),
                      "truncated": sum(r["finished"] is False for r in rows)})
    chosen = choose_temperature(gaps)
    return {"chosen": chosen, "grid": stats, "n_prompts": len(probe), "k": config.k}


def probe_spec(config: RSConfig, prompts: list[dict], policy_id: str, rm_id: str) -> dict:
    """What decides the probe's result; a probe file with another spec is redone."""
    spec = sampling_spec(config, prompts[:config.temperature_probe_prompts], policy_id, rm_id, 0.0)
    spec.pop("temperature")
    return {**spec, "temperature_grid": config.temperature_grid}


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
    """An SFT row (`messages` = prompt + the chosen answer) with its provenance. Only
    its last turn, the chosen answer, is learned (`learn: last`); earlier assistant
    turns of a multi-turn prompt are context."""
    provenance = {key: sample.get(key) for key in (
        "category", "kind", "reward", "reward_from", "helpful_prob", "safety_prob", "iteration", "shard",
        "sample_index", "temperature", "policy", "source", "original_reward")}
    return {"messages": list(sample["messages"]) + [{"role": "assistant", "content": sample["response"]}],
            "id": sample["prompt_id"], "learn": "last", **{k: v for k, v in provenance.items() if v is not None}}


# --------------------------------------------------------------------------- replay


def sft_training_file(folder: Path) -> Path | None:
    """The training file of an SFT run folder (from its manifest), or None when `folder`
    is no SFT run."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("stage") != "sft":
        return None
    path = ((manifest.get("inputs") or {}).get("train") or {}).get("path")
    return Path(path) if path else None


def replay_exclusions(config: RSConfig) -> tuple[list[Path], str]:
    """The demonstration files whose requests replay must not repeat, and how they were found."""
    if config.replay.exclude == "auto":
        found = []
        for model in dict.fromkeys([config.start_model, config.policy]):
            folder = Path(model).parent
            train = sft_training_file(folder) if Path(model).name == "model" and folder.is_dir() else None
            if train is not None and train.is_file():
                found.append(train)
        return found, "auto: the SFT runs the policy/init_model came from" if found else "auto: no SFT run found beside the models"
    files = []
    for i, entry in enumerate(config.replay.exclude):
        path = Path(entry)
        train = sft_training_file(path) if path.is_dir() else path
        if train is None or not train.is_file():
            raise ConfigError(f"replay.exclude[{i}]: {entry} is neither an SFT run folder (with its training file) nor a file of demonstrations")
        files.append(train)
    return files, "replay.exclude"


def replay_rows(config: RSConfig, exclude: list[Path]) -> tuple[list[dict], dict]:
    """`replay.n` demonstrations whose user turns appear in none of `exclude`, each split
    into one row per assistant turn (`last_turn_rows`), and what was drawn."""
    from sft.data import load_conversations

    seen = {user_turns(c.messages) for path in exclude for c in load_conversations(str(path), on_bad="skip")}
    n = config.replay.n
    if is_toyworld_source(config.replay.source):
        from core.sources import toyworld_sft_examples

        # the draw grows until n unseen ones are found (toyworld's train split holds thousands)
        candidates = [e["messages"] for e in toyworld_sft_examples(2 * n + len(seen) + 10, config.replay.seed, config.replay.family_weights)]
    else:
        candidates = [c.messages for c in load_conversations(config.replay.source, on_bad="skip")]
    kept = [m for m in candidates if user_turns(m) not in seen][:n]
    if len(kept) < n:
        raise DataError(f"replay.n is {n}, but only {len(kept)} of {len(candidates)} demonstrations ask what "
                        f"the excluded SFT data ({len(seen)} requests) does not", path=config.replay.source)
    rows = []
    for index, messages in enumerate(kept):
        turns = last_turn_rows(messages)
        for t, turn in enumerate(turns):
            rows.append({"messages": turn, "id": f"replay-{index:05d}" + (f"-t{t}" if len(turns) > 1 else ""), "learn": "last"})
    info = {"n": len(kept), "rows": len(rows), "source": config.replay.source, "excluded_files": [str(p) for p in exclude],
            "n_excluded_requests": len(seen), "n_candidates": len(candidates),
            "n_candidates_seen_in_sft": sum(user_turns(m) in seen for m in candidates)}
    return rows, info


def is_toyworld_source(source: str) -> bool:
    from core.sources import is_toyworld

    return is_toyworld(source)


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


def _log(stage, step: int, **metrics) -> None:
    if stage.metrics is not None:
        stage.metrics.log(step, **metrics)


def check_distributed(config: RSConfig, num_processes: int) -> None:
    """`distributed` against the launch: `none` is one process; `fsdp2` shards the
    fine-tune with accelerate's FSDP plugin (TRL's trainer), which needs GPUs and an
    FSDP launch (`accelerate launch --config_file configs/accelerate/fsdp_8gpu.yaml`).
    Sampling and scoring hold a whole model per process in every mode."""
    from core.distributed import accelerate_fsdp_launch, check_launch, check_trainer_engine

    if config.finetune_enabled:
        check_trainer_engine(config.distributed, num_processes, torch.cuda.is_available(), accelerate_fsdp_launch(),
                             "the RS fine-tune", "-m rejection_sampling")
    else:
        check_launch(config.distributed, num_processes)


def run(config: RSConfig, after_shard: Callable[[int], None] | None = None) -> Path:
    """One rejection-sampling iteration; returns the model the next stage starts from:
    OUT/model (the fine-tuned folder), or the policy itself when `finetune_enabled` is false.

    Under `accelerate launch` or `torchrun` every process samples the shards with
    `index % num_processes == process_index` (a shard's seed depends on its index
    only, so the samples are those of one process); the main process probes the
    temperature, pools, writes and evaluates, and all of them take part in the
    fine-tunes (TRL's trainer under accelerate: DDP, or FSDP with `distributed: fsdp2`).
    `after_shard(i)` is called after shard i is on disk (tests use it to kill the
    run midway and check that resuming gives the same samples).
    """

    from core.device import resolve_device
    from core.distributed import make_accelerator, process_state

    make_accelerator()  # sees every process of a CPU torchrun launch too
    state = process_state()
    check_distributed(config, state.num_processes)
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
    exclude, exclude_how = replay_exclusions(config) if config.replay.n else ([], "no replay")
    if config.replay.n:
        if not is_toyworld(config.replay.source):
            inputs["replay"] = config.replay.source
        for i, path in enumerate(exclude):
            inputs[f"replay_exclude_{i}"] = str(path)
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

    with stage if main else FollowerRun() as stage:
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
        policy = tokenizer = scorer = None

        def get_scorer() -> GatedScorer:
            nonlocal scorer
            if scorer is None:
                scorer = GatedScorer(config.reward_models, device=device)
            return scorer

        def get_policy():
            nonlocal policy, tokenizer
            if policy is None:
                from core.models import load_model_and_tokenizer

                policy, tokenizer = load_model_and_tokenizer(config.policy, dtype=config.dtype, device=device)
            return policy, tokenizer

        # 2b. the temperature: as configured, or the probe's choice (main process; kept on resume)
        temperature = config.temperature
        if config.temperature_grid is not None:
            if main:
                spec = probe_spec(config, prompts, identity("policy"), rm_id)
                path = out / PROBE
                old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
                if old is None or old.get("spec") != spec:
                    t0 = time.perf_counter()
                    atomic_write_json(path, {"spec": spec, **probe_temperatures(*get_policy(), get_scorer(), rm_id, config, prompts)})
                    timings["temperature_probe_s"] = time.perf_counter() - t0
                stage.add_output("temperature_probe", path)
            state.wait_for_everyone()
            probe = json.loads((out / PROBE).read_text(encoding="utf-8"))
            temperature = probe["chosen"]
            stage.extra["temperature_probe"] = {key: probe[key] for key in ("chosen", "grid", "n_prompts", "k")}
            for point in probe["grid"]:  # step = the grid index
                _log(stage, config.temperature_grid.index(point["temperature"]), kind="temperature_probe", **point,
                     chosen=float(point["temperature"] == temperature))
            if main:
                print("[rs] temperature probe (mean max - median reward): "
                      + ", ".join(f"T={p['temperature']}: {p['gap']:.4f}" for p in probe["grid"]) + f" -> T={temperature}")
        stage.extra["temperature"] = temperature
        stage.extra["num_processes"] = state.num_processes
        if main:
            check_spec(samples_dir, sampling_spec(config, prompts, identity("policy"), rm_id, temperature))
            print(f"[rs] iteration {config.iteration}: {len(prompts)} prompts x K={config.k} at T={temperature} "
                  f"in {len(shards)} shards -> {samples_dir} ({state.num_processes} process(es))")
        state.wait_for_everyone()  # no process samples before the settings are checked

        # 3-4. sample and score this process's missing shards; a shard on disk is never resampled
        n_sampled = 0
        t0 = time.perf_counter()
        for index, shard_prompts in enumerate(shards):
            path = shard_path(samples_dir, index)
            if index % state.num_processes == state.process_index and not path.is_file():
                shard_started = time.perf_counter()
                write_jsonl(path, sample_shard(*get_policy(), get_scorer(), rm_id, config, shard_prompts, index,
                                               temperature=temperature))  # whole or absent
                n_sampled += 1
                print(f"[rs] shard {index + 1}/{len(shards)} sampled and scored in {time.perf_counter() - shard_started:.1f}s")
            if after_shard is not None:
                after_shard(index)
        policy = tokenizer = None  # free the sampler before the fine-tune loads its own model
        gc.collect()
        state.wait_for_everyone()  # every shard is on disk
        timings["sample_and_score_s"] = time.perf_counter() - t0

        best_path = out / "best.jsonl"
        arm_data = {arm: out / ARMS / arm / FINETUNE_DATA for arm in config.control_arms}
        samples_gold = None
        if main:
            current = []
            for index, shard_prompts in enumerate(shards):
                path = shard_path(samples_dir, index)
                rows = [row for _, row in iter_jsonl(path)]
                expected = [(p["id"], j) for p in shard_prompts for j in range(config.k)]
                if [(r["prompt_id"], r["sample_index"]) for r in rows] != expected or any("finished" not in r for r in rows):
                    raise DataError("shard does not hold the expected prompts and samples; delete it to resample", path=path)
                rewards = [r["reward"] for r in rows]
                _log(stage, index, kind="shard", reward_mean=sum(rewards) / len(rewards), reward_max=max(rewards),
                     empty_responses=sum(not r["response"].strip() for r in rows),
                     truncated_responses=sum(not r["finished"] for r in rows),
                     mean_response_chars=sum(len(r["response"]) for r in rows) / len(rows))
                for row in rows:
                    row["source"] = str(path)
                current.extend(rows)

            # 5. pool with earlier iterations and keep the best per prompt id -----------
            #    (a truncated or empty answer is never a target)
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
            targets = [best_record(sample) for sample in best.values()]
            write_jsonl(best_path, targets)
            replay, replay_info = replay_rows(config, exclude) if config.replay.n else ([], None)
            if replay_info is not None:
                replay_info["exclude"] = exclude_how
            if config.finetune_enabled and not targets and not replay:
                counts = target_counts(pooled)
                raise RLHFError(
                    f"rejection sampling: nothing to fine-tune on: none of {len(prompts)} prompts has a target "
                    f"({counts['n_prompts_all_truncated']} with every sample cut at max_new_tokens={config.max_new_tokens} "
                    f"without an end-of-turn token, which is never a target) and replay.n is 0; raise max_new_tokens, "
                    f"set replay.n, or finetune_enabled=false. The samples are kept in {samples_dir}")
            write_jsonl(out / FINETUNE_DATA, [*targets, *replay])
            stage.add_output("finetune_data", out / FINETUNE_DATA)
            if "best_of_1" in arm_data:  # the first sample of each prompt, under the same rules
                first = select_best(s for s in current if int(s["sample_index"]) == 0)
                write_jsonl(arm_data["best_of_1"], [*(best_record(s) for s in first.values()), *replay])
            if "replay_only" in arm_data:
                write_jsonl(arm_data["replay_only"], replay)
            from_iteration: dict[str, int] = {}
            for sample in best.values():
                from_iteration[str(sample["iteration"])] = from_iteration.get(str(sample["iteration"]), 0) + 1
            current_counts, pooled_counts = target_counts(current), target_counts(pooled)
            pool_stats = {"n_current_samples": len(current), "n_pooled_samples": len(pooled), "n_rescored": n_rescored,
                          "n_best": len(best), "best_from_iteration": from_iteration,
                          "best_reward_mean": sum(s["reward"] for s in best.values()) / max(len(best), 1),
                          "n_truncated": current_counts["n_truncated"],
                          "n_prompts_all_truncated": current_counts["n_prompts_all_truncated"],
                          "current": current_counts, "pooled": pooled_counts,
                          "n_replay": len(replay), "replay": replay_info,
                          "n_arm_rows": {arm: sum(1 for _ in iter_jsonl(path)) for arm, path in arm_data.items()}}
            _log(stage, 0, kind="pool", **{f"current/{k}": v for k, v in current_counts.items()},
                 **{f"pooled/{k}": v for k, v in pooled_counts.items()}, n_best=len(best), n_replay=len(replay))
            timings["pool_s"] = time.perf_counter() - t0
            print(f"[rs] pooled {len(pooled)} samples ({n_rescored} re-scored) -> {len(best)} targets "
                  f"(by iteration: {from_iteration}) in {best_path}; truncated samples: {current_counts['n_truncated']} "
                  f"of {len(current)} (never targets; {pooled_counts['n_prompts_all_truncated']} prompts all truncated, "
                  f"{pooled_counts['n_prompts_without_target']} without a target)")

            # 6. Figure 7: max and median reward against k; the gold check of the choice
            by_prompt: dict[str, list[dict]] = {}
            for row in current:
                by_prompt.setdefault(row["prompt_id"], []).append(row)
            matrix = torch.tensor([[r["reward"] for r in by_prompt[p["id"]]] for p in prompts], dtype=torch.float64)
            curve = max_median_curve(matrix)  # rows are in sample_index order (checked above)
            atomic_write_json(out / "curve.json", {"iteration": config.iteration, "k": config.k,
                                                   "temperature": temperature, "n_prompts": len(prompts),
                                                   "curve": curve})
            from rejection_sampling.plot import plot_curve

            plot_curve(out / "curve.json", out / "curve.png")
            for point in curve:  # step = k here (rows of kind "shard" count shards)
                _log(stage, point["k"], kind="curve", **{key: v for key, v in point.items() if key != "k"})
            print("[rs] max/median reward against k:\n" + format_curve(curve))

            from core.sources import gold_judge

            judge = gold_judge(config.prompts.source)  # ground truth exists only for toyworld's prompts
            if judge is not None:
                gold = {(r["prompt_id"], r["iteration"], r["sample_index"]): judge.combined(r, r["response"]) for r in current}
                samples_gold = chosen_vs_median(by_prompt, gold)
            if samples_gold is not None:
                samples_gold["agreement"] = ranking_agreement(by_prompt, gold)
                if config.greedy_check:
                    greedy_gold = greedy_answers(*get_policy(), config, prompts, judge, out / GREEDY)
                    policy = tokenizer = None
                    gc.collect()
                    samples_gold["greedy"] = chosen_vs_greedy(by_prompt, gold, greedy_gold)
                    stage.add_output("greedy", out / GREEDY)
                print(f"[rs] gold of this iteration's samples: chosen {samples_gold['chosen']:.3f} ± {samples_gold['chosen_stderr']:.3f}, "
                      f"median {samples_gold['median']:.3f} ± {samples_gold['median_stderr']:.3f}, all {samples_gold['all_samples']:.3f}")
                print("[rs] the reward orders two samples of a prompt as gold does: " + ", ".join(
                    f"{kind} {tally['rate']:.2f} of {tally['pairs']}" for kind, tally in samples_gold["agreement"].items()))
                if samples_gold.get("greedy"):
                    versus = samples_gold["greedy"]
                    print(f"[rs] gold of the chosen answers against the policy's greedy ones: {versus['chosen']:.3f} vs "
                          f"{versus['greedy']:.3f}, {versus['diff']:+.3f} ± {versus['diff_stderr']:.3f} "
                          f"({versus['wins']} better, {versus['losses']} worse, {versus['n']} prompts)")
            stage.add_output("samples", samples_dir)
            stage.add_output("best", best_path)
            stage.add_output("curve", out / "curve.json")
            stage.extra.update(pool=pool_stats, curve=curve, samples_gold=samples_gold)
        scorer = None
        gc.collect()
        state.wait_for_everyone()  # best.jsonl and the fine-tune files are on disk
        stage.extra["shards_sampled_now"] = n_sampled

        # 7. fine-tune the starting checkpoint on the pooled best answers (the SFT stage;
        #    every process takes part, it splits the batches itself), then each control arm
        model_dir = out / "model"
        arm_models: dict[str, str] = {}
        if config.finetune_enabled:
            t0 = time.perf_counter()
            sft_out = finetune(config, out / FINETUNE_DATA, out / "sft")
            if main:
                publish_model(sft_out, model_dir)
                stage.add_output("model", model_dir)
            timings["finetune_s"] = time.perf_counter() - t0
            for arm, data in arm_data.items():
                t0 = time.perf_counter()
                arm_models[arm] = str(finetune(config, data, out / ARMS / arm / "sft"))
                stage.add_output(f"arm_{arm}", Path(arm_models[arm]))
                timings[f"finetune_{arm}_s"] = time.perf_counter() - t0

        # 8. the shared evaluation on held-out prompts: the policy (before), the RS model
        #    (after), the init and the arms; RS against each as paired differences -----
        if config.eval.enabled and main:
            from core.evaluation import compare, evaluate_models, format_table, save_evaluation

            t0 = time.perf_counter()
            models = {"before": config.policy, **({"after": str(model_dir)} if config.finetune_enabled else {})}
            if config.control_arms and config.start_model != config.policy:
                models["init"] = config.start_model
            models.update(arm_models)
            # float32 whatever `dtype` samples in: bf16 rounding moves answers as much as a
            # short fine-tune does (benchmarks/RESULTS.md, eval_precision), as in every stage.
            result = evaluate_models(models, config.eval, config.reward_models, dtype="float32", device=device, progress=config.progress)
            result["samples_gold"] = samples_gold
            if config.control_arms:
                columns = result["columns"]
                init = "init" if "init" in models else "before"
                result["controls"] = {f"rs_vs_{arm}": compare(columns["after"], columns[arm]) for arm in arm_models}
                result["controls"]["rs_vs_init"] = compare(columns["after"], columns[init])
                for i, (name, comparison) in enumerate(result["controls"].items()):
                    _log(stage, i, kind="control", arm=name, **{f"{metric}/diff": c["diff"] for metric, c in comparison.items() if "diff" in c},
                         **{f"{metric}/diff_stderr": c["diff_stderr"] for metric, c in comparison.items() if "diff" in c})
            save_evaluation(result, out)
            stage.add_output("eval", out / "eval.json")
            stage.extra["eval"] = {"models": result["models"], "paired": result["paired"], "controls": result.get("controls")}
            timings["eval_s"] = time.perf_counter() - t0
            print(f"[rs] held-out evaluation ({result['prompts']['n']} prompts from {config.eval.prompts}):\n{format_table(result)}")
            for name, comparison in (result.get("controls") or {}).items():
                for metric in ("gold_combined", "rm_reward"):
                    if metric in comparison:
                        c = comparison[metric]
                        print(f"[rs] {name} {metric}: {c['diff']:+.3f} ± {c['diff_stderr']:.3f} ({c['wins']} wins, {c['losses']} losses)")
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


def finetune_sft_config(config: RSConfig, data_path: Path, sft_dir: Path):
    """The SFT stage's config of an RS fine-tune: `init_model` on `data_path`, the loss on
    the last assistant turn of each row only (`learn: last`; replayed multi-turn
    demonstrations were split into one row per answer), no evaluation of its own."""
    from sft.config import DataSection, ModelSection, SFTConfig
    from sft.config import EvalSection as SFTEval

    return SFTConfig(
        model=ModelSection(name=config.start_model),
        data=DataSection(train=str(data_path), on_bad_example="skip", learn="last"),
        training=config.finetune,
        lora=config.lora,
        eval=SFTEval(enabled=False),  # evaluated below, before against after, on the same prompts
        output_dir=str(sft_dir),
        report_to=config.report_to,
        progress=config.progress,
    )


def finetune(config: RSConfig, data_path: Path, sft_dir: Path) -> Path:
    """Step 7 through the SFT stage (its own run folder, skip and resume): returns its model folder."""
    from sft.train import run as sft_run

    model = Path(sft_run(finetune_sft_config(config, data_path, sft_dir)))
    if not (model / "config.json").is_file():
        raise DataError("the SFT stage finished without a model folder", path=model)
    return model
