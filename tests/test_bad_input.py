"""Bad input through the real `rlhf` CLI: one table, one test.

Every row is a malformed input for a loader, a config or a command: broken JSON,
wrong types, unknown keys, missing fields, unknown roles or ratings, empty texts,
non-UTF-8 bytes, duplicate ids, overlong examples, a reward-model folder that is
not one, a tokenizer without a chat template, a missing file, ... Each one must
give exit status 2, ONE line on stderr that names the place (the file and line or
field, or the config key), and write nothing: the output folder stays absent, or
exactly as it was when an earlier run had left one (every file under the test's
folder is compared, bytes and modification times).

The commands run in-process (`core.cli.main(argv)`), as the console script does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.cli import main

REPO = Path(__file__).resolve().parents[1]

# The CLIs run in this process: keep library log handlers off pytest's closed streams.
pytestmark = pytest.mark.usefixtures("library_log_handlers_on_real_stderr")

CONFIGS = REPO / "configs"
SFT = str(CONFIGS / "sft" / "smoke.yaml")
RM = str(CONFIGS / "reward" / "smoke.yaml")
RS = str(CONFIGS / "rs" / "smoke.yaml")
PPO = str(CONFIGS / "ppo" / "smoke.yaml")
GATT = str(CONFIGS / "gatt" / "smoke.yaml")


# --------------------------------------------------------------------- assets
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    """Model folders the cases point at (outside each case's folder, built once)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models import resolve_model_path

    root = tmp_path_factory.mktemp("bad_input_assets")
    tiny = Path(resolve_model_path("embedded:tiny-llama"))
    # A tokenizer without a chat template (the model itself is the tiny one).
    no_template = root / "no_template"
    shutil.copytree(tiny, no_template)
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    config_file = no_template / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config.pop("chat_template", None)
    config_file.write_text(json.dumps(tokenizer_config))
    assert AutoTokenizer.from_pretrained(no_template).chat_template is None
    # A real one-output reward model, for the cases whose bad input is elsewhere.
    rm = root / "rm"
    model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    model.config.pad_token_id = model.config.pad_token_id or model.config.eos_token_id
    model.save_pretrained(rm, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(rm)
    empty = root / "empty_folder"
    empty.mkdir()
    return {"tiny": str(tiny), "no_template": str(no_template), "rm": str(rm), "empty": str(empty)}


# ---------------------------------------------------------------- case helpers
def jl(*rows) -> str:
    """JSON lines; a str row is written as is (a broken line)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def msgs(*pairs) -> list[dict]:
    return [{"role": role, "content": content} for role, content in pairs]


GOOD_SFT = {"messages": msgs(("user", "What is 2 + 2?"), ("assistant", "4"))}
GOOD_PAIR = {"prompt": msgs(("user", "Hi")), "chosen": "Hello!", "rejected": "Go away.", "rating": "better",
             "category": "helpfulness", "chosen_safe": True, "rejected_safe": True, "source": "test"}
GOOD_PROMPT = {"messages": msgs(("user", "Name a colour.")), "category": "helpfulness", "id": "p1"}


def pair(**changes) -> dict:
    row = {**GOOD_PAIR, **changes}
    return {k: v for k, v in row.items() if v is not ...}


def prompt(**changes) -> dict:
    return {**GOOD_PROMPT, **changes}


def pipeline_yaml(**changes) -> str:
    """The smoke pipeline with absolute preset paths, plus `changes` (top-level keys)."""
    import yaml

    data = yaml.safe_load((CONFIGS / "pipelines" / "smoke.yaml").read_text())
    for section in [data["sft"], data["reward"], data["gatt"], *(v.get(k) for v in data["versions"] for k in ("rejection_sampling", "ppo"))]:
        if section:
            section["preset"] = str(REPO / section["preset"])
    data.update(changes)
    return yaml.safe_dump(data)


@dataclass
class Case:
    id: str
    argv: Callable[[Path, dict], list[str]]  # (case folder, assets) -> argv after `rlhf`
    where: tuple[str, ...]  # every one must be in the error line
    files: dict[str, str | bytes] = field(default_factory=dict)  # written in the case folder first
    existing: bool = False  # an earlier run left the output folder (it must stay as it was)


def sft(*extra):
    return lambda d, a: ["sft", "--config", SFT, f"output_dir={d / 'out'}", "eval.enabled=false", *extra]


def sft_data(name, *extra):
    return lambda d, a: sft(f"data.train={d / name}", *extra)(d, a)


def rm_train(*extra):
    return lambda d, a: ["reward", "train", "--config", RM, f"output_dir={d / 'out'}", "eval_pairs=0", *extra]


def rm_data(name, *extra):
    return lambda d, a: rm_train(f"data=[{{source: {d / name}}}]", *extra)(d, a)


def rs(*extra):
    def argv(d, a):
        rms = [f"reward_models.helpfulness={a['rm']}", f"reward_models.safety={a['rm']}"]
        return ["rs", "--config", RS, f"output_dir={d / 'out'}", *rms, *[e.format(**a, dir=d) for e in extra]]
    return argv


def ppo(*extra):
    def argv(d, a):
        rms = [f"reward_models.helpfulness={a['rm']}", f"reward_models.safety={a['rm']}"]
        return ["ppo", "--config", PPO, f"output_dir={d / 'out'}", *rms, *[e.format(**a, dir=d) for e in extra]]
    return argv


def gatt(*extra):
    return lambda d, a: ["gatt", "run", "--config", GATT, f"output_dir={d / 'out'}", *[e.format(**a, dir=d) for e in extra]]


def pipeline(name="pipeline.yaml", *extra):
    return lambda d, a: ["run", str(d / name), "--run-dir", str(d / "out"), *extra]


CASES = [
    # -- configs and overrides -------------------------------------------------------------
    Case("config-unknown-key", sft("trainng.epochs=1"), ("smoke.yaml", "unknown key 'trainng'")),
    Case("config-wrong-type", sft("training.batch_size=four"), ("key 'training.batch_size'", "'four'")),
    Case("config-missing-key", lambda d, a: ["reward", "train", "--config", str(d / "rm.yaml"), f"output_dir={d / 'out'}"],
         ("rm.yaml", "missing key 'kind'"), files={"rm.yaml": "init_model: embedded:tiny-llama\n"}),
    Case("config-unknown-choice", rm_train("kind=harmless"), ("key 'kind'", "harmless")),
    Case("config-validator", rs("k=0"), ("smoke.yaml", "k must be >= 1")),
    Case("config-yaml-syntax", lambda d, a: ["sft", "--config", str(d / "c.yaml"), f"output_dir={d / 'out'}"],
         ("c.yaml", "not valid YAML", "line 2"), files={"c.yaml": "training: {epochs: 1\nmodel: x\n"}),
    Case("config-not-utf8", lambda d, a: ["sft", "--config", str(d / "c.yaml"), f"output_dir={d / 'out'}"],
         ("c.yaml", "not valid UTF-8"), files={"c.yaml": b"output_dir: caf\xe9\n"}),
    Case("config-missing-file", lambda d, a: ["ppo", "--config", str(d / "nope.yaml")], ("nope.yaml", "does not exist")),
    Case("config-override-not-key-value", sft("epochs"), ("override 'epochs'", "key=value")),
    Case("config-not-a-mapping", lambda d, a: ["gatt", "run", "--config", str(d / "c.yaml")],
         ("c.yaml", "must be a mapping"), files={"c.yaml": "- model\n- output_dir\n"}),
    Case("pipeline-unknown-key", pipeline("pipeline.yaml", "versionz=[]"), ("unknown key 'versionz'",),
         files={"pipeline.yaml": pipeline_yaml()}),
    Case("pipeline-late-stage-override", pipeline(), ("ppo", "v2.ppo", "unknown key 'ppo.bogus'"),
         files={"pipeline.yaml": pipeline_yaml(versions=[
             {"name": "v1", "rejection_sampling": {"preset": RS}},
             {"name": "v2", "ppo": {"preset": PPO, "overrides": {"ppo.bogus": 1}}}])}),
    Case("pipeline-missing-preset", pipeline(), ("no_such_gatt.yaml", "does not exist"),
         files={"pipeline.yaml": pipeline_yaml(gatt={"after": "v2", "preset": "configs/gatt/no_such_gatt.yaml"})}),
    Case("pipeline-gatt-after-unknown-version", pipeline(), ("gatt.after", "v9"),
         files={"pipeline.yaml": pipeline_yaml(gatt={"after": "v9", "preset": GATT})}),
    # -- SFT data ----------------------------------------------------------------------
    Case("sft-broken-json", sft_data("sft.jsonl"), ("sft.jsonl, line 2", "malformed JSON"),
         files={"sft.jsonl": jl(GOOD_SFT, '{"messages": [{"role": "user", "content": "Hi"}', GOOD_SFT)}, existing=True),
    Case("sft-unknown-role", sft_data("sft.jsonl"), ("sft.jsonl, line 1", "field 'messages[0].role'", "'robot'"),
         files={"sft.jsonl": jl({"messages": msgs(("robot", "beep"), ("assistant", "boop"))})}),
    Case("sft-wrong-type", sft_data("sft.jsonl"), ("sft.jsonl, line 2", "field 'messages[1].content'"),
         files={"sft.jsonl": jl(GOOD_SFT, {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": 4}]})}),
    Case("sft-missing-field", sft_data("sft.jsonl"), ("sft.jsonl, line 1", "field 'messages'", "missing"),
         files={"sft.jsonl": jl({"conversation": GOOD_SFT["messages"]})}),
    Case("sft-not-utf8", sft_data("sft.jsonl"), ("sft.jsonl, line 2", "not valid UTF-8"),
         files={"sft.jsonl": jl(GOOD_SFT).encode() + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'}),
    Case("sft-empty-answer", sft_data("sft.jsonl", "data.on_bad_example=error"), ("sft.jsonl:2", "empty answer", "messages[1]"),
         files={"sft.jsonl": jl(GOOD_SFT, {"messages": msgs(("user", "Hi"), ("assistant", "  "))})}),
    Case("sft-overlong", sft_data("sft.jsonl", "data.on_bad_example=error", "training.max_length=12"),
         ("sft.jsonl:1", "too long", "max_length 12"), files={"sft.jsonl": jl(GOOD_SFT)}),
    Case("sft-empty-file", sft_data("sft.jsonl"), ("sft.jsonl", "no conversations"), files={"sft.jsonl": "\n"}),
    Case("sft-missing-file", sft_data("missing.jsonl"), ("missing.jsonl", "no such file")),
    Case("sft-csv-cell-count", sft_data("sft.csv"), ("sft.csv, line 3", "cells"),
         files={"sft.csv": 'messages\n"[{""role"": ""user"", ""content"": ""Hi""}]"\na,b\n'}),
    Case("sft-no-chat-template", lambda d, a: sft(f"model.name={a['no_template']}", "model.chat_template=require")(d, a),
         ("no_template", "has no chat template")),
    Case("sft-model-not-a-folder", lambda d, a: sft(f"model.name={a['empty']}")(d, a), ("empty_folder", "not a model folder"),
         existing=True),
    # -- reward-model data and folders -------------------------------------------------------
    Case("rm-unknown-rating", rm_data("pairs.jsonl"), ("pairs.jsonl, line 2, field 'rating'", "much_better"),
         files={"pairs.jsonl": jl(GOOD_PAIR, pair(rating="much_better"))}, existing=True),
    Case("rm-missing-field", rm_data("pairs.jsonl"), ("pairs.jsonl, line 2, field 'chosen'", "missing field"),
         files={"pairs.jsonl": jl(GOOD_PAIR, pair(chosen=...))}),
    Case("rm-unknown-format", rm_data("pairs.jsonl"), ("pairs.jsonl, line 1", "cannot tell the format", "name an adapter"),
         files={"pairs.jsonl": jl({"question": "Hi", "good": "Hello!", "bad": "Go away."})}),
    Case("rm-empty-answer", rm_data("pairs.jsonl"), ("pairs.jsonl, line 1, field 'rejected'", "empty answer"),
         files={"pairs.jsonl": jl(pair(rejected="   "))}),
    Case("rm-wrong-type", rm_data("pairs.jsonl"), ("pairs.jsonl, line 1, field 'chosen_safe'", "got string"),
         files={"pairs.jsonl": jl(pair(chosen_safe="yes"))}),
    Case("rm-unknown-category", rm_data("pairs.jsonl"), ("pairs.jsonl, line 1, field 'category'", "harmlessness"),
         files={"pairs.jsonl": jl(pair(category="harmlessness"))}),
    Case("rm-same-answers", rm_data("pairs.jsonl"), ("pairs.jsonl, line 1, field 'rejected'", "same answer"),
         files={"pairs.jsonl": jl(pair(rejected="Hello!"))}),
    Case("rm-unknown-prompt-role", rm_data("pairs.json"), ("pairs.json, line 3, field 'prompt[0].role'", "'human'"),
         files={"pairs.json": "[\n" + json.dumps(GOOD_PAIR) + ",\n" + json.dumps(pair(prompt=msgs(("human", "Hi")))) + "\n]\n"}),
    Case("rm-all-overlong", rm_train("max_length=4"), ("field 'max_length'", "longer than max_length=4")),
    Case("rm-init-not-a-model", lambda d, a: rm_train(f"init_model={a['empty']}")(d, a), ("empty_folder", "not a model folder")),
    Case("rm-no-chat-template", lambda d, a: rm_train(f"init_model={a['no_template']}", "chat_template=require")(d, a),
         ("no_template", "has no chat template")),
    Case("rm-eval-folder-not-a-reward-model", lambda d, a: ["reward", "eval", "--model", a["tiny"], "--out", str(d / "out")],
         ("tiny-llama", "LlamaForCausalLM", "not a reward model")),
    Case("rm-eval-bad-pairs", lambda d, a: ["reward", "eval", "--model", a["rm"], "--data", str(d / "p.jsonl"), "--out", str(d / "out")],
         ("p.jsonl, line 1, field 'rating'",), files={"p.jsonl": jl(pair(rating=3))}),
    # -- rejection sampling ------------------------------------------------------------------
    Case("rs-duplicate-ids", rs("prompts.source={dir}/prompts.jsonl", "eval.enabled=false"), ("prompts.jsonl, line 2, field 'id'", "duplicate id 'p1'"),
         files={"prompts.jsonl": jl(GOOD_PROMPT, prompt(messages=msgs(("user", "Another?"))))}, existing=True),
    Case("rs-prompt-ends-with-answer", rs("prompts.source={dir}/prompts.jsonl", "eval.enabled=false"),
         ("prompts.jsonl, line 1, field 'messages[1].role'", "must end with a user message"),
         files={"prompts.jsonl": jl(prompt(messages=msgs(("user", "Hi"), ("assistant", "Hello"))))}),
    Case("rs-reward-model-folder-not-one", rs("reward_models.helpfulness={tiny}"), ("reward_models.helpfulness", "tiny-llama", "not a reward model")),
    Case("rs-pool-folder-without-samples", rs("pool_dirs=[{empty}]"), ("empty_folder", "no sample shards")),
    # -- PPO ---------------------------------------------------------------------------------
    Case("ppo-unknown-category", ppo("data.prompts={dir}/prompts.jsonl", "eval.prompts=toyworld"), ("prompts.jsonl, line 1, field 'category'", "'unsafe'"),
         files={"prompts.jsonl": jl(prompt(category="unsafe"))}, existing=True),
    Case("ppo-empty-prompt", ppo("eval.prompts={dir}/heldout.jsonl"), ("heldout.jsonl, line 2, field 'messages'", "empty prompt"),
         files={"heldout.jsonl": jl(GOOD_PROMPT, prompt(id="p2", messages=[]))}),
    Case("ppo-safety-rm-not-a-folder", ppo("reward_models.safety={empty}"), ("reward_models.safety", "empty_folder", "no config.json")),
    Case("ppo-reward-model-is-a-causal-lm", ppo("reward_models.helpfulness={tiny}"), ("reward_models.helpfulness", "not a reward model")),
    # -- GAtt --------------------------------------------------------------------------------
    Case("gatt-dialogue-unknown-role", gatt("dialogues.source={dir}/dialogues.jsonl", "dialogues.n=2", "eval.enabled=false"),
         ("dialogues.jsonl, line 2, field 'messages[1]'",),
         files={"dialogues.jsonl": jl(
             {"messages": msgs(("user", "a"), ("assistant", "b"), ("user", "c"))},
             {"messages": msgs(("user", "a"), ("bot", "b"), ("user", "c"))})}),
    Case("gatt-no-chat-template", gatt("model={no_template}", "chat_template=require"), ("no_template", "has no chat template")),
    Case("gatt-ranking-model-not-a-reward-model",
         gatt("synthesis.ranking.by=reward_model", "reward_models.helpfulness={tiny}", "reward_models.safety={rm}"),
         ("reward_models.helpfulness", "not a reward model")),
    # -- evaluation and report ---------------------------------------------------------------
    Case("eval-model-not-a-folder", lambda d, a: ["eval", "toyworld", "--model", a["empty"], "--out", str(d / "out")],
         ("empty_folder", "not a model folder")),
    Case("report-not-a-run-folder", lambda d, a: ["report", str(d / "out")], ("out", "is not a folder")),
]


# ------------------------------------------------------------------------ the test
def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under `folder`: contents and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def leave_earlier_run(out: Path) -> None:
    """What an earlier, failed run leaves: a manifest, a config, metrics, a file of its own."""
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"stage": "earlier", "status": "failed", "config": {}}))
    (out / "config.yaml").write_text("earlier: true\n")
    (out / "metrics.jsonl").write_text('{"step": 1, "stage": "earlier", "loss": 1.0}\n')
    (out / "keep.txt").write_text("an earlier run's file\n")


def test_enough_cases():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_with_one_line_naming_the_place_and_writes_nothing(case, tmp_path, assets, capsys):
    for name, content in case.files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    if case.existing:
        leave_earlier_run(tmp_path / "out")
    before = snapshot(tmp_path)

    code = main(case.argv(tmp_path, assets))

    err = capsys.readouterr().err
    assert code == 2, err
    # One error line, the last thing on stderr; anything before it is progress output
    # (a model-loading bar), never a traceback or a second error line.
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), err
    assert "Traceback" not in err, err
    for words in case.where:
        assert words in errors[0], f"{words!r} not in {errors[0]!r}"
    assert snapshot(tmp_path) == before, "the command wrote or changed files"
