"""The PPO loop (ppo/train.py) on the tiny model: rollout record, score placement,
lora reference, NaN handling, resumption, and 2 processes == 1 process.

The pure PPO math (ppo/core.py) is tested in tests/test_ppo_core.py.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config import load_config
from core.errors import NumericError
from core.run import read_manifest, read_metrics

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------- helpers


def make_tiny_rm(folder: Path, seed: int) -> Path:
    """A random one-output reward model on the tiny-llama body, saved with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models import resolve_model_path

    if (folder / "config.json").is_file():
        return folder
    source = resolve_model_path("embedded:tiny-llama")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        with torch.no_grad():
            model.score.weight.normal_(0, 0.05)  # scores spread but not saturated
    finally:
        torch.random.set_rng_state(state)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rms(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_rms")
    return make_tiny_rm(root / "rm_helpful", 1), make_tiny_rm(root / "rm_safety", 2)


def overrides(out: Path, rms, **extra) -> list[str]:
    settings = {
        "output_dir": str(out),
        "model.policy": "embedded:tiny-llama",
        "model.critic_init": "policy",
        "reward_models.helpfulness": str(rms[0]),
        "reward_models.safety": str(rms[1]),
        "data.n_prompts": 16,
        "eval.n_prompts": 2,
        "sampling.max_new_tokens": 6,
        "eval.sampling.max_new_tokens": 6,
        "eval.every": 0,
        "ppo.batch_size": 4,
        "ppo.minibatch_size": 2,
        "ppo.chunk_size": 2,
        "ppo.micro_batch_size": 2,
        "ppo.ppo_epochs": 2,
        "optim.learning_rate": 1e-3,
        "iterations": 3,
        "checkpoint_every": 1,
        "progress": False,
    }
    settings.update(extra)
    return [f"{key}={value}" for key, value in settings.items()]


def config_for(out: Path, rms, **extra):
    from ppo.config import PPOConfig

    return load_config(PPOConfig, None, overrides(out, rms, **extra))


def run_ppo(out: Path, rms, **extra) -> Path:
    from ppo.train import run

    return run(config_for(out, rms, **extra))


def weights(out: Path) -> dict[str, torch.Tensor]:
    files = sorted((out / "model").glob("*.safetensors"))
    assert files, f"no weights in {out / 'model'}"
    merged = {}
    for file in files:
        merged.update(load_file(str(file)))
    return merged


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if atol == 0.0:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=1e-4, msg=key)


TRAIN_KEYS = ("rm_reward", "kl", "pg_loss", "vf_loss", "approx_kl", "clipfrac", "entropy", "response_length")


def metric_rows(out: Path) -> dict[int, dict]:
    rows = read_metrics(out)
    steps = [row["step"] for row in rows]
    assert len(steps) == len(set(steps)), f"duplicated steps in metrics.jsonl: {steps}"
    return {row["step"]: row for row in rows}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, rms):
    """An uninterrupted 3-iteration run that the resumed and the 2-process runs must match."""
    out = tmp_path_factory.mktemp("ppo_reference") / "ppo"
    run_ppo(out, rms)
    return out


# ------------------------------------------------------- rollout and rewards


def _rollout(config, models, tokenizer, n: int = 4):
    from core.generation import generate_batch
    from ppo.rollout import concat_chunks
    from toyworld.world import build_prompts

    prompts = build_prompts("train", n, 0)
    chunk = config.ppo.chunk_size
    chunks = [prompts[i:i + chunk] for i in range(0, n, chunk)]
    batches = [generate_batch(models.policy, tokenizer, [p["messages"] for p in c], config.sampling, seed=i) for i, c in enumerate(chunks)]
    return concat_chunks(batches, chunks, list(range(len(chunks))), chunk, tokenizer.pad_token_id)


def test_rollout_record_logprobs_and_score_placement(tmp_path, rms):
    from ppo.core import per_token_rewards
    from ppo.models import build_models
    from ppo.rollout import Rollout
    from ppo.train import rollout_forwards

    config = config_for(tmp_path / "ppo", rms, **{"sampling.max_new_tokens": 10, "ppo.chunk_size": 2})
    models, tokenizer = build_models(config, "cpu")
    rollout = _rollout(config, models, tokenizer)
    assert isinstance(rollout, Rollout) and len(rollout) == 4
    assert rollout.index.tolist() == [0, 1, 2, 3]
    assert rollout.query_ids.shape == rollout.query_mask.shape
    assert rollout.response_ids.shape == rollout.response_mask.shape
    logprobs, ref_logprobs, values, _ = rollout_forwards(models, rollout, 3, 1.0)
    rollout = rollout.with_(logprobs=logprobs, ref_logprobs=ref_logprobs, values=values)
    with pytest.raises(AttributeError):  # the record is immutable: each step returns a new one
        rollout.logprobs = logprobs

    # The log-probs of the left-padded batch are those of each sequence alone:
    # position ids follow the attention mask, as in `generate`.
    for row in range(len(rollout)):
        q = rollout.query_ids[row][rollout.query_mask[row].bool()]
        n_resp = int(rollout.response_mask[row].sum())
        r = rollout.response_ids[row, :n_resp]
        with torch.no_grad():
            logits = models.policy(input_ids=torch.cat([q, r])[None]).logits[0, len(q) - 1:-1]
        alone = torch.log_softmax(logits.float(), -1).gather(-1, r[:, None]).squeeze(-1)
        torch.testing.assert_close(rollout.logprobs[row, :n_resp], alone, atol=1e-4, rtol=1e-4)
    # At the start the policy is the reference: the KL is exactly 0.
    assert torch.equal(rollout.logprobs, rollout.ref_logprobs)

    # Score placement: -β·KL on every response token, the score on the last one only.
    rollout = rollout.with_(scores=torch.tensor([1.0, -2.0, 3.0, 0.5]),
                            logprobs=rollout.logprobs + 0.1 * rollout.response_mask)  # a known KL of 0.1 per token
    beta = 0.05
    rewards, kl = per_token_rewards(rollout.scores, rollout.logprobs, rollout.ref_logprobs, rollout.response_mask, beta)
    rollout = rollout.with_(rewards=rewards, kl=kl)
    for row in range(len(rollout)):
        n_resp = int(rollout.response_mask[row].sum())
        expected = torch.full((rollout.response_ids.shape[1],), 0.0)
        expected[:n_resp] = -beta * 0.1
        expected[n_resp - 1] += rollout.scores[row]
        torch.testing.assert_close(rollout.rewards[row], expected, atol=1e-6, rtol=0)

    # select() keeps rows aligned and trims unused padding.
    part = rollout.select(torch.tensor([1]))
    assert part.query_mask.all() and part.response_mask[0, -1] == 1
    assert part.texts == [rollout.texts[1]]


