"""PPO under Llama 2's safety-gated reward: the stage loop.

Written by hand because TRL removed its PPO trainer. The loop follows
lm-human-preference-details / cleanrl (a flat loop with numbered steps and a typed
rollout record) and Llama 2 (arXiv 2307.09288, section 3.2.3):

    R(g | p) = WHITEN(LOGIT(R_c(g | p))) - β · KL(π_θ(g | p) ‖ π_0(g | p))
    R_c = R_s if IS_SAFETY(p) or R_s < 0.15 else R_h

with two additions of lm-human-preferences / TRL: a response cut at the token limit
gets a missing-EOS penalty on its score (`ppo.missing_eos_penalty`), and β may follow
an adaptive KL controller (`ppo.kl_target`). R_c may be replaced by one RM or a Python
function (`reward.kind`, `ppo/rewards.py`). The optimizer updates float32 masters; a
bfloat16 `model.dtype` is autocast around the forwards (`ppo/models.py`).

The pure math is in `ppo/core.py` (unit-tested against hand-computed numbers), the
gated scoring service in `reward/gated.py`, the held-out evaluation in
`core/evaluation.py` (shared with every stage), models and their distributed engine
(`distributed: ddp|fsdp2`) in `ppo/models.py`, the rollout record and sharding in
`ppo/rollout.py` (its docstring explains why an N-process run takes the same step as a
one-process run), checkpoints in `ppo/checkpoint.py`. Each iteration is three steps:
`collect` (roll out, score, forwards, GAE), `update` (PPO epochs), `log_row`.

Outputs in `output_dir`: `model/` (the final, or best held-out, policy as a Hugging Face
folder, LoRA merged), `checkpoints/`, `eval.json` (the shared evaluation on held-out
prompts before and after, with the keep-best history), and the stage files (`config.yaml`, `manifest.json`,
`metrics.jsonl`). A completed run is skipped; an interrupted one resumes from its last
checkpoint to the same result.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from core.distributed import (
    check_launch,
    full_state_dict,
    local_fraction,
    make_accelerator,
    shard_fsdp2,
)
from core.errors import RLHFError
from core.evaluation import answer_prompts, compare, model_summary, paired_comparison, score_answers
from core.generation import generate_batch
from core.io import atomic_write_json
from core.model_paths import check_config_models
from core.models import resolve_model_path, save_model
from core.run import FollowerRun, StageRun
from core.sources import describe_source, gold_judge, is_toyworld, load_prompt_source, source_name
from ppo.checkpoint import latest_checkpoint, load_best, load_checkpoint, save_best, save_checkpoint
from ppo.config import PPOConfig
from ppo.core import (
    Reduce,
    RunningMoments,
    adaptive_kl_beta,
    entropy_from_logits,
    explained_variance,
    gae,
    logprobs_from_logits,
    masked_whiten,
    missing_eos_scores,
    per_token_rewards,
    policy_loss,
    value_loss,
)
from ppo.models import build_models, prepare_distributed, whole_policy
from ppo.rewards import TrainingReward, load_reward_function
from ppo.rollout import (
    Rollout,
    check_finite,
    concat_chunks,
    global_sum,
    iteration_prompts,
    micro_batches,
    minibatch_rows,
    model_inputs,
    my_chunks,
    process_sum,
    response_logits,
    response_slice,
)
from reward.gated import GatedScorer, check_reward_models


class RunInterrupted(RLHFError):
    """Raised by `stop_after_iteration` (tests of resumption): the run stops as if killed."""


# ------------------------------------------------------------------- inputs


def check_models(config: PPOConfig) -> None:
    """`model.policy` is a causal LM and both `reward_models` one-output reward models,
    with complete weight files; a bad one is one line naming the key and the path
    (and the right path where there is one). Loads nothing."""
    check_config_models([("model.policy", config.model.policy, "policy")])
    check_reward_models(config.reward_models)
    if config.reward.function:
        load_reward_function(config.reward.function)  # imports it: a bad module:function is a config error now


def load_prompts(config: PPOConfig) -> tuple[list[dict], list[dict]]:
    """The training and held-out prompts (every record checked)."""
    prompts = load_prompt_source(config.data.prompts, "train", config.data.n_prompts, config.data.seed, key="data.prompts")
    heldout = load_prompt_source(config.eval.prompts, "heldout", config.eval.n_prompts, config.eval.seed, key="eval.prompts")
    return prompts, heldout


def check_inputs(config: PPOConfig) -> tuple[list[dict], list[dict]]:
    """The training and held-out prompts, after checking every input that can be checked
    without loading a model; called before the run folder is touched, so bad input
    leaves it as it was."""
    check_models(config)
    return load_prompts(config)


# Settings that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = ("stop_after_iteration", "progress", "report_to", "push_to_hub", "iterations", "checkpoint_every")


def resume_key(config: PPOConfig) -> dict:
    """The config a checkpoint must have been made with to be resumed by this config."""
    data = config.model_dump(mode="json")
    for key in RESUMABLE_CHANGES:
        data.pop(key, None)
    return data


def stage_inputs(config: PPOConfig) -> dict:
    inputs = {
        "policy": resolve_model_path(config.model.policy),
        "helpfulness_rm": config.reward_models.helpfulness,
        "safety_rm": config.reward_models.safety,
    }
    if config.reward.function:
        inputs["reward_function"] = config.reward.function
    for name, source in (("prompts", config.data.prompts), ("heldout_prompts", config.eval.prompts)):
        if not is_toyworld(source):
            inputs[name] = source_name(source)
    return inputs


# ------------------------------------------------------------ small helpers


def whiten_scores(method: str, moments: dict[str, RunningMoments], raw: torch.Tensor, groups: list[str],
                  all_raw: torch.Tensor, all_groups: list[str]) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    """WHITEN of this process's (B,) scores, each group (`ppo.score_whitening_groups`:
    the RM that gave R_c, or "all") with its own statistics over the global batch
    `all_raw` (running: `moments[group]` updated first; batch: this batch's; none: as
    they are). Returns the (B,) whitened scores and, per group present, {"mean", "std"}
    it was whitened with, "batch_mean" (the batch's own raw mean) and "n" (its count in
    the batch).

    A group with fewer than two scores so far (one safety-gated answer in the first
    batch) has no spread of its own: its scores are whitened to 0 (std NaN), never with
    another RM's statistics (which would put it on the wrong scale).
    """
    out = raw.float().clone()
    stats = {}
    for group in dict.fromkeys(all_groups):
        values = all_raw[torch.tensor([g == group for g in all_groups], device=all_raw.device)]
        mine = torch.tensor([g == group for g in groups], device=raw.device)
        batch_mean = float(values.double().mean())
        if method == "none":
            mean, std = 0.0, 1.0
        elif method == "running":
            moments.setdefault(group, RunningMoments()).update(values)
            count, mean, std = moments[group].count, moments[group].mean, moments[group].std
        else:
            count, mean, std = len(values), batch_mean, float(values.double().std()) if len(values) > 1 else math.nan
        if method != "none":
            if count < 2:
                out[mine] = 0.0
            else:
                out[mine] = ((raw[mine].double() - mean) / math.sqrt(std**2 + 1e-8)).float()
        stats[group] = {"mean": mean, "std": std, "batch_mean": batch_mean, "n": len(values)}
    return out, stats


def main_statistics(whitening: dict[str, dict[str, float]], all_raw: torch.Tensor) -> tuple[float, float]:
    """(mean, std) logged as whiten_mean / whiten_std and used to re-scale an
    RM-initialised critic's head at iteration 1: the helpfulness RM's group's (or, whitened
    together, all scores'), else the whole batch's when that group has no spread yet."""
    for group in ("helpfulness", "all"):
        if group in whitening and math.isfinite(whitening[group]["std"]):
            return whitening[group]["mean"], whitening[group]["std"]
    return float(all_raw.double().mean()), float(all_raw.double().std()) if len(all_raw) > 1 else 1.0


def whitening_groups(config, from_safety: torch.Tensor) -> list[str]:
    """Each score's whitening group: the RM that gave R_c, or "all"."""
    if config.ppo.score_whitening_groups == "all" or config.reward.kind != "gated":
        return ["all"] * len(from_safety)
    return ["safety" if flag else "helpfulness" for flag in from_safety.tolist()]


