"""Rejection sampling end to end on the tiny model: shards, resume after a kill, pool, curve, SFT, eval."""

import json
from pathlib import Path

import pytest

from core.config import load_config
from core.io import read_jsonl, write_jsonl
from rejection_sampling.config import RSConfig
from rejection_sampling.sample import read_samples, run, shard_seed

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "rs" / "smoke.yaml"


def _make_rm(folder: Path, seed: int) -> Path:
    """A random one-output reward model with the tiny-llama body, saved with its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from core.models import load_tokenizer, resolve_model_path

    source = resolve_model_path("embedded:tiny-llama")
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    with torch.no_grad():  # a head large enough that the two RMs disagree visibly
        model.score.weight.normal_(0, 1.0)
    model.config.pad_token_id = model.config.pad_token_id or 0
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(str(source)).save_pretrained(folder)
    return folder


def _make_policy(folder: Path, eos_weight: float = 30.0) -> Path:
    """The tiny-llama with an end-of-turn logit that fires often (~5 of 6 samples of 6
    tokens finish, the rest are cut at max_new_tokens), so that a run holds both
    finished samples (targets) and truncated ones (never targets)."""
    import torch
    from transformers import AutoModelForCausalLM

    from core.models import load_tokenizer, resolve_model_path

    source = resolve_model_path("embedded:tiny-llama")
    tokenizer = load_tokenizer(str(source))
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        row = model.lm_head.weight[tokenizer.eos_token_id]
        row.zero_()
        row[0] = eos_weight
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core box two spinning threads per process run the
    tiny model ~10x slower than one (measured: 6-10 s against 0.6 s for one batch)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms")
    return _make_rm(root / "helpful", 1), _make_rm(root / "safety", 2), _make_policy(root / "policy")


def _config(rms, out, *overrides):
    helpful, safety, policy = rms
    return load_config(RSConfig, SMOKE, [
        f"reward_models.helpfulness={helpful}", f"reward_models.safety={safety}", f"policy={policy}", f"output_dir={out}",
        "prompts.n=6", "k=3", "shard_size=2", "max_new_tokens=6", *overrides])


NO_FT = ("finetune_enabled=false", "eval.enabled=false")


@pytest.fixture(scope="module")
def first_run(rms, tmp_path_factory):
    """One uninterrupted iteration-1 run (6 prompts x K=3 in 3 shards), shared by the tests."""
    out = tmp_path_factory.mktemp("first") / "rs"
    run(_config(rms, out, *NO_FT))
    return out


def _shards(out):
    return {p.name: p.read_text() for p in sorted((Path(out) / "samples").glob("shard-*.jsonl"))}


class Killed(Exception):
    pass


def test_killed_sampling_resumes_to_the_same_samples_and_samples_nothing_twice(rms, first_run, tmp_path):
    no_ft = NO_FT
    whole = first_run

    killed = tmp_path / "killed"

    def kill_after_two_shards(index):
        if index == 1:
            raise Killed("simulated kill after 2 shards")

    with pytest.raises(Killed):
        run(_config(rms, killed, *no_ft), after_shard=kill_after_two_shards)
    assert sorted(_shards(killed)) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert json.loads((killed / "manifest.json").read_text())["status"] == "failed"
    mtimes = {p.name: p.stat().st_mtime_ns for p in (killed / "samples").glob("shard-*.jsonl")}

    assert run(_config(rms, killed, *no_ft)) == rms[2]  # resume; no fine-tune: the policy is the result
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["shards_sampled_now"] == 1  # only the missing shard was sampled
    assert {p.name: p.stat().st_mtime_ns for p in (killed / "samples").glob("shard-0000[01].jsonl")} == mtimes
    assert _shards(killed) == _shards(whole)  # byte for byte
    assert (killed / "best.jsonl").read_text() == (whole / "best.jsonl").read_text().replace(str(whole), str(killed))


def test_samples_carry_scores_and_provenance(first_run):
    out = first_run
    rows = read_samples(out)
    assert len(rows) == 6 * 3
    for row in rows:
        assert row["iteration"] == 1 and row["temperature"] == 1.0
        assert row["seed"] == shard_seed(0, 1, row["shard"])
        for key in ("helpful_raw", "helpful_prob", "safety_raw", "safety_prob", "reward"):
            assert isinstance(row[key], float)
        gated = row["category"] == "safety" or row["safety_prob"] < 0.15  # Llama 2's gate
        assert row["reward"] == pytest.approx(row["safety_prob"] if gated else row["helpful_prob"])
        assert row["reward_from"] == ("safety" if gated else "helpfulness")
    curve = json.loads((out / "curve.json").read_text())["curve"]
    assert [p["k"] for p in curve] == [1, 2, 3]
    assert (out / "curve.png").stat().st_size > 1000
    best = read_jsonl(out / "best.jsonl")
    for row in best:
        assert row["messages"][-1]["role"] == "assistant" and row["iteration"] == 1
        assert row["source"].endswith(".jsonl")


def test_truncated_samples_are_never_targets_and_are_counted(first_run):
    rows = read_samples(first_run)
    assert all(isinstance(row["finished"], bool) for row in rows)
    truncated = [row for row in rows if not row["finished"]]
    assert truncated and len(truncated) < len(rows)  # the fixture policy gives both kinds
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    eligible = {pid for pid, group in by_prompt.items() if any(r["finished"] and r["response"].strip() for r in group)}
    best = {row["id"]: row for row in read_jsonl(first_run / "best.jsonl")}
    assert set(best) == eligible
    finished = {(r["prompt_id"], r["sample_index"]): r for r in rows if r["finished"]}
    for pid, row in best.items():  # the best finished sample, even where a truncated one scored higher
        chosen = finished[(pid, row["sample_index"])]
        assert chosen["response"] == row["messages"][-1]["content"]
        assert row["reward"] == max(r["reward"] for r in by_prompt[pid] if r["finished"] and r["response"].strip())
    pool = json.loads((first_run / "manifest.json").read_text())["pool"]
    assert pool["n_truncated"] == len(truncated)
    assert pool["current"]["n_prompts_all_truncated"] == sum(all(not r["finished"] for r in g) for g in by_prompt.values())
    assert pool["current"]["n_prompts_without_target"] == 6 - len(eligible)
    metrics = [json.loads(line) for line in (first_run / "metrics.jsonl").read_text().splitlines()]
    assert sum(m.get("truncated_responses", 0) for m in metrics) == len(truncated)


def test_pool_keeps_an_earlier_iterations_better_answer(rms, first_run, tmp_path):
    # Iteration 2 samples fresh; an earlier iteration's folder holds, for one prompt,
    # an answer with a reward no fresh sample can beat (1.0) and, for another, one
    # no fresh sample can lose to (0.0). Without re-scoring the pool must keep the
    # first and drop the second.
    v1 = read_samples(first_run)
    target, loser = v1[0]["prompt_id"], v1[-1]["prompt_id"]
    fake = []
    for row in v1:
        row = dict(row, iteration=1)
        row.pop("source")
        if row["prompt_id"] == target:
            row["reward"] = 1.0 if row["sample_index"] == 0 else 0.0
            if row["sample_index"] == 0:
                row["response"] = "the earlier, better answer"
        if row["prompt_id"] == loser:
            row["reward"] = 0.0
        fake.append(row)
    earlier = tmp_path / "earlier"
    write_jsonl(earlier / "samples" / "shard-00000.jsonl", fake)

    out = tmp_path / "v2"
    run(_config(rms, out, "finetune_enabled=false", "eval.enabled=false", "iteration=2",
                "rescore_pool=false", f"pool_dirs=[{earlier}]"))
    best = {row["id"]: row for row in read_jsonl(out / "best.jsonl")}
    assert best[target]["iteration"] == 1
    assert best[target]["messages"][-1]["content"] == "the earlier, better answer"
    assert best[loser]["iteration"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pool"]["n_pooled_samples"] == 2 * 6 * 3
    assert manifest["inputs"]["pool_0"]["sha256"]  # the pool is a hashed input


def test_pool_is_rescored_with_the_current_reward_models(rms, first_run, tmp_path):
    earlier = tmp_path / "earlier"
    first = first_run
    rows = [dict(r, iteration=1, rm_id="older-rms", reward=1.0) for r in read_samples(first)]
    for r in rows:
        r.pop("source")
    write_jsonl(earlier / "samples" / "shard-00000.jsonl", rows)
    out = tmp_path / "v2"
    run(_config(rms, out, "finetune_enabled=false", "eval.enabled=false", "iteration=2", f"pool_dirs=[{earlier}]"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pool"]["n_rescored"] == len(rows)
    # re-scored with the same RMs, the stale 1.0s are replaced by the true scores, so
    # iteration 1 no longer wins everything, and its winners carry their real reward
    true = {(r["prompt_id"], r["sample_index"]): r["reward"] for r in read_samples(first)}
    best = read_jsonl(out / "best.jsonl")
    for row in best:
        if row["iteration"] == 1:
            assert row["original_reward"] == 1.0
            assert row["reward"] == pytest.approx(true[(row["id"], row["sample_index"])], abs=1e-6)
    assert any(row["iteration"] == 2 for row in best) or all(r < 1.0 for r in true.values())


def test_changed_settings_refuse_to_mix_with_existing_shards(rms, tmp_path):
    import shutil

    from core.errors import ConfigError

    out = tmp_path / "rs"
    (out / "samples").mkdir(parents=True)
    run(_config(rms, out, *NO_FT, "prompts.n=1", "k=2"))
    with pytest.raises(ConfigError, match="temperature"):
        run(_config(rms, out, *NO_FT, "prompts.n=1", "k=2", "temperature=0.5"))
    shutil.rmtree(out / "samples")  # as the error message says: a fresh samples folder is accepted
    run(_config(rms, out, *NO_FT, "prompts.n=1", "k=2", "temperature=0.5"))


def test_smoke_preset_end_to_end_through_the_cli(rms, tmp_path):
    from rejection_sampling.cli import main

    out = tmp_path / "rs"
    helpful, safety, policy = rms
    args = ["--config", str(SMOKE), f"reward_models.helpfulness={helpful}", f"reward_models.safety={safety}", f"policy={policy}", f"output_dir={out}",
            "prompts.n=8", "k=2", "eval.n_prompts=4", "replay.n=3", "dtype=bfloat16"]
    assert main(args) == 0
    for name in ("best.jsonl", "curve.json", "curve.png", "eval.json", "model/config.json", "sft/manifest.json",
                 "config.yaml", "metrics.jsonl"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert set(manifest["outputs"]) >= {"samples", "best", "curve", "model", "eval"}
    result = json.loads((out / "eval.json").read_text())
    assert result["models"]["before"]["n_prompts"] == result["models"]["after"]["n_prompts"] == result["prompts"]["n"]
    assert result["dtype"] == "float32"  # sampled in bf16, evaluated in float32 (bf16 rounding hides a fine-tune's update)
    # the shared evaluation: RM reward and win rate against the policy, gold for toyworld prompts
    paired = result["paired"]["after"]
    assert {"rm_reward", "gold_combined", "refusal_rate", "rm_win_rate"} <= set(paired)
    assert "diff_stderr" in paired["gold_combined"]
    assert "chosen" in result["samples_gold"]
    agreement = result["samples_gold"]["agreement"]  # the RMs' within-prompt ranking against gold, by kind
    assert all(0.0 <= tally["rate"] <= 1.0 and tally["pairs"] > 0 for tally in agreement.values())
    assert agreement["all"]["pairs"] == sum(tally["pairs"] for kind, tally in agreement.items() if kind != "all")
    assert f"name: {policy}" in (out / "sft" / "config.yaml").read_text()  # init_model null: the policy
    # the fine-tune learned the 8 pooled targets and 3 replayed SFT demonstrations
    targets = read_jsonl(out / "best.jsonl")
    trained = read_jsonl(out / "finetune_data.jsonl")
    assert len(targets) == 8 and trained[:8] == targets and len(trained) == 11
    assert all(row["id"].startswith("replay-") for row in trained[8:])
    # the greedy check: the policy's greedy answer to each sampled prompt, gold-judged against the pick
    greedy = read_jsonl(out / "greedy.jsonl")
    assert sorted(row["prompt_id"] for row in greedy) == sorted(row["id"] for row in targets)
    versus = result["samples_gold"]["greedy"]
    assert versus["greedy"] == pytest.approx(sum(row["gold"] for row in greedy) / len(greedy))
    assert versus["diff"] == pytest.approx(versus["chosen"] - versus["greedy"])
    assert json.loads((out / "sft" / "data_report.json").read_text())["n_rows"] == 11
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert main(args) == 0  # complete: skipped
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    assert main(args + ["no_such_key=1"]) == 2


def test_plot_cli(rms, tmp_path):
    from rejection_sampling.plot import main

    (tmp_path / "curve.json").write_text(json.dumps({"curve": [{"k": 1, "max": 0.5, "median": 0.5},
                                                               {"k": 2, "max": 0.7, "median": 0.5}]}))
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert main([str(tmp_path / "missing")]) == 2


def test_config_init_model_and_strictness():
    from core.errors import ConfigError

    rms = {"helpfulness": "rm_h", "safety": "rm_s"}
    assert RSConfig(policy="a", reward_models=rms).start_model == "a"
    assert RSConfig(policy="a", init_model="b", reward_models=rms).start_model == "b"
    with pytest.raises(ConfigError, match="needs reward_models.helpfulness and reward_models.safety"):
        load_config(RSConfig, None, ["policy=a"])
    # the old per-stage spellings fail with the shared key's name
    with pytest.raises(ConfigError, match="'helpful_rm' is now 'reward_models.helpfulness'.*'rm_dtype' is now 'reward_models.dtype'"):
        load_config(RSConfig, SMOKE, ["helpful_rm=x", "rm_dtype=bfloat16"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(RSConfig, SMOKE, ["temperature=0"])  # greedy would give K copies
    with pytest.raises(ConfigError, match="unknown key 'kk'"):
        load_config(RSConfig, SMOKE, ["kk=3"])
    with pytest.raises(ConfigError, match="finetune.epochs"):
        load_config(RSConfig, SMOKE, ["finetune.epochs=two"])


def test_finetune_learns_only_the_last_assistant_turn_token_by_token(tmp_path):
    """A 2-turn RS target (user, assistant, user, the sampled answer) and a 2-turn replayed
    demonstration (split into one row per answer), through the SFT config the RS
    fine-tune uses: labels are -100 everywhere but the last answer and its end-of-turn token."""
    from core.chat import IGNORE_INDEX, render
    from core.models import load_tokenizer
    from rejection_sampling.core import last_turn_rows
    from rejection_sampling.sample import best_record, finetune_sft_config
    from sft.data import build_sft_dataset

    prompt = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
              {"role": "user", "content": "Another one?"}]
    target = best_record({"prompt_id": "p", "messages": prompt, "response": "Green.", "reward": 0.5, "iteration": 1,
                          "sample_index": 0})
    demo = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Again."}, {"role": "assistant", "content": "Hello!"}]
    rows = [target, *({"messages": m, "id": f"replay-{i}"} for i, m in enumerate(last_turn_rows(demo)))]
    write_jsonl(tmp_path / "data.jsonl", rows)
    config = load_config(RSConfig, SMOKE, ["reward_models.helpfulness=h", "reward_models.safety=s"])
    sft_config = finetune_sft_config(config, tmp_path / "data.jsonl", tmp_path / "sft")
    assert sft_config.data.learn == "last"
    tokenizer = load_tokenizer("embedded:tiny-llama")
    examples, report = build_sft_dataset(sft_config, tokenizer)
    assert report.n_kept == 3
    for example, row in zip(examples, rows):
        messages = row["messages"]
        context = tokenizer(render(tokenizer, messages[:-1], add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        ids, labels = example["input_ids"], example["labels"]
        assert ids[:len(context)] == context  # the prompt (earlier answers included) is a prefix ...
        assert labels[:len(context)] == [IGNORE_INDEX] * len(context)  # ... and learns nothing
        answer = ids[len(context):]
        end = answer.index(tokenizer.eos_token_id) + 1
        assert labels[len(context):len(context) + end] == answer[:end]  # every answer token, its end-of-turn one too
        assert labels[len(context) + end:] == [IGNORE_INDEX] * (len(answer) - end)  # the template's newline after it
        answer = answer[:end]
        assert tokenizer.decode([t for t in answer if t != tokenizer.eos_token_id]).strip().startswith(messages[-1]["content"])
    # the first assistant turn of the target ("Blue.") is in the input but not learned
    blue = tokenizer("Blue.", add_special_tokens=False)["input_ids"]
    learned = [t for t in examples[0]["labels"] if t != IGNORE_INDEX]
    assert not any(learned[i:i + len(blue)] == blue for i in range(len(learned)))


def test_control_arms_temperature_probe_and_held_back_replay(rms, tmp_path):
    """One run with both control arms, a temperature grid and replay that excludes a
    demonstration file: every arm is fine-tuned and evaluated on the same prompts, and
    eval.json holds RS minus each, paired, with standard errors."""
    from core.sources import toyworld_sft_examples

    seen = toyworld_sft_examples(6, 1)  # what replay.seed=1 would draw first: now excluded
    write_jsonl(tmp_path / "sft_train.jsonl", seen)
    out = tmp_path / "rs"
    run(_config(rms, out, "prompts.n=4", "k=2", "control_arms=[best_of_1, replay_only]", "replay.n=2",
                f"replay.exclude=[{tmp_path / 'sft_train.jsonl'}]", "temperature_grid=[0.7, 1.3]",
                "temperature_probe_prompts=2", "eval.n_prompts=4"))
    manifest = json.loads((out / "manifest.json").read_text())
    probe = json.loads((out / "temperature_probe.json").read_text())
    assert [p["temperature"] for p in probe["grid"]] == [0.7, 1.3]
    gaps = {p["temperature"]: p["gap"] for p in probe["grid"]}
    assert probe["chosen"] == max(gaps, key=lambda t: (gaps[t], -t)) == manifest["temperature"]
    assert {r["temperature"] for r in read_samples(out)} == {probe["chosen"]}
    replay = [row for row in read_jsonl(out / "finetune_data.jsonl") if row["id"].startswith("replay-")]
    from rejection_sampling.core import user_turns

    assert len(replay) == 2 and not {user_turns(r["messages"]) for r in replay} & {user_turns(e["messages"]) for e in seen}
    assert manifest["pool"]["replay"]["n_candidates_seen_in_sft"] >= 6
    assert read_jsonl(out / "arms" / "replay_only" / "finetune_data.jsonl") == replay
    best_of_1 = read_jsonl(out / "arms" / "best_of_1" / "finetune_data.jsonl")
    assert best_of_1[len(best_of_1) - 2:] == replay and all(r["sample_index"] == 0 for r in best_of_1[:-2])
    for arm in ("best_of_1", "replay_only"):
        assert (out / "arms" / arm / "sft" / "model" / "config.json").is_file()
    result = json.loads((out / "eval.json").read_text())
    assert set(result["models"]) == {"before", "after", "best_of_1", "replay_only"}
    assert set(result["controls"]) == {"rs_vs_best_of_1", "rs_vs_replay_only", "rs_vs_init"}
    for comparison in result["controls"].values():
        assert {"diff", "diff_stderr", "wins", "losses", "n"} <= set(comparison["rm_reward"])
        assert comparison["gold_combined"]["n"] == result["prompts"]["n"]
    # RS vs init is RS's own paired difference against the start (init = the policy here)
    assert result["controls"]["rs_vs_init"]["rm_reward"]["diff"] == pytest.approx(result["paired"]["after"]["rm_reward"]["diff"])


def test_config_refuses_inconsistent_new_keys():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="replay.n > 0"):
        load_config(RSConfig, SMOKE, ["control_arms=[replay_only]"])
    with pytest.raises(ConfigError, match="finetune_enabled"):
        load_config(RSConfig, SMOKE, ["control_arms=[best_of_1]", "finetune_enabled=false"])
    with pytest.raises(ConfigError, match="temperature_grid"):
        load_config(RSConfig, SMOKE, ["temperature_grid=[0.0, 1.0]"])
    with pytest.raises(ConfigError, match="'replay_toyworld' is now 'replay.n'"):
        load_config(RSConfig, SMOKE, ["replay_toyworld=3"])
    with pytest.raises(ConfigError, match="distributed"):
        load_config(RSConfig, SMOKE, ["distributed=zero3"])


def test_nothing_to_fine_tune_on_is_a_clear_error_and_keeps_the_samples(rms, tmp_path):
    """The plain tiny model never ends an answer: every sample is truncated, so no prompt has
    a target; without replay the stage stops naming max_new_tokens and replay.n."""
    from core.errors import RLHFError

    out = tmp_path / "rs"
    config = _config(rms, out, "policy=embedded:tiny-llama", "init_model=embedded:tiny-llama", "eval.enabled=false",
                     "max_new_tokens=3")
    with pytest.raises(RLHFError, match=r"nothing to fine-tune on.*max_new_tokens=3.*replay.n is 0"):
        run(config)
    assert _shards(out), "the samples are kept"
    assert not (out / "model").exists()
