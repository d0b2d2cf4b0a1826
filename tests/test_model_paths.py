"""Model paths of the wrong kind, corrupt weights and unreachable hub ids: one line, at once.

Every case builds a small real folder (the tiny Llama, a one-output reward model made
from it, a LoRA adapter, a sharded save) and checks that the error is ONE line that
names the path and, where there is one, the right path. Nothing loads the weights.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from core import model_paths
from core.errors import HubUnreachableError, ModelLoadError
from core.model_paths import (
    check_model_path,
    check_policy_path,
    check_reward_init_path,
    check_reward_model_path,
    hub_source,
)


def one_line_error(excinfo, *parts: object) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for part in parts:
        assert str(part) in message, f"{part!r} not in: {message}"
    return message


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A run folder laid out as a pipeline writes it: sft/ (a causal LM) and v1/rm_helpfulness/ (an RM)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models import resolve_model_path

    tiny = Path(resolve_model_path("embedded:tiny-llama"))
    root = tmp_path_factory.mktemp("model_paths") / "runs" / "x"
    sft = root / "sft"
    shutil.copytree(tiny, sft / "model")
    (sft / "manifest.json").write_text(json.dumps({"status": "completed"}))
    (sft / "config.yaml").write_text("model: {name: embedded:tiny-llama}\n")
    rm_stage = root / "v1" / "rm_helpfulness"
    rm = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    rm.config.pad_token_id = rm.config.pad_token_id or rm.config.eos_token_id
    rm.save_pretrained(rm_stage / "model", safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(rm_stage / "model")
    (rm_stage / "manifest.json").write_text(json.dumps({"status": "completed"}))
    return {"tiny": tiny, "root": root, "sft": sft, "policy": sft / "model", "rm_stage": rm_stage, "rm": rm_stage / "model"}


@pytest.fixture
def fresh_hub(monkeypatch):
    """No offline flags from the environment, and no remembered probe."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(model_paths, "_hub_probes", {})


def copy_of(folder: Path, tmp_path: Path, name: str = "model") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


# ------------------------------------------------------------------ valid names
def test_valid_policy_reward_model_and_embedded_names_pass(run, tmp_path, monkeypatch):
    assert check_policy_path(str(run["policy"])) == str(run["policy"])
    assert check_reward_model_path(str(run["rm"])) == run["rm"]
    assert check_reward_init_path(str(run["policy"])) == str(run["policy"])
    assert check_reward_init_path(str(run["rm"])) == str(run["rm"])  # an earlier RM is a valid start too
    assert check_model_path(run["rm"], "reward_model") == run["rm"]
    # Embedded names are checked without building anything.
    monkeypatch.setenv("LLAMA_RLHF_CACHE", str(tmp_path / "cache"))
    assert check_policy_path("embedded:tiny-llama") == "embedded:tiny-llama"
    assert check_policy_path("embedded:smollm2-135m") == "embedded:smollm2-135m"
    assert not (tmp_path / "cache").exists()


def test_unknown_embedded_name_lists_the_known_ones():
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path("embedded:gpt-5")
    one_line_error(excinfo, "embedded:gpt-5", "embedded:tiny-llama", "embedded:smollm2-135m")


def test_embedded_name_is_not_a_reward_model():
    with pytest.raises(ModelLoadError) as excinfo:
        check_reward_model_path("embedded:tiny-llama")
    one_line_error(excinfo, "embedded:tiny-llama", "not a reward model")


# ------------------------------------------------------------------ wrong kind
def test_reward_model_given_as_policy_names_the_sft_model(run):
    from core.models import load_causal_lm

    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(run["rm"]))
    one_line_error(excinfo, run["rm"], "is a reward model (LlamaForSequenceClassification)", "not a causal LM", run["policy"])
    with pytest.raises(ModelLoadError) as excinfo:  # the loader says the same, before loading
        load_causal_lm(str(run["rm"]))
    one_line_error(excinfo, run["rm"], "is a reward model")


def test_policy_given_as_reward_model_names_a_reward_model(run):
    from reward.scorer import RewardScorer, check_reward_model_folder

    with pytest.raises(ModelLoadError) as excinfo:
        check_reward_model_path(str(run["policy"]))
    one_line_error(excinfo, run["policy"], "causal LM (LlamaForCausalLM)", "not a reward model", run["rm"])
    with pytest.raises(ModelLoadError) as excinfo:
        check_reward_model_folder(run["policy"])
    one_line_error(excinfo, run["policy"], "not a reward model")
    with pytest.raises(ModelLoadError) as excinfo:
        RewardScorer(run["policy"])
    one_line_error(excinfo, run["policy"], "not a reward model")