@torch.no_grad()
def rollout_forwards(models, rollout: Rollout, micro: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Step 3: (B, R) policy log-probs, reference log-probs, values; and the summed token entropy."""
    with models.autocast():
        return _rollout_forwards(models, rollout, micro, temperature)


def _rollout_forwards(models, rollout: Rollout, micro: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    n, width = rollout.response_ids.shape
    logprobs, ref_logprobs, values = (torch.zeros(n, width) for _ in range(3))
    entropy_sum = 0.0
    for rows in micro_batches(n, micro):
        part = rollout.select(rows)
        inputs = model_inputs(part.query_ids, part.query_mask, part.response_ids, part.response_mask)
        p_width, r = part.query_ids.shape[1], part.response_ids.shape[1]
        logits = response_logits(models.policy_logits(*inputs, keep=r + 1), r).float() / temperature
        logprobs[rows, :r] = logprobs_from_logits(logits, part.response_ids).cpu()
        entropy_sum += float(entropy_from_logits(logits, part.response_mask)) * float(part.response_mask.sum())
        del logits
        ref = response_logits(models.reference_logits(*inputs, keep=r + 1), r).float() / temperature
        ref_logprobs[rows, :r] = logprobs_from_logits(ref, part.response_ids).cpu()
        del ref
        values[rows, :r] = response_slice(models.values(*inputs), p_width).cpu()
    device = rollout.response_ids.device
    return logprobs.to(device), ref_logprobs.to(device), values.to(device), entropy_sum


def evaluate_heldout(models, tokenizer, heldout: list[dict], scorer: GatedScorer, config: PPOConfig,
                     reward: TrainingReward | None = None) -> tuple[dict, dict]:
    """The shared evaluation (`core.evaluation`) of the current policy on the held-out
    prompts: its summary (rm_reward, refusal, length, truncation with stderrs; gold only
    for toyworld prompts) and its per-prompt columns (for paired comparisons). With a
    training reward other than the gated one, its raw value is the column `reward`.

    The policy answers without autocast: in separate mode on its float32 masters (PPO's
    per-weight steps would vanish in a bf16 forward), in lora mode on the frozen base in
    `model.dtype` with float32 adapters. Every process evaluates the whole held-out set with
    the same seeds and the same weights (the loop then takes the main process's figures).
    """
    with models.generating_policy() as policy:
        answers = answer_prompts(policy, tokenizer, heldout, config.eval.sampling, progress=False)
    gold = gold_judge(config.eval.prompts)
    columns = score_answers(heldout, answers, scorer, gold)
    if reward is not None and reward.kind != "gated":
        columns["reward"] = reward(heldout, answers.responses, "the held-out evaluation").raw.tolist()
    return model_summary(heldout, answers, columns, gold), columns


def keep_best_metric(config: PPOConfig) -> str:
    """The held-out column that keep-best and early stopping follow: the training reward."""
    return "rm_reward" if config.reward.kind == "gated" else "reward"


def beats_the_best(result: dict, state: dict, metric: str) -> bool:
    """Whether a held-out evaluation becomes keep-best's choice: the start always; a later
    iteration only when it beats the best so far AND beats the start by more than the
    standard error of their paired difference on the same prompts (a noise-level rise
    keeps the start, issue 22)."""
    if state["best_reward"] is None:
        return True
    if result[metric] <= state["best_reward"]:
        return False
    start, now = state["evals"][0]["columns"].get(metric), result["columns"].get(metric)
    if not start or not now:
        return True
    pc = paired_comparison(now, start)
    return pc["diff"] > pc["diff_stderr"]


def without_columns(evaluation: dict) -> dict:
    return {key: value for key, value in evaluation.items() if key != "columns"}


def heldout_row(evaluation: dict) -> dict:
    """The metrics.jsonl fields of one held-out evaluation (`heldout_<metric>`)."""
    return {f"heldout_{k}": v for k, v in evaluation.items() if k not in ("iteration", "columns")}


# --------------------------------------------------------------------- run


def run(config: PPOConfig) -> Path:
    accelerator = make_accelerator()
    check_launch(config.distributed, accelerator.num_processes)
    out = Path(config.output_dir)
    check_models(config)  # first: stage_inputs resolves the policy, and nothing may be written before
    stage = StageRun(out, "ppo", config, inputs=stage_inputs(config), report_to=config.report_to, push_to_hub=config.push_to_hub)
    complete = stage.is_complete()
    if not complete:
        prompts, heldout = load_prompts(config)
    accelerator.wait_for_everyone()  # every process reads the manifest before the main one rewrites it
    if complete:
        if accelerator.is_main_process:
            print(f"ppo: {out} is complete with this config and these inputs; skipping")
        return out / "model"
    with stage if accelerator.is_main_process else FollowerRun() as run_:
        train(config, accelerator, run_.metrics, prompts, heldout)
        run_.add_output("model", out / "model")
        run_.add_output("eval", out / "eval.json")
    return out / "model"


@dataclass
class Loop:
    """What every step of the loop shares, built once by `setup`."""

    config: PPOConfig
    accelerator: object
    models: object  # ppo.models.PPOModels
    tokenizer: object
    scorer: GatedScorer
    reward_fn: TrainingReward
    optimizer: torch.optim.Optimizer
    chunk_ids: list[int]  # the global rollout chunks this process generates
    n_chunks: int
    n_minibatches: int
    temperature: float  # the sampling temperature the log-probs are taken at
    score_moments: dict[str, RunningMoments]  # one per whitening group (ppo.score_whitening_groups)
    reduce: Reduce | None  # sums over processes (None: one process)
    train_gold: object  # toyworld's judge of the training prompts, or None
    critic_lr: float


@dataclass(frozen=True)
class CollectStats:
    """What `collect` measured besides the rollout record."""

    whiten_mean: float
    whiten_std: float
    entropy_sum: float  # token entropy summed over this process's real tokens
    times: dict
    whitening: dict[str, dict[str, float]]  # per group of ppo.score_whitening_groups: whiten_scores' statistics


def setup(config: PPOConfig, accelerator) -> Loop:
    """Models on `config.distributed`'s engine, the RMs, the training reward, the optimizer
    (over float32 masters, built after sharding) and this process's share of the chunks."""
    ppo, opt = config.ppo, config.optim
    device = accelerator.device
    models, tokenizer = build_models(config, device)
    prepare_distributed(models, accelerator, config.distributed, config.model.generation_weights)
    scorer = GatedScorer(config.reward_models, device=str(device))
    if models.sharded:  # every process scores the same number of batches (equal shares), so FSDP2's gathers line up
        for rm in (scorer.helpfulness.model, scorer.safety.model):
            shard_fsdp2(rm, device.type)
    critic_lr = opt.critic_learning_rate if opt.critic_learning_rate is not None else opt.learning_rate
    optimizer = torch.optim.AdamW(
        [
            {"params": list(models.policy_params.values()), "lr": opt.learning_rate},
            {"params": list(models.critic_params.values()), "lr": critic_lr},
        ],
        betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay,
    )
    n_chunks = ppo.batch_size // ppo.chunk_size
    world = accelerator.num_processes
    if n_chunks % world:
        raise RLHFError(f"ppo.batch_size / ppo.chunk_size = {n_chunks} rollout chunks cannot be shared by {world} processes")
    return Loop(
        config=config, accelerator=accelerator, models=models, tokenizer=tokenizer, scorer=scorer,
        reward_fn=TrainingReward(config.reward, scorer), optimizer=optimizer,
        chunk_ids=my_chunks(n_chunks, accelerator.process_index, world), n_chunks=n_chunks,
        n_minibatches=ppo.batch_size // ppo.minibatch_size,
        temperature=config.sampling.temperature if config.sampling.temperature > 0 else 1.0,
        score_moments={}, reduce=process_sum(accelerator),
        train_gold=gold_judge(config.data.prompts),  # toyworld's judges only for toyworld's prompts
        critic_lr=critic_lr,
    )


def collect(loop: Loop, prompts: list[dict], iteration: int, beta: float) -> tuple[Rollout, CollectStats]:
    """Steps 1-5: roll out this process's chunks, score, forwards, KL-shaped rewards, GAE."""
    config, ppo, models, accelerator = loop.config, loop.config.ppo, loop.models, loop.accelerator
    device = accelerator.device
    times = {}

    # 1. Roll out: this process's chunks of the global batch, each sampled in one
    #    left-padded batch with the KV cache, seeded by its global chunk index.
    t = time.perf_counter()
    batch_prompts = iteration_prompts(prompts, ppo.batch_size, iteration, config.data.seed)
    chunks = [batch_prompts[c * ppo.chunk_size:(c + 1) * ppo.chunk_size] for c in loop.chunk_ids]
    with models.autocast(), models.generating_policy() as policy:
        generations = [
            generate_batch(policy, loop.tokenizer, [p["messages"] for p in chunk], config.sampling,
                           seed=config.sampling.seed + (iteration - 1) * loop.n_chunks + c)
            for c, chunk in zip(loop.chunk_ids, chunks)
        ]
    rollout = concat_chunks(generations, chunks, loop.chunk_ids, ppo.chunk_size, loop.tokenizer.pad_token_id)
    times["generate"] = time.perf_counter() - t

    # 2. Score: R_c from both RMs and the gate (or reward.kind's reward); LOGIT;
    #    WHITEN with statistics of the whole global batch (scores gathered from every
    #    process first), each reward model's apart; the missing-EOS penalty on
    #    responses cut at the token limit.
    t = time.perf_counter()
    rewarded = loop.reward_fn(rollout.prompts, rollout.texts, f"iteration {iteration}")
    raw_score = rewarded.score.to(device)
    from_safety = rewarded.from_safety.to(device=device, dtype=torch.long)  # gloo gathers no bool tensors
    all_raw, all_from_safety = ((accelerator.gather(raw_score), accelerator.gather(from_safety))
                                if accelerator.num_processes > 1 else (raw_score, from_safety))
    whitened, whitening = whiten_scores(ppo.score_whitening, loop.score_moments, raw_score, whitening_groups(config, from_safety),
                                        all_raw, whitening_groups(config, all_from_safety))
    whiten_mean, whiten_std = main_statistics(whitening, all_raw)
    rollout = rollout.with_(
        reward=rewarded.raw.to(device),
        rm_reward=rewarded.rm_reward.to(device) if rewarded.rm_reward is not None else None,
        score_logit=raw_score,
        scores=missing_eos_scores(whitened, rollout.finished, ppo.missing_eos_penalty, ppo.missing_eos_mode),
    )
    check_finite(accelerator, "reward", iteration, rollout.scores)
    if iteration == 1 and config.model.critic_init == "helpfulness_rm":
        # The RM head now predicts the whitened score (whitening's own eps keeps a
        # batch of equal scores finite).
        models.critic.rescale_(whiten_mean, math.sqrt(whiten_std**2 + 1e-8))
    times["score"] = time.perf_counter() - t

    # 3. Log-probs of the policy and the reference, values of the critic.
    t = time.perf_counter()
    logprobs, ref_logprobs, values, entropy_sum = rollout_forwards(models, rollout, ppo.micro_batch_size, loop.temperature)
    mask = rollout.response_mask

    # 4. Per-token KL penalty against π0; the score is added at the last response token.
    rewards, kl = per_token_rewards(rollout.scores, logprobs, ref_logprobs, mask, beta, ppo.kl_estimator)
    check_finite(accelerator, "per-token reward", iteration, torch.where(mask.bool(), rewards, 0.0))

    # 5. GAE; returns = advantages + values; advantages whitened over the global batch.
    advantages, returns = gae(rewards, values, mask, ppo.gamma, ppo.lam)
    if ppo.whiten_advantages:
        advantages = masked_whiten(advantages, mask, reduce=loop.reduce)
    rollout = rollout.with_(logprobs=logprobs, ref_logprobs=ref_logprobs, values=values, rewards=rewards, kl=kl,
                            advantages=advantages, returns=returns)
    times["forward"] = time.perf_counter() - t
    return rollout, CollectStats(whiten_mean, whiten_std, entropy_sum, times, whitening)


def update(loop: Loop, rollout: Rollout, iteration: int) -> list[dict]:
    """Step 6: PPO epochs over minibatches: clipped policy loss, clipped value loss, ONE
    optimizer step per minibatch; returns each step's statistics (global means).

    Each micro-batch's loss is weighted by N times its share of the minibatch's global
    token count: the engine (DDP, FSDP2) averages gradients over the N processes in the
    backward, so the step is the global token mean whatever N is.
    """
    config, ppo, models, accelerator = loop.config, loop.config.ppo, loop.models, loop.accelerator
    world = accelerator.num_processes
    step_stats = []
    for epoch in range(ppo.ppo_epochs):
        for rows in minibatch_rows(len(loop.chunk_ids), ppo.chunk_size, loop.n_minibatches, loop.chunk_ids, config.seed, iteration, epoch):
            minibatch = rollout.select(rows)
            (n_tokens,) = global_sum(accelerator, minibatch.response_mask.sum())
            sums = dict.fromkeys(("pg_loss", "vf_loss", "clipfrac", "approx_kl", "vf_clipfrac"), 0.0)
            micros = micro_batches(len(minibatch), ppo.micro_batch_size)
            for i, micro in enumerate(micros):
                part = minibatch.select(micro)
                share = float(part.response_mask.sum()) / n_tokens
                inputs = model_inputs(part.query_ids, part.query_mask, part.response_ids, part.response_mask)
                p_width, r_width = part.query_ids.shape[1], part.response_ids.shape[1]
                with gradient_sync(models, last=i == len(micros) - 1), models.autocast():
                    logits, values = models.train_forward(*inputs, keep=r_width + 1)
                    new_logprobs = logprobs_from_logits(response_logits(logits, r_width).float() / loop.temperature, part.response_ids)
                    del logits
                    pg_loss, pg_stats = policy_loss(new_logprobs, part.logprobs, part.advantages, part.response_mask, ppo.clip)
                    vf_loss, vf_stats = value_loss(response_slice(values, p_width), part.values, part.returns, part.response_mask, ppo.value_clip)
                    ((pg_loss + ppo.vf_coef * vf_loss) * share * world).backward()
                for key, value in (("pg_loss", pg_loss), ("vf_loss", vf_loss), ("clipfrac", pg_stats["clipfrac"]),
                                   ("approx_kl", pg_stats["approx_kl"]), ("vf_clipfrac", vf_stats["vf_clipfrac"])):
                    sums[key] += float(value.detach()) * share
            check_finite(accelerator, "loss", iteration, torch.tensor(list(sums.values())))
            norms = clip_gradients(models, config.optim.grad_clip)
            check_finite(accelerator, "gradient", iteration, *norms.values())
            loop.optimizer.step()
            loop.optimizer.zero_grad(set_to_none=True)
            reduced = global_sum(accelerator, *sums.values())
            step_stats.append({**dict(zip(sums, reduced)), **{k: float(v) for k, v in norms.items()}})
    return step_stats


def gradient_sync(models, last: bool):
    """DDP all-reduces in every backward unless told not to: only the minibatch's last
    micro-batch synchronises (the earlier ones accumulate locally). FSDP2 reduce-scatters
    every micro-batch's gradients into the sharded ones, which is already correct."""
    trainer = models.trainer
    if not last and isinstance(trainer, torch.nn.parallel.DistributedDataParallel):
        return trainer.no_sync()
    return contextlib.nullcontext()


def clip_gradients(models, grad_clip: float | None) -> dict[str, torch.Tensor]:
    """Clip the policy's and the critic's gradients separately; returns their norms
    before clipping (whole-model norms under FSDP2 too)."""
    norms = {}
    for name, params in (("policy", list(models.policy_params.values())), ("critic", list(models.critic_params.values()))):
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else float("inf"))
        norms[f"grad_norm_{name}"] = norm.full_tensor() if isinstance(norm, DTensor) else norm
    return norms


def log_row(loop: Loop, rollout: Rollout, stats: CollectStats, step_stats: list[dict], beta: float) -> dict:
    """Step 7: the iteration's metrics, global over every process's share of the batch."""
    accelerator, mask = loop.accelerator, rollout.response_mask
    world = accelerator.num_processes
    all_prompts = gather_object(rollout.prompts) if world > 1 else rollout.prompts
    all_texts = gather_object(rollout.texts) if world > 1 else rollout.texts
    gold = loop.train_gold.metrics(all_prompts, all_texts) if loop.train_gold is not None else {}
    real = mask.bool()
    (n_seq, reward_sum, rm_sum, raw_sum, len_sum, kl_sum, n_tok, score_sum, value_sum, ret_sum, truncated_sum,
     ent_sum) = global_sum(
        accelerator, len(rollout), rollout.reward.sum(),
        rollout.rm_reward.sum() if rollout.rm_reward is not None else 0.0, rollout.score_logit.sum(), mask.sum(),
        rollout.kl.sum(), mask.sum(), rollout.scores.sum(),
        torch.where(real, rollout.values, 0.0).sum(), torch.where(real, rollout.returns, 0.0).sum(),
        (~rollout.finished).sum(), stats.entropy_sum,
    )
    sequence_kl = rollout.kl.sum(dim=1)
    reward_sq, rm_sq, kl_sq = global_sum(
        accelerator, (rollout.reward.double() ** 2).sum(),
        (rollout.rm_reward.double() ** 2).sum() if rollout.rm_reward is not None else 0.0, (sequence_kl.double() ** 2).sum())
    return {
        "reward_mean": reward_sum / n_seq,  # the raw reward of reward.kind, before LOGIT and whitening
        "reward_mean_stderr": stderr_from_sums(reward_sum, reward_sq, n_seq),  # over the batch's sequences
        **({"rm_reward": rm_sum / n_seq, "rm_reward_stderr": stderr_from_sums(rm_sum, rm_sq, n_seq)}
           if rollout.rm_reward is not None else {}),
        "score_logit": raw_sum / n_seq,  # the score before whitening (LOGIT of an RM probability)
        "score_whitened": score_sum / n_seq,  # after whitening and the missing-EOS penalty
        "whiten_mean": stats.whiten_mean,  # the helpfulness RM's group (or all scores)
        "whiten_std": stats.whiten_std,
        # per RM when whitened apart: its scores' batch mean and the statistics they were whitened with
        **{key: value for group, group_stats in stats.whitening.items() if group in ("helpfulness", "safety")
           for key, value in ((f"score_logit_{group}", group_stats["batch_mean"]), (f"whiten_mean_{group}", group_stats["mean"]),
                              (f"whiten_std_{group}", group_stats["std"]), (f"n_{group}", group_stats["n"]))
           if math.isfinite(value)},
        "truncation_rate": truncated_sum / n_seq,  # responses cut at sampling.max_new_tokens
        "kl": kl_sum / n_seq,  # sequence KL(π‖π0), summed over tokens
        "kl_stderr": stderr_from_sums(kl_sum, kl_sq, n_seq),
        "kl_per_token": kl_sum / n_tok,
        "beta": beta,
        "non_score_reward": -beta * kl_sum / n_seq,
        "entropy": ent_sum / n_tok,
        "response_length": len_sum / n_seq,
        "value_mean": value_sum / n_tok,
        "return_mean": ret_sum / n_tok,
        "explained_variance": float(explained_variance(rollout.values, rollout.returns, mask, reduce=loop.reduce)),
        **{key: statistics.fmean(s[key] for s in step_stats) for key in step_stats[0]},
        **{key: gold[key] for key in ("gold_helpfulness", "gold_safety", "gold_combined") if key in gold},
        "lr": loop.config.optim.learning_rate,
        "critic_lr": loop.critic_lr,
        **{f"time_{k}": v for k, v in stats.times.items()},
    }


def stderr_from_sums(total: float, total_sq: float, n: float) -> float:
    """Standard error of a mean from Σx, Σx² and n (sample variance, ddof 1); 0 for n < 2."""
    if n < 2:
        return 0.0
    variance = max(total_sq - total * total / n, 0.0) / (n - 1)
    return math.sqrt(variance / n)


def train(config: PPOConfig, accelerator, metrics, prompts: list[dict], heldout: list[dict]) -> None:
    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    main = accelerator.is_main_process
    ppo = config.ppo
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)

    # ---- setup: models on the engine, reward models, optimizer, sharding -------------
    loop = setup(config, accelerator)
    models, tokenizer, scorer = loop.models, loop.tokenizer, loop.scorer
    state = {"evals": [], "best_iteration": None, "best_reward": None, "evals_since_best": 0, "stopped": False,
             "beta": ppo.beta}  # β changes only under the adaptive KL controller
    keep_best = config.eval.keep_best and config.eval.every > 0
    best_metric = keep_best_metric(config)

    def held_out_eval(iteration: int) -> dict:
        summary, columns = evaluate_heldout(models, tokenizer, heldout, scorer, config, loop.reward_fn)
        if accelerator.num_processes > 1:
            # Every process evaluated the same prompts on the same weights, but a GPU kernel
            # need not be bit-reproducible: the main process's figures decide keep-best and
            # early stopping for all, so no process saves or stops alone.
            summary, columns = broadcast_object_list([summary, columns])
        result = {"iteration": iteration, **summary, "columns": columns}
        state["evals"].append(result)
        if beats_the_best(result, state, best_metric):
            state.update(best_iteration=iteration, best_reward=result[best_metric], evals_since_best=0)
            if keep_best:
                save_best(accelerator, ckpt_dir, iteration, models)
        else:
            state["evals_since_best"] += 1
        if config.eval.patience is not None and config.eval.every > 0 and state["evals_since_best"] >= config.eval.patience:
            state["stopped"] = True
        return result

    # ---- resume, or evaluate the starting policy -------------------------------------
    start = 0
    latest = latest_checkpoint(ckpt_dir)
    accelerator.wait_for_everyone()
    if latest is not None:
        saved = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        if saved.get("config") != resume_key(config):
            theirs, ours = saved.get("config") or {}, resume_key(config)
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise RLHFError(
                f"{latest} was written by a run with another config (sections that differ: {', '.join(differ)}); "
                "use a new output_dir, or delete its checkpoints/ to start over"
            )
        saved = load_checkpoint(accelerator, latest, models, loop.optimizer)
        start = saved["iteration"]
        for group, moments in saved["score_moments"].items():
            loop.score_moments.setdefault(group, RunningMoments()).load_state_dict(moments)
        state.update({key: saved[key] for key in state})
        if main:
            metrics.truncate_after(start)
            print(f"ppo: resuming from {latest} (iteration {start})")
    else:
        if main:
            metrics.truncate_after(-1)  # rows of an earlier attempt that died before its first checkpoint
        before = held_out_eval(0)
        if main:
            metrics.log(0, **heldout_row(before), **memory_row(models, scorer, accelerator))

    # ---- the loop: collect, update, log ----------------------------------------------
    iteration = start
    remaining = range(start + 1, config.iterations + 1) if not state["stopped"] else range(0)  # stopped early before the kill
    bar = tqdm(remaining, initial=start, total=config.iterations, desc="ppo", disable=not (main and config.progress))
    for iteration in bar:
        t0 = time.perf_counter()
        beta = state["beta"]
        rollout, stats = collect(loop, prompts, iteration, beta)
        t = time.perf_counter()
        step_stats = update(loop, rollout, iteration)
        stats.times["train"] = time.perf_counter() - t
        row = log_row(loop, rollout, stats, step_stats, beta)
        row["time_total"] = time.perf_counter() - t0
        if ppo.kl_target is not None:  # the adaptive controller sets the next iteration's β
            state["beta"] = adaptive_kl_beta(beta, row["kl"], ppo.kl_target, ppo.kl_horizon, ppo.batch_size)
        if config.eval.every > 0 and (iteration % config.eval.every == 0 or iteration == config.iterations):
            row.update(heldout_row(held_out_eval(iteration)))
        if main:
            metrics.log(iteration, **row)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.3f}")

        # Checkpoint (after every check of this iteration has passed).
        if iteration % config.checkpoint_every == 0 or iteration == config.iterations or state["stopped"]:
            save_checkpoint(accelerator, ckpt_dir, iteration, models, loop.optimizer, {
                **state,
                "score_moments": {group: moments.state_dict() for group, moments in loop.score_moments.items()},
                "config": resume_key(config),
                "data": {"seed": config.data.seed, "n_prompts": len(prompts), "next_position": iteration * ppo.batch_size},
            })
        if config.stop_after_iteration is not None and iteration == config.stop_after_iteration:
            raise RunInterrupted(f"stopped after iteration {iteration} (stop_after_iteration); rerun to resume")
        if state["stopped"]:
            if main:
                print(f"ppo: early stop at iteration {iteration}: no better held-out reward in {config.eval.patience} evaluations")
            break
    bar.close()

    # ---- outputs: the policy (best or final), eval.json -----------------------------
    final_iteration = iteration
    if keep_best and state["best_iteration"] is not None and state["best_iteration"] != final_iteration:
        load_best(ckpt_dir, state["best_iteration"], models)
        chosen = state["best_iteration"]
    else:
        chosen = final_iteration
    evals = {e["iteration"]: e for e in state["evals"]}
    if chosen in evals:
        after = evals[chosen]
    else:
        summary, columns = evaluate_heldout(models, tokenizer, heldout, scorer, config, loop.reward_fn)
        after = {"iteration": chosen, **summary, "columns": columns}
    save_policy(config, models, tokenizer, out / "model", main)
    if main:
        before = evals[0]
        # The shared evaluation's layout (core.evaluation.evaluate_models), plus the history.
        atomic_write_json(out / "eval.json", {
            "prompts": {"source": describe_source(config.eval.prompts), "n": len(heldout), "split": "heldout"},
            "sampling": config.eval.sampling.model_dump(),
            "reward_models": config.reward_models.model_dump(),
            "models": {"before": {"model": config.model.policy, **without_columns(before)},
                       "after": {"model": str(out / "model"), **without_columns(after)}},
            "paired": {"after": compare(after["columns"], before["columns"])},
            "policy_iteration": chosen,
            "last_iteration": final_iteration,
            "stopped_early": state["stopped"],
            "history": [without_columns(e) for e in state["evals"]],
        })
        print(f"ppo: model: {out / 'model'} (iteration {chosen})")
    accelerator.wait_for_everyone()


def memory_row(models, scorer, accelerator) -> dict:
    """How the launch holds the models: processes, and the share of each model's
    parameters this (the main) process stores (about 1/N under FSDP2, 1 otherwise)."""
    shares = {"num_processes": accelerator.num_processes,
              "param_share_policy": local_fraction(models.policy),
              "param_share_critic": local_fraction(models.critic)}
    if models.reference is not None:
        shares["param_share_reference"] = local_fraction(models.reference)
    shares["param_share_reward_models"] = local_fraction(scorer.helpfulness.model)
    return shares


def save_policy(config: PPOConfig, models, tokenizer, folder: Path, main: bool) -> None:
    """OUT/model: the policy as a Hugging Face folder (LoRA merged). Under FSDP2 every
    process gathers the whole weights and the main one writes them into a fresh copy of
    the initial model (a sharded module cannot save itself)."""
    if not models.sharded:
        if main:
            save_model(models.merged_policy(), tokenizer, folder)
        return
    state = full_state_dict(models.policy)  # every process: gathers
    if main:
        save_model(whole_policy(config.model, state), tokenizer, folder)