def test_lora_reference_is_the_adapters_off_base(tmp_path, rms):
    from core.models import load_causal_lm
    from ppo.models import build_models
    from ppo.rollout import model_inputs

    config = config_for(tmp_path / "ppo", rms, **{"model.memory": "lora", "model.lora.r": 4})
    models, tokenizer = build_models(config, "cpu")
    assert models.reference is None
    assert all(".policy." in n for n in models.policy_params)
    assert {n for n in models.critic_params if not n.startswith("head.")} and all(
        ".critic." in n or n.startswith("head.") for n in models.critic_params)
    rollout = _rollout(config, models, tokenizer)
    inputs = model_inputs(rollout.query_ids, rollout.query_mask, rollout.response_ids, rollout.response_mask)
    base = load_causal_lm("embedded:tiny-llama")
    with torch.no_grad():
        base_logits = base(input_ids=inputs[0], attention_mask=inputs[1], position_ids=inputs[2]).logits
        for name, p in models.policy_params.items():  # move the policy away from the base
            if "lora_B" in name:
                p.normal_(0, 0.5)
        reference = models.reference_logits(*inputs)
        policy = models.policy_logits(*inputs)
        values_before = models.values(*inputs)
        for name, p in models.critic_params.items():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        models.critic.head.weight.fill_(0.1)
        policy_after_critic_change = models.policy_logits(*inputs)
        values_after = models.values(*inputs)
    torch.testing.assert_close(reference, base_logits, atol=1e-5, rtol=1e-5)
    assert (policy - base_logits).abs().max() > 1e-2
    torch.testing.assert_close(policy_after_critic_change, policy)  # the critic adapter is not the policy's
    assert not torch.allclose(values_before, values_after)
    assert all(p.requires_grad for p in models.trainable())


def test_lora_run_saves_a_merged_policy(tmp_path, rms):
    out = tmp_path / "ppo"
    run_ppo(out, rms, **{"model.memory": "lora", "model.lora.r": 4, "iterations": 1, "optim.learning_rate": 1e-2})
    assert (out / "model" / "config.json").is_file()
    assert not (out / "model" / "adapter_config.json").exists()
    names = weights(out).keys()
    assert not any("lora" in n for n in names)
    row = metric_rows(out)[1]
    assert row["kl"] == pytest.approx(0.0, abs=1e-4)  # LoRA B starts at zero: the policy is the base
    assert read_manifest(out)["status"] == "completed"


# ----------------------------------------------------------------- NaN guard


@pytest.mark.parametrize("where", ["reward", "loss"])
def test_nan_raises_numeric_error_and_keeps_the_checkpoint(tmp_path, rms, monkeypatch, where):
    import ppo.train
    from reward.scorer import RewardScorer, ScoreBatch

    calls = {"n": 0}
    if where == "reward":
        original = RewardScorer.score

        def score(self, prompts, responses):
            calls["n"] += 1
            batch = original(self, prompts, responses)
            # calls 1-2: held-out eval before training, 3-4: iteration 1, 5: iteration 2
            return ScoreBatch(batch.raw, batch.prob * float("nan")) if calls["n"] >= 5 else batch

        monkeypatch.setattr(RewardScorer, "score", score)
    else:
        original = ppo.train.policy_loss

        def policy_loss(*args, **kwargs):
            calls["n"] += 1  # 4 calls per iteration (2 epochs x 2 minibatches); iteration 2 from call 5
            loss, stats = original(*args, **kwargs)
            return (loss * float("nan") if calls["n"] >= 5 else loss), stats

        monkeypatch.setattr(ppo.train, "policy_loss", policy_loss)

    out = tmp_path / "ppo"
    with pytest.raises(NumericError, match="iteration 2") as info:
        run_ppo(out, rms)
    assert ("RM score" if where == "reward" else "loss") in str(info.value)
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("iter-"))
    assert checkpoints == ["iter-000001"]
    state = json.loads((out / "checkpoints" / "iter-000001" / "state.json").read_text())
    assert state["iteration"] == 1
    assert read_manifest(out)["status"] == "failed"
    assert max(metric_rows(out)) == 1