def test_stage_folder_points_at_its_model(run, tmp_path):
    for check in (check_policy_path, check_reward_model_path, check_reward_init_path):
        stage = run["sft"] if check is not check_reward_model_path else run["rm_stage"]
        with pytest.raises(ModelLoadError) as excinfo:
            check(str(stage))
        one_line_error(excinfo, f"{stage} is a stage folder; its model is {stage / 'model'}")
    # GAtt keeps its model one level further down (gatt/sft/model).
    gatt = tmp_path / "gatt"
    (gatt / "sft").mkdir(parents=True)
    (gatt / "manifest.json").write_text("{}")
    (gatt / "sft" / "model").symlink_to(run["policy"], target_is_directory=True)
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(gatt))
    one_line_error(excinfo, f"{gatt} is a stage folder; its model is {gatt / 'sft' / 'model'}")
    # A run folder lists the model folders inside it.
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(run["root"]))
    one_line_error(excinfo, run["root"], "not a model folder", run["policy"], run["rm"])
    # A stage that never wrote its model says so.
    unfinished = tmp_path / "rs"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("policy: x\n")
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(unfinished))
    one_line_error(excinfo, unfinished, "stage folder with no model")


def test_unmerged_lora_adapter_names_its_base_and_says_merge(run, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run["policy"])
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(adapter)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    for check in (check_policy_path, check_reward_model_path, check_reward_init_path):
        with pytest.raises(ModelLoadError) as excinfo:
            check(str(adapter))
        one_line_error(excinfo, adapter, "unmerged LoRA adapter", f"base model {run['policy']}", "merge_lora: true")


# ------------------------------------------------------------------ corrupt folders
@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "is truncated"),
        (lambda f: f.write_bytes(b"\x00" * 64 + b"not a tensor file" * 100), "is corrupt"),
        (lambda f: f.write_bytes(b""), "is empty (0 bytes)"),
        (lambda f: f.write_bytes(f.read_bytes()[:5]), "is truncated"),
    ],
    ids=["half", "garbage", "zero-bytes", "five-bytes"],
)
def test_corrupt_safetensors_is_one_line_naming_the_file(run, tmp_path, damage, expected):
    from core.cli import run_guarded
    from core.models import load_causal_lm, load_model_and_tokenizer
    from reward.scorer import RewardScorer

    policy = copy_of(run["policy"], tmp_path, "policy")
    damage(policy / "model.safetensors")
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(policy))
    one_line_error(excinfo, policy / "model.safetensors", expected)
    for load in (load_causal_lm, load_model_and_tokenizer):
        with pytest.raises(ModelLoadError) as excinfo:
            load(str(policy))
        one_line_error(excinfo, policy / "model.safetensors", expected)
    rm = copy_of(run["rm"], tmp_path, "rm")
    damage(rm / "model.safetensors")
    with pytest.raises(ModelLoadError) as excinfo:
        RewardScorer(rm)
    one_line_error(excinfo, rm / "model.safetensors", expected)
    assert run_guarded(lambda: load_causal_lm(str(policy))) == 2  # the CLI's one line, no traceback


def test_sharded_save_with_a_missing_or_cut_shard(run, tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(run["policy"]).save_pretrained(sharded, max_shard_size="4MB")
    shutil.copy(run["policy"] / "tokenizer.json", sharded)
    index = sharded / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) >= 2
    assert check_policy_path(str(sharded)) == str(sharded)  # complete: passes
    last = sharded / shards[-1]
    saved = last.read_bytes()
    last.write_bytes(saved[: len(saved) // 3])
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(sharded))
    one_line_error(excinfo, last, "is truncated")
    last.unlink()
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(sharded))
    one_line_error(excinfo, index, f"names the shard {shards[-1]}", "missing")