# ---------------------------------------------------------------- resumption


def test_resumed_run_ends_with_the_same_weights(tmp_path, rms, reference_run):
    from ppo.train import RunInterrupted

    out = tmp_path / "ppo"
    with pytest.raises(RunInterrupted):
        run_ppo(out, rms, stop_after_iteration=1)
    assert read_manifest(out)["status"] == "failed"
    # A row past the checkpoint, as a run killed after logging would leave it.
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 2, "stage": "ppo", "rm_reward": 123.0}) + "\n")
    run_ppo(out, rms)
    assert read_manifest(out)["status"] == "completed"
    assert_same_weights(out, reference_run)
    ours, theirs = metric_rows(out), metric_rows(reference_run)
    assert sorted(ours) == [0, 1, 2, 3]
    for step in (2, 3):
        for key in TRAIN_KEYS:
            assert ours[step][key] == pytest.approx(theirs[step][key], rel=1e-6, abs=1e-7), (step, key)
    # A completed run is skipped.
    before = (out / "manifest.json").read_text()
    run_ppo(out, rms)
    assert (out / "manifest.json").read_text() == before


def test_killed_subprocess_resumes_to_the_same_weights(tmp_path, rms, reference_run):
    out = tmp_path / "ppo"
    proc = subprocess.Popen([sys.executable, "-m", "ppo", *overrides(out, rms)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "iter-000001" / "state.json").is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    run_ppo(out, rms)
    assert read_manifest(out)["status"] == "completed"
    assert_same_weights(out, reference_run)


# ------------------------------------------------------------- multi-process

# The multi-process runs: one minibatch of 4 per epoch, so each of 2 processes trains on
# 2 rows in 2 micro-batches of 1 (DDP's no_sync / FSDP2's accumulation on the first), and
# a held-out evaluation every iteration. The reward is a learnable one (shorter text is
# better, as in test_ppo_learns.py), so keep-best really moves: on this model it keeps
# iteration 2 of 3 (iteration 3 only ties it), so every process saves a best policy and
# loads it back at the end. At that lr (3e-2, Adam steps of 3e-2 a weight) summing the
# same gradients in another order moves the weights by up to 3e-4 by the end (measured:
# one process with micro-batches of 1 against 4), hence the tolerance of 2e-3: an error
# in how micro-batches or processes are weighted flips step signs (6e-2 a weight).
SHORT_TEXT = "def short_text(prompts, responses):\n    return [-len(r) / 10.0 for r in responses]\n"
ACCUMULATING_ATOL = 2e-3
ACCUMULATING = {"ppo.minibatch_size": 4, "ppo.micro_batch_size": 1, "eval.every": 1, "eval.n_prompts": 4,
                "optim.learning_rate": 3e-2, "sampling.temperature": 0.1, "eval.sampling.temperature": 0.1}


@pytest.fixture(scope="module")
def short_text_reward(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("ppo_reward") / "short_text.py"
    path.write_text(SHORT_TEXT)
    return {**ACCUMULATING, "reward.function": f"{path}:short_text"}


@pytest.fixture(scope="module")
def accumulating_run(tmp_path_factory, rms, short_text_reward):
    """The one-process run the 2-process runs must equal."""
    out = tmp_path_factory.mktemp("ppo_accumulating") / "ppo"
    run_ppo(out, rms, **short_text_reward)
    kept = json.loads((out / "eval.json").read_text())["policy_iteration"]
    assert 0 < kept < 3, f"keep-best kept iteration {kept}: these settings no longer make the runs load a best policy"
    return out


def launch(args: list[str], launcher: str = "torchrun", expect_success: bool = True, processes: int = 2) -> subprocess.CompletedProcess:
    """`python -m ppo ARGS` on CPU processes (2 by default): torchrun, or accelerate's launcher."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "ppo", *args]
    else:
        # `accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.16
        # (its simple launcher needs mpirun for more). `--multi_gpu` with ACCELERATE_USE_CPU
        # starts two gloo processes, which the tests check they got.
        env["ACCELERATE_USE_CPU"] = "true"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ppo", *args]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if expect_success:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def assert_same_steps_as_one_process(out: Path, reference_run: Path, share: float, atol: float) -> None:
    """A 2-process run took the one-process run's steps (weights within `atol`, the
    iteration metrics within 100 x atol relative), and each process held `share` of the
    policy's, critic's, reference's and reward models' parameters."""
    state = json.loads(next((out / "checkpoints").glob("iter-*/state.json")).read_text())
    assert state["num_processes"] == 2
    ours, theirs = metric_rows(out), metric_rows(reference_run)
    assert ours[0]["num_processes"] == 2 and theirs[0]["num_processes"] == 1
    for model in ("policy", "critic", "reference", "reward_models"):
        assert ours[0][f"param_share_{model}"] == pytest.approx(share, abs=1e-3), model
    assert sorted(ours) == sorted(theirs)
    for step in (1, 2, 3):
        for key in (*TRAIN_KEYS, "reward_mean"):
            if key in theirs[step]:  # rm_reward only under the gated reward
                assert ours[step][key] == pytest.approx(theirs[step][key], rel=100 * atol, abs=atol), (step, key)
    assert_same_weights(out, reference_run, atol=atol)
    trained, initial = weights(out), initial_weights()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained), "nothing trained"


def initial_weights() -> dict[str, torch.Tensor]:
    from core.models import load_causal_lm

    return {name: p.detach() for name, p in load_causal_lm("embedded:tiny-llama").state_dict().items()}


def assert_same_keep_best(out: Path, reference_run: Path) -> None:
    """Both runs evaluated every iteration with the same figures and kept the same policy."""
    ours, theirs = (json.loads((run / "eval.json").read_text()) for run in (out, reference_run))
    assert ours["policy_iteration"] == theirs["policy_iteration"]
    assert [e["iteration"] for e in ours["history"]] == [e["iteration"] for e in theirs["history"]] == [0, 1, 2, 3]
    for a, b in zip(ours["history"], theirs["history"]):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-3) and a["rm_reward"] == pytest.approx(b["rm_reward"], abs=1e-3)


def test_ddp_on_two_processes_takes_the_same_steps_as_one(tmp_path, rms, short_text_reward, accumulating_run):
    """distributed: ddp (the default) through `accelerate launch`: whole models, DDP averages
    gradients over each process's two micro-batches."""
    out = tmp_path / "ppo"
    launch(overrides(out, rms, distributed="ddp", **short_text_reward), launcher="accelerate")
    assert_same_steps_as_one_process(out, accumulating_run, share=1.0, atol=ACCUMULATING_ATOL)
    assert_same_keep_best(out, accumulating_run)


def test_fsdp2_on_two_processes_shards_resumes_and_takes_the_same_steps_as_one(tmp_path, rms, short_text_reward,
                                                                              accumulating_run):
    """distributed: fsdp2 under torchrun (the smoke config): each process holds half of
    every model; the run is stopped after iteration 1 and resumed from its sharded
    checkpoint (each process wrote and reads only its own shards); the weights, metrics
    and keep-best choice equal the one-process run's."""
    out = tmp_path / "ppo"
    args = ["--config", str(REPO / "configs" / "ppo" / "smoke.yaml"), *overrides(out, rms, distributed="fsdp2", **short_text_reward)]
    stopped = launch([*args, "stop_after_iteration=1"], expect_success=False)
    assert stopped.returncode != 0 and read_manifest(out)["status"] == "failed"
    checkpoint = out / "checkpoints" / "iter-000001"
    assert (checkpoint / "shards" / ".metadata").is_file() and len(list((checkpoint / "shards").glob("*.distcp"))) == 2
    assert not (checkpoint / "policy.safetensors").exists()  # no process wrote whole weights
    assert (out / "checkpoints" / "best" / "shards" / ".metadata").is_file()
    launch(args)
    assert read_manifest(out)["status"] == "completed"
    assert_same_steps_as_one_process(out, accumulating_run, share=0.5, atol=ACCUMULATING_ATOL)
    assert_same_keep_best(out, accumulating_run)


def test_fsdp2_on_one_torchrun_process_runs_the_sharded_paths(tmp_path, rms, reference_run):
    """`torchrun --nproc_per_node 1 ... distributed=fsdp2` (the GPU check's one-device run):
    the models become FSDP2 modules over a process group of one, checkpoints are sharded
    (DCP), and the steps are the plain one-process run's."""
    out = tmp_path / "ppo"
    launch(overrides(out, rms, distributed="fsdp2"), processes=1)
    assert (out / "checkpoints" / "iter-000003" / "shards" / ".metadata").is_file()
    assert metric_rows(out)[0]["num_processes"] == 1
    assert_same_weights(out, reference_run, atol=1e-5)


def test_a_checkpoint_resumes_only_in_its_own_layout(tmp_path, rms):
    """A sharded checkpoint cannot be read by a plain one-process run: the error says to
    relaunch under torchrun (the reverse, a whole checkpoint under a sharded launch, has
    its own error in ppo/checkpoint.py)."""
    import shutil

    from core.errors import ConfigError
    from ppo.train import RunInterrupted

    out = tmp_path / "ppo"
    with pytest.raises(RunInterrupted):
        run_ppo(out, rms, stop_after_iteration=1)
    checkpoint = out / "checkpoints" / "iter-000001"
    shutil.move(checkpoint / "policy.safetensors", tmp_path / "policy.safetensors")
    (checkpoint / "shards").mkdir()
    with pytest.raises(ConfigError, match="sharded checkpoint.*relaunch the same config under torchrun"):
        run_ppo(out, rms)


def test_an_earlier_bf16_stage_in_the_process_does_not_stop_ppo(tmp_path, rms, monkeypatch):
    """In a pipeline PPO runs in the process where a TRL fine-tune left accelerate's shared
    state in bf16 (the quickstart's rejection-sampling fine-tune): one process never goes
    through accelerator.prepare, so PPO runs. A launch asking for bf16 is refused."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from core.errors import ConfigError

    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh process, as a pipeline's
    try:
        Accelerator(mixed_precision="bf16", cpu=True)  # what the earlier stage leaves behind
        run_ppo(tmp_path / "ppo", rms, iterations=1)
        assert read_manifest(tmp_path / "ppo")["status"] == "completed"
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    with pytest.raises(ConfigError, match="launched with mixed_precision bf16"):
        run_ppo(tmp_path / "other", rms, iterations=1)


def test_distributed_keys_are_checked(tmp_path, rms):
    from core.distributed import check_launch
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="distributed: none runs one process"):
        check_launch("none", 2)
    check_launch("none", 1)
    with pytest.raises(ConfigError, match="generation_weights: sharded generates on FSDP2 shards"):
        config_for(tmp_path, rms, distributed="ddp", **{"model.generation_weights": "sharded"})
    with pytest.raises(ConfigError, match="eval.sampled: PPO's held-out evaluation .* is greedy only"):
        config_for(tmp_path, rms, **{"eval.sampled.samples_per_prompt": 2})


def test_lora_fsdp2_generating_on_shards_takes_the_same_steps_as_one(tmp_path, rms):
    """lora mode sharded: one base (policy and critic adapters, the reference) split over
    2 processes, the value head its own unit, generating on the shards
    (model.generation_weights: sharded: one layer gathered at a time at every token,
    `generate(synced_gpus=True)` keeping the processes' forwards in step); the merged
    policy equals one process's."""
    lora = {"model.memory": "lora", "model.lora.r": 4, "iterations": 2, "optim.learning_rate": 1e-2,
            "distributed": "fsdp2", "model.generation_weights": "sharded"}
    one = tmp_path / "one"
    run_ppo(one, rms, **lora)  # one process: nothing to shard
    two = tmp_path / "two"
    launch(overrides(two, rms, **lora))
    row = metric_rows(two)[0]
    assert row["num_processes"] == 2 and row["param_share_policy"] == pytest.approx(0.5, abs=1e-3)
    assert_same_weights(two, one, atol=1e-5)
    trained, initial = weights(two), initial_weights()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained), "nothing trained"


# ------------------------------------------------------------- early stopping


def test_early_stopping_keeps_the_best_policy(tmp_path, rms):
    out = tmp_path / "ppo"
    run_ppo(out, rms, **{"eval.every": 1, "eval.patience": 1, "iterations": 4, "optim.learning_rate": 3e-3})
    report = json.loads((out / "eval.json").read_text())
    history = report["history"]
    rewards = [entry["rm_reward"] for entry in history]
    chosen = next(entry for entry in history if entry["iteration"] == report["policy_iteration"])
    models = report["models"]  # the shared evaluation's layout, plus the model each row is
    assert {k: v for k, v in models["after"].items() if k != "model"} == chosen
    assert {k: v for k, v in models["before"].items() if k != "model"} == history[0]
    paired = report["paired"]["after"]["rm_reward"]
    assert paired["diff"] == pytest.approx(chosen["rm_reward"] - history[0]["rm_reward"])
    if chosen["iteration"] != 0:  # a later iteration is kept only beyond the noise of the start
        assert paired["diff"] > paired["diff_stderr"] and chosen["rm_reward"] > rewards[0]
    # patience 1: a run that ended before its last iteration stopped early
    if report["last_iteration"] < 4:
        assert report["stopped_early"]
    assert report["last_iteration"] == history[-1]["iteration"]
    assert max(metric_rows(out)) == report["last_iteration"]
    best_weights = load_file(str(out / "checkpoints" / "best" / "policy.safetensors"))
    saved = weights(out)
    for name in saved.keys() & best_weights.keys():
        assert torch.equal(saved[name], best_weights[name]), name


def test_keep_best_takes_a_later_iteration_only_beyond_the_paired_standard_error():
    from ppo.train import beats_the_best

    start = {"iteration": 0, "rm_reward": 0.5, "columns": {"rm_reward": [0.4, 0.5, 0.6, 0.5]}}
    state = {"evals": [start], "best_reward": None}
    assert beats_the_best(start, state, "rm_reward")  # the start is always the first choice
    state["best_reward"] = 0.5
    # diffs 0.1, 0.1, 0.1, 0.1: mean 0.1, stderr 0 -> kept
    clear = {"rm_reward": 0.6, "columns": {"rm_reward": [0.5, 0.6, 0.7, 0.6]}}
    assert beats_the_best(clear, state, "rm_reward")
    # diffs +0.3, -0.2, +0.3, -0.2: mean 0.05, stderr 0.144 -> a higher mean, but noise: not kept
    noisy = {"rm_reward": 0.55, "columns": {"rm_reward": [0.7, 0.3, 0.9, 0.3]}}
    assert not beats_the_best(noisy, state, "rm_reward")
    assert not beats_the_best({"rm_reward": 0.5, "columns": clear["columns"]}, state, "rm_reward")  # not above the best


def test_scores_are_whitened_per_reward_model_by_hand():
    """ppo.score_whitening_groups: reward_model whitens the helpfulness RM's logits and
    the safety RM's apart, so a safety logit of 14 next to 10 does not drown a
    helpfulness 1 next to 0 (by hand: mean 0.5, unbiased std 0.7071; mean 12, std 2.828)."""
    from ppo.train import main_statistics, whiten_scores

    raw = torch.tensor([0.0, 10.0, 1.0, 14.0])
    groups = ["helpfulness", "safety", "helpfulness", "safety"]
    s = 1 / math.sqrt(2)
    for method in ("batch", "running"):
        out, stats = whiten_scores(method, {}, raw, groups, raw, groups)
        assert out.tolist() == pytest.approx([-s, -s, s, s], abs=1e-6), method
        assert (stats["helpfulness"]["mean"], stats["helpfulness"]["std"]) == pytest.approx((0.5, s))
        assert (stats["safety"]["mean"], stats["safety"]["std"]) == pytest.approx((12.0, 2 * math.sqrt(2)))
        assert main_statistics(stats, raw) == pytest.approx((0.5, s))  # what an RM-initialised critic is re-scaled by
    together, _ = whiten_scores("batch", {}, raw, ["all"] * 4, raw, ["all"] * 4)
    assert together[2] - together[0] == pytest.approx(1 / 6.8496, abs=1e-4)  # std of all four: sqrt(140.75 / 3)
    # running: a second batch is whitened by both batches' statistics, group by group
    moments = {}
    whiten_scores("running", moments, raw, groups, raw, groups)
    out, stats = whiten_scores("running", moments, torch.tensor([2.0, 12.0]), ["helpfulness", "safety"],
                               torch.tensor([2.0, 12.0]), ["helpfulness", "safety"])
    assert moments["helpfulness"].count == 3 and (stats["helpfulness"]["mean"], stats["helpfulness"]["std"]) == pytest.approx((1.0, 1.0))
    assert stats["helpfulness"]["batch_mean"] == 2.0 and stats["helpfulness"]["n"] == 1
    assert out[0].item() == pytest.approx(1.0, abs=1e-6)  # (2 - 1) / 1, scores 0, 1, 2 so far
    # one safety score in the first batch: no spread of its own, whitened to 0 (not with
    # the helpfulness scores' statistics, which would put a logit of 9 at +11 std)
    raw1, groups1 = torch.tensor([0.0, 1.0, 9.0]), ["helpfulness", "helpfulness", "safety"]
    for method in ("batch", "running"):
        out, stats = whiten_scores(method, {}, raw1, groups1, raw1, groups1)
        assert out.tolist() == pytest.approx([-s, s, 0.0], abs=1e-6) and math.isnan(stats["safety"]["std"])
    # no helpfulness group with a spread: the critic is re-scaled by the whole batch's statistics
    only_safety = {"safety": {"mean": 9.0, "std": math.nan, "batch_mean": 9.0, "n": 1}}
    assert main_statistics(only_safety, torch.tensor([9.0, 11.0])) == pytest.approx((10.0, math.sqrt(2)))
    # none: the scores as they are
    out, _ = whiten_scores("none", {}, raw, groups, raw, groups)
    assert torch.equal(out, raw)


def test_resuming_with_another_config_is_refused(tmp_path, rms):
    from core.errors import RLHFError
    from ppo.train import RunInterrupted

    out = tmp_path / "ppo"
    with pytest.raises(RunInterrupted):
        run_ppo(out, rms, stop_after_iteration=1, iterations=2)
    with pytest.raises(RLHFError, match="optim"):
        run_ppo(out, rms, **{"optim.learning_rate": 5e-4, "iterations": 2})


# ------------------------------------------- reward kinds, penalties, critic, KL


def test_reward_section_keys_and_errors(tmp_path, rms):
    from core.errors import ConfigError

    config = config_for(tmp_path, rms)
    assert (config.reward.kind, config.reward.function) == ("gated", None)
    assert config.model.critic_init == "policy" and config.ppo.missing_eos_penalty == 1.0 and config.ppo.kl_target is None
    assert config_for(tmp_path, rms, **{"reward.function": "mod:fn"}).reward.kind == "function"  # implied
    assert config_for(tmp_path, rms, **{"reward.kind": "safety"}).reward.kind == "safety"
    assert config_for(tmp_path, rms, **{"ppo.value_clip": "null"}).ppo.value_clip is None
    assert config_for(tmp_path, rms, **{"ppo.missing_eos_penalty": "null"}).ppo.missing_eos_penalty is None
    for extra, message in [
        ({"reward.kind": "function"}, "reward.kind: function needs reward.function"),
        ({"reward.kind": "gated", "reward.function": "mod:fn"}, "reward.function is set but reward.kind is gated"),
        ({"reward.function": "no_colon"}, "reward.function: expected"),
        ({"reward.kind": "function", "reward.function": "mod:fn", "model.critic_init": "helpfulness_rm"}, "set critic_init: policy"),
        ({"reward.helpfulness_model": "x"}, "'reward.helpfulness_model' is now 'reward_models.helpfulness'"),
        ({"reward.kind": "both"}, "reward.kind"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_for(tmp_path, rms, **extra)


def test_reward_function_loading_and_checks(tmp_path):
    from core.errors import ConfigError, NumericError, RLHFError
    from ppo.config import RewardSection
    from ppo.rewards import TrainingReward, load_reward_function

    assert load_reward_function("ppo.core:logit").__name__ == "logit"
    (tmp_path / "rewards.py").write_text(
        "def length(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
        "def short(prompts, responses):\n    return [1.0]\n"
        "def nan(prompts, responses):\n    return [float('nan')] * len(responses)\n"
        "NOT_CALLABLE = 3\n")
    for spec, message in [(f"{tmp_path}/rewards.py:missing", "has no attribute"), (f"{tmp_path}/rewards.py:NOT_CALLABLE", "not callable"),
                          ("no_such_module_xyz:f", "cannot import module"), (f"{tmp_path}/nope.py:f", "is not a file")]:
        with pytest.raises(ConfigError, match=f"reward.function: .*{message}"):
            load_reward_function(spec)
    prompts = [{"messages": [{"role": "user", "content": "hi"}]}] * 2
    batch = TrainingReward(RewardSection(function=f"{tmp_path}/rewards.py:length"))(prompts, ["ab", "abcd"], "here")
    assert batch.raw.tolist() == [2.0, 4.0] and batch.score.tolist() == [2.0, 4.0] and batch.rm_reward is None  # no LOGIT
    with pytest.raises(RLHFError, match="returned 1 values for 2 responses"):
        TrainingReward(RewardSection(function=f"{tmp_path}/rewards.py:short"))(prompts, ["a", "b"], "here")
    with pytest.raises(NumericError, match="non-finite reward from reward.function at here"):
        TrainingReward(RewardSection(function=f"{tmp_path}/rewards.py:nan"))(prompts, ["a", "b"], "here")


def test_one_rm_kinds_use_that_rms_probability(rms):
    from ppo.config import RewardSection
    from ppo.core import logit
    from ppo.rewards import TrainingReward
    from reward.gated import GatedScorer, RewardModelsSection

    scorer = GatedScorer(RewardModelsSection(helpfulness=str(rms[0]), safety=str(rms[1])))
    prompts = [{"messages": [{"role": "user", "content": "hi"}], "category": "helpfulness"}] * 2
    scores = scorer.score(prompts, ["hello", "bye"])
    for kind, expected in (("gated", scores.reward), ("helpfulness", scores.helpfulness_prob), ("safety", scores.safety_prob)):
        batch = TrainingReward(RewardSection(kind=kind), scorer)(prompts, ["hello", "bye"], "here")
        torch.testing.assert_close(batch.raw, expected.float())
        torch.testing.assert_close(batch.score, logit(expected.float()))
        torch.testing.assert_close(batch.rm_reward, scores.reward.float())


def test_iteration_metrics_and_missing_eos_penalty(reference_run, tmp_path, rms):
    rows = metric_rows(reference_run)
    for step in (1, 2, 3):
        row = rows[step]
        assert row["reward_mean"] == pytest.approx(row["rm_reward"])  # the gated reward's raw value is R_c
        assert row["truncation_rate"] == 1.0  # the random tiny model never ends a 6-token answer
        assert row["beta"] == 0.01 and row["critic_lr"] == row["lr"] == 1e-3
    # iteration 1 whitens each RM's scores by their own statistics: running moments of one
    # batch are that batch's mean, per group
    first = rows[1]
    groups = [g for g in ("helpfulness", "safety") if first.get(f"n_{g}", 0) >= 2]
    assert groups, first
    for group in groups:
        assert first[f"whiten_mean_{group}"] == pytest.approx(first[f"score_logit_{group}"], abs=1e-5), group
    assert sum(first.get(f"n_{g}", 0) for g in ("helpfulness", "safety")) == 4  # every answer of the batch (4) in one group
    # all scores whitened together (one mean, one std for the batch): every response
    # truncated, so the batch's whitened score is (logit - mean) / std minus the penalty of 1
    out = tmp_path / "together"
    run_ppo(out, rms, **{"iterations": 1, "ppo.score_whitening_groups": "all"})
    row = metric_rows(out)[1]
    assert "whiten_mean_safety" not in row
    assert row["score_whitened"] == pytest.approx((row["score_logit"] - row["whiten_mean"]) / row["whiten_std"] - 1.0, abs=1e-5)


def test_adaptive_kl_lora_run_and_critic_learning_rate(tmp_path, rms):
    out = tmp_path / "ppo"
    run_ppo(out, rms, **{"model.memory": "lora", "model.lora.r": 4, "iterations": 1, "ppo.kl_target": 1.0,
                         "ppo.kl_horizon": 10, "optim.critic_learning_rate": 5e-3})
    row = metric_rows(out)[1]
    assert row["beta"] == 0.01 and row["critic_lr"] == 5e-3
    state = json.loads((out / "checkpoints" / "iter-000001" / "state.json").read_text())
    # KL is 0 at iteration 1 (LoRA B starts at 0): e = clip(0 / 1 - 1) = -0.2; β = 0.01 · (1 - 0.2 · 4 / 10) = 0.0092
    assert row["kl"] == pytest.approx(0.0, abs=1e-4)
    assert state["beta"] == pytest.approx(0.0092)


def test_critic_from_the_rm_is_rescaled_to_the_whitened_scores(tmp_path, rms, monkeypatch):
    from ppo.models import Critic, _critic_from_rm
    from reward.scorer import RewardScorer, encode_conversation

    # Before the re-scale the critic's value at the last position is the RM's score.
    critic = _critic_from_rm(str(rms[0]), torch.float32, "cpu")
    scorer = RewardScorer(str(rms[0]))
    prompt = [{"role": "user", "content": "hi"}]
    raw = scorer.score([prompt], ["hello there"]).raw
    ids = torch.tensor([encode_conversation(scorer.tokenizer, prompt, "hello there")])
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        values = critic(ids, mask, positions)
        torch.testing.assert_close(values[0, -1], raw[0], atol=1e-4, rtol=1e-4)
        critic.rescale_(0.5, 2.0)  # value <- (value - mean) / std
        torch.testing.assert_close(critic(ids, mask, positions), (values - 0.5) / 2.0, atol=1e-5, rtol=1e-5)

    # The loop re-scales it once, at iteration 1, with that iteration's whitening statistics.
    calls = []
    original = Critic.rescale_
    monkeypatch.setattr(Critic, "rescale_", lambda self, mean, std: (calls.append((mean, std)), original(self, mean, std)))
    out = tmp_path / "ppo"
    run_ppo(out, rms, **{"model.critic_init": "helpfulness_rm", "iterations": 1})
    rows = metric_rows(out)
    assert calls == [(rows[1]["whiten_mean"], pytest.approx(math.sqrt(rows[1]["whiten_std"] ** 2 + 1e-8)))]


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(tmp_path, rms):
    """model.gradient_checkpointing: every decoder layer of the policy and the critic runs
    through the checkpoint function in a training forward (not in a no-grad one), and the
    gradients equal those without checkpointing."""
    from types import SimpleNamespace

    from ppo.models import build_models, prepare_distributed
    from ppo.rollout import model_inputs

    one_process = SimpleNamespace(num_processes=1)
    gradients, calls = {}, []
    for checkpointing in (False, True):
        config = config_for(tmp_path / "ppo", rms, **{"model.gradient_checkpointing": checkpointing})
        models, tokenizer = build_models(config, "cpu")
        prepare_distributed(models, one_process, "none")
        for layer in models.checkpointed_layers:
            inner = layer._gradient_checkpointing_func

            def counted(*args, _inner=inner, **kwargs):
                calls.append(1)
                return _inner(*args, **kwargs)

            layer._gradient_checkpointing_func = counted
        rollout = _rollout(config, models, tokenizer)
        inputs = model_inputs(rollout.query_ids, rollout.query_mask, rollout.response_ids, rollout.response_mask)
        with torch.no_grad():
            models.train_forward(*inputs)
        assert not calls, "no recomputation without gradients"
        logits, values = models.train_forward(*inputs)
        (logits.float().logsumexp(-1).mean() + values.mean()).backward()
        gradients[checkpointing] = {n: p.grad.clone() for n, p in [*models.policy_params.items(), *models.critic_params.items()]}
        if checkpointing:
            n_layers = len(models.policy.model.layers)
            assert len(models.checkpointed_layers) == 2 * n_layers and len(calls) == 2 * n_layers
            assert not any(layer.training for layer in models.checkpointed_layers)
    for name, grad in gradients[False].items():
        torch.testing.assert_close(gradients[True][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_the_score_keeps_calibrated_logits_apart():
    """A calibrated gate puts clearly safe answers at logits near 20: LOGIT in float64 with
    a 1e-12 clamp gives them back (15 and 20), where float32 and a 1e-6 clamp gave 13.8 twice."""
    from types import SimpleNamespace

    from ppo.config import RewardSection
    from ppo.rewards import TrainingReward

    probability = torch.sigmoid(torch.tensor([15.0, 20.0, -3.0], dtype=torch.float64))
    from_safety = torch.tensor([True, True, False])
    fake = SimpleNamespace(score=lambda prompts, responses, where: SimpleNamespace(
        reward=probability, helpfulness_prob=probability, safety_prob=probability, from_safety=from_safety))
    batch = TrainingReward(RewardSection(), fake)([{}] * 3, ["a", "b", "c"], "a test")
    torch.testing.assert_close(batch.score, torch.tensor([15.0, 20.0, -3.0]), atol=1e-4, rtol=0)
    assert batch.raw.dtype == torch.float32
    assert batch.from_safety.tolist() == [True, True, False]  # which RM gave R_c: its whitening group


def test_lora_with_gradient_checkpointing_is_refused(tmp_path, rms):
    with pytest.raises(Exception, match="critic's LoRA gradients would be wrong"):
        config_for(tmp_path / "ppo", rms, **{"model.memory": "lora", "model.gradient_checkpointing": True})


@pytest.mark.slow  # three runs, two of them under torchrun: 75 s on the 2-core CPU
def test_fsdp2_training_only_the_top_layer_resumes_and_takes_the_same_steps_as_one(tmp_path, rms):
    """model.trainable_layers under FSDP2 on 2 processes: each layer's shard mixes frozen
    and trained parameters in one FSDP unit; the run is stopped after iteration 1 and
    resumed from its sharded checkpoint; the final policy equals one process's, and
    everything below the top layer is still the start's."""
    from core.models import load_causal_lm

    top = {"model.trainable_layers": 1, "iterations": 2, "optim.learning_rate": 1e-2, "distributed": "fsdp2"}
    one = tmp_path / "one"
    run_ppo(one, rms, **top)
    two = tmp_path / "two"
    stopped = launch([*overrides(two, rms, **top), "stop_after_iteration=1"], expect_success=False)
    assert stopped.returncode != 0 and (two / "checkpoints" / "iter-000001" / "shards" / ".metadata").is_file()
    launch(overrides(two, rms, **top))
    assert read_manifest(two)["status"] == "completed"
    assert metric_rows(two)[0]["num_processes"] == 2
    assert_same_weights(two, one, atol=1e-5)
    start, final = load_causal_lm("embedded:tiny-llama").state_dict(), weights(two)
    for name, tensor in final.items():
        if name.startswith(("model.embed_tokens.", "model.layers.0.")):
            assert torch.equal(tensor, start[name]), f"{name} is below the trained layer but changed"
    assert not torch.equal(final["model.layers.1.mlp.down_proj.weight"], start["model.layers.1.mlp.down_proj.weight"])