def test_folder_without_config_or_weights_and_missing_paths(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(empty))
    one_line_error(excinfo, empty, "not a model folder (no config.json)")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(run["policy"] / "config.json", no_weights)
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(no_weights))
    one_line_error(excinfo, no_weights, "no weight file")
    zero_pickle = copy_of(no_weights, tmp_path, "zero_pickle")
    (zero_pickle / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(zero_pickle))
    one_line_error(excinfo, zero_pickle / "pytorch_model.bin", "empty (0 bytes)")
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path(str(run["policy"] / "model.safetensors"))  # the file, not its folder
    one_line_error(excinfo, run["policy"] / "model.safetensors", f"give the model folder that holds it: {run['policy']}")
    for missing in ("./no/such/folder", "runs/nothing/sft/model", "~/no-such-model-folder", str(tmp_path / "absent")):
        for check in (check_policy_path, check_reward_model_path):
            with pytest.raises(ModelLoadError) as excinfo:
                check(missing)
            one_line_error(excinfo, "no such folder", missing)


def test_reward_model_with_two_outputs(run, tmp_path):
    rm = copy_of(run["rm"], tmp_path)
    config = json.loads((rm / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    (rm / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as excinfo:
        check_reward_model_path(rm)
    one_line_error(excinfo, rm, "2 outputs")


# ------------------------------------------------------------------ hub ids
def test_reward_model_hub_id_must_be_a_local_folder():
    with pytest.raises(ModelLoadError) as excinfo:
        check_reward_model_path("someone/some-reward-model")
    one_line_error(excinfo, "someone/some-reward-model", "not a local folder", "--local-dir")


def test_unreachable_hub_fails_within_seconds(fresh_hub, monkeypatch):
    from core.models import load_causal_lm, load_tokenizer, resolve_model_path

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    for call in (check_policy_path, check_reward_init_path, resolve_model_path, load_tokenizer, load_causal_lm):
        start = time.monotonic()
        with pytest.raises(HubUnreachableError) as excinfo:
            call("nobody-here/no-such-model")
        assert time.monotonic() - start < 15  # generous: the point is seconds, not a minute of retries
        one_line_error(excinfo, "hub id nobody-here/no-such-model", "http://127.0.0.1:9", "cannot be reached", "local model folder")


def test_hub_that_accepts_but_never_answers_times_out(fresh_hub, monkeypatch):
    with socket.socket() as server:  # listens, never accepts: the request hangs until the probe gives up
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(HubUnreachableError) as excinfo:
            check_policy_path("nobody-here/no-such-model")
        elapsed = time.monotonic() - start
    assert elapsed < 15
    one_line_error(excinfo, "nobody-here/no-such-model", "cannot be reached")
    assert model_paths.hub_reachable() is False  # remembered: the next check does not wait again


def test_offline_hub_id_must_be_cached(fresh_hub, monkeypatch, run, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model_paths, "hub_reachable", lambda *a, **k: pytest.fail("offline: the hub must not be probed"))
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path("someone/llama-7b")
    one_line_error(excinfo, "hub id someone/llama-7b is not in the local cache and HF_HUB_OFFLINE is set")

    def cache(repo_id: str, folder: Path) -> Path:  # the layout huggingface_hub writes
        repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / "0123abcd"
        shutil.copytree(folder, snapshot)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0123abcd")
        return snapshot

    snapshot = cache("someone/llama-7b", run["policy"])
    assert check_policy_path("someone/llama-7b") == "someone/llama-7b"
    from core.models import resolve_model_path

    assert resolve_model_path("someone/llama-7b") == snapshot  # loaders read the cached copy, no network
    cache("someone/llama-7b-rm", run["rm"])
    with pytest.raises(ModelLoadError) as excinfo:
        check_policy_path("someone/llama-7b-rm")
    one_line_error(excinfo, "hub id someone/llama-7b-rm is a reward model")
    # Down but cached (not offline): the cached copy, without an error.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(model_paths, "hub_reachable", lambda *a, **k: False)
    assert hub_source("someone/llama-7b") == snapshot
    # Reachable: the id itself, for from_pretrained to fetch.
    monkeypatch.setattr(model_paths, "hub_reachable", lambda *a, **k: True)
    assert hub_source("someone/llama-7b") == "someone/llama-7b"


def test_checking_configs_without_contacting_the_hub(fresh_hub, monkeypatch):
    monkeypatch.setattr(model_paths, "hub_reachable", lambda *a, **k: pytest.fail("probe_hub=False must not probe"))
    assert check_policy_path("meta-llama/Llama-2-7b-hf", probe_hub=False) == "meta-llama/Llama-2-7b-hf"
