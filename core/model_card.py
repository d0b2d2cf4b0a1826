"""A model card (README.md) in every model folder a stage saves.

`write_model_card(model_dir, stage_folder)` reads what the stage folder already holds,
the manifest (stage, inputs with their sha256, outputs, version, commit, times) and the
resolved config in it, and the evaluation files the stage registered as outputs
(`eval.json` and friends), and writes `model_dir/README.md`: the model it started from,
the stage, the data with content hashes, the key settings, the evaluation figures and
the command that makes it again. `core.run.StageRun` calls it when a stage that
registered an output named "model" completes, so every stage gets one without code of
its own. The card is made from files only: it can be written again at any time
(`python -m core.model_card MODEL_DIR STAGE_FOLDER`).

The front matter follows the Hugging Face model-card metadata (`base_model` only when
the lineage starts at a hub id; a local starting model's own card passes its
`base_model` on, so a PPO model still names `meta-llama/Llama-2-7b-hf`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from core.io import atomic_write_text

CARD = "README.md"
VOLATILE = re.compile(r"time|seconds|per_second|_s$")  # wall-clock figures: the card stays the same on a rerun

# The key of each stage's config that names the model the stage starts from.
START_KEYS = ("model.name", "init_model", "model.policy", "policy", "model")
# Manifest inputs that are models rather than data.
MODEL_INPUTS = {"model", "policy", "init_model", "start_model", "helpfulness_rm", "safety_rm", "helpful_rm"}
STAGES = {
    "sft": ("Supervised fine-tuning (SFT)", "rlhf sft --config {config}"),
    "reward": ("Reward model", "rlhf reward train --config {config}"),
    "rejection_sampling": ("Rejection-sampling fine-tuning", "rlhf rs --config {config}"),
    "ppo": ("PPO", "rlhf ppo --config {config}"),
    "gatt": ("Ghost Attention (GAtt)", "rlhf gatt run --config {config}"),
}
# The settings a reader looks for first, per stage; keys a config does not have are skipped.
KEY_SETTINGS = {
    "sft": ("training.learning_rate", "training.lr_scheduler", "training.epochs", "training.max_steps", "training.batch_size",
            "training.max_length", "training.packing", "training.dtype", "lora.enabled", "training.seed"),
    "reward": ("kind", "margin", "learning_rate", "epochs", "batch_size", "max_length", "bf16", "trainable_layers",
               "lora.enabled", "seed"),
    "rejection_sampling": ("iteration", "k", "temperature", "max_new_tokens", "reward_models.safety_threshold",
                           "finetune.learning_rate", "finetune.epochs", "finetune.batch_size", "seed"),
    "ppo": ("iterations", "ppo.batch_size", "ppo.minibatch_size", "ppo.clip", "ppo.beta", "ppo.kl_target",
            "optim.learning_rate", "reward.kind", "reward_models.safety_threshold", "model.memory", "model.dtype",
            "model.trainable_layers", "ppo.score_whitening_groups",
            "sampling.max_new_tokens", "sampling.temperature", "seed"),
    "gatt": ("instructions.kinds", "dialogues.n", "dialogues.n_turns", "synthesis.k", "synthesis.ranking.by",
             "finetune.training.learning_rate", "finetune.training.epochs", "seed"),
}


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _front_matter(path: Path) -> dict:
    """The YAML front matter of a model card ({} when there is none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    try:
        data = yaml.safe_load(text[4:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def start_model(stage: str, config: dict) -> tuple[str, str] | None:
    """(config key, value) of the model the stage started from."""
    for key in START_KEYS:
        value = _get(config, key)
        if isinstance(value, str) and value:
            return key, value
    return None


def root_base_model(start: str | None) -> str | None:
    """The hub id the lineage starts at: the start itself, or its card's base_model."""
    if not start:
        return None
    from core.model_paths import is_hub_id

    folder = Path(start).expanduser()
    if folder.is_dir():
        base = _front_matter(folder / CARD).get("base_model")
        return base if isinstance(base, str) else None
    return start if is_hub_id(start) else None


def _toyworld_keys(config: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value names the embedded task world (generated data, no file)."""
    from core.sources import is_toyworld

    found = []
    if isinstance(config, dict):
        for key, value in config.items():
            found += _toyworld_keys(value, f"{prefix}{key}.")
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += _toyworld_keys(value, f"{prefix[:-1]}[{i}].")
    elif isinstance(config, str) and is_toyworld(config):
        found.append(prefix[:-1])
    return found


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true, false, null: as in the config
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- evaluation figures ---------------------------------------------------------------


def _shared_evaluation(result: dict) -> list[str]:
    """core.evaluation's layout: each model's means ± stderr, each paired difference."""
    models = result["models"]
    names = list(models)
    metrics = []
    for name in names:
        for key, value in models[name].items():
            if (isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith("_stderr")
                    and not VOLATILE.search(key) and key not in metrics):
                metrics.append(key)
    prompts = result.get("prompts") or {}
    lines = [f"Held-out prompts: {prompts.get('source', '?')} ({prompts.get('n', '?')} prompts).", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for metric in metrics:
        cells = []
        for name in names:
            value, stderr = models[name].get(metric), models[name].get(f"{metric}_stderr")
            cells.append("" if value is None else f"{_num(value)} ± {_num(stderr)}" if stderr is not None else _num(value))
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    for name, comparison in (result.get("paired") or {}).items():
        lines.append("")
        for metric, pc in comparison.items():
            if not isinstance(pc, dict):
                continue
            if "rate" in pc:
                lines.append(f"- {name} vs {names[0]}: {metric} {_num(pc['rate'])} ± {_num(pc.get('stderr'))} "
                             f"({pc.get('wins')} wins, {pc.get('ties')} ties, {pc.get('losses')} losses)")
            elif "diff" in pc:
                verdict = "" if pc.get("significant", True) else " (no measured difference: under two standard errors)"
                lines.append(f"- {name} - {names[0]} {metric}: {pc['diff']:+.4g} ± {_num(pc.get('diff_stderr'))}{verdict}")
    return lines


def _pair_accuracy(name: str, table: dict) -> list[str]:
    """The reward model's held-out pairs: accuracy overall, per rating, per category, safety P/R."""
    overall = table.get("overall") or {}
    lines = [f"**{name}**: accuracy {_num(overall.get('accuracy'))} on {overall.get('n')} pairs", ""]
    for group in ("per_rating", "per_category"):
        rows = table.get(group) or {}
        if rows:
            lines += [f"| {group.replace('_', ' ')} | accuracy | pairs |", "|---|---|---|"]
            lines += [f"| {key} | {_num(v.get('accuracy'))} | {v.get('n')} |" for key, v in rows.items() if isinstance(v, dict)]
            lines.append("")
    safety = table.get("safety")
    if isinstance(safety, dict):
        paper = table.get("safety_paper") or {}
        lines.append(f"Safety at threshold {safety.get('threshold')}: precision {_num(safety.get('precision'))}, "
                     f"recall {_num(safety.get('recall'))} (n = {safety.get('n')}"
                     + ("; calibrated probabilities, calibration.json" if safety.get("calibrated") else "")
                     + (f"; Llama 2: {paper.get('precision')}, {paper.get('recall')}" if paper else "") + ")")
    return lines


def _adherence(result: dict) -> list[str]:
    """GAtt's Table 30 layout: adherence per turn for each row."""
    table = result["table"]
    turns = sorted({int(t) for row in table.values() for t in row}, key=int)
    lines = ["Instruction adherence per turn (held-out instructions and dialogues):", "",
             "| | " + " | ".join(f"turn {t}" for t in turns) + " |", "|---|" + "---|" * len(turns)]
    for label, row in table.items():
        lines.append(f"| {label} | " + " | ".join(_num(row.get(str(t), row.get(t))) if row.get(str(t), row.get(t)) is not None
                                                   else "" for t in turns) + " |")
    return lines


def _numbers(result: dict, depth: int = 2, prefix: str = "") -> list[str]:
    """Any other layout: its numbers down to `depth` levels."""
    lines = []
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not VOLATILE.search(key):
            lines.append(f"- {prefix}{key}: {_num(value)}")
        elif isinstance(value, dict) and depth > 1:
            lines += _numbers(value, depth - 1, f"{prefix}{key}.")
    return lines


def evaluation_lines(name: str, result: dict) -> list[str]:
    if isinstance(result.get("models"), dict):
        return _shared_evaluation(result)
    if isinstance(result.get("table"), dict):
        return _adherence(result)
    tables = [(key, result[key]) for key in ("heldout", "toyworld") if isinstance(result.get(key), dict)]
    if tables:
        lines = []
        for key, table in tables:
            lines += _pair_accuracy("your held-out pairs" if key == "heldout" else "toyworld's held-out pairs", table) + [""]
        return lines
    return _numbers(result) or [f"(no figures in {name})"]


# -- the card -------------------------------------------------------------------------


def model_card_text(manifest: dict, config: dict, evaluations: dict[str, dict], stage_folder: str | os.PathLike) -> str:
    """The card's Markdown from the manifest, the resolved config and the evaluation files."""
    stage = manifest.get("stage", "?")
    title, command = STAGES.get(stage, (stage, f"rlhf {stage} --config {{config}}"))
    start = start_model(stage, config)
    base = root_base_model(start[1] if start else None)
    front = {"library_name": "transformers", "tags": ["llama-rlhf", stage, "rlhf"]}
    if base:
        front["base_model"] = base
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {title}: {Path(config.get('output_dir') or stage_folder).name}", "",
             f"Made by the `{stage}` stage of llama-rlhf, the Llama 2 recipe (arXiv 2307.09288) "
             f"(package {manifest.get('package_version', '?')}, commit {manifest.get('git_commit') or 'unknown'}); "
             f"stage folder `{stage_folder}` (its manifest.json has the times).", ""]

    lines += ["## Base model", ""]
    if start:
        lines.append(f"Started from `{start[1]}` (`{start[0]}`)." + (f" The lineage starts at `{base}`." if base and base != start[1] else ""))
    else:
        lines.append("The config names no starting model.")
    inputs = manifest.get("inputs") or {}
    models = [(name, spec) for name, spec in inputs.items() if name in MODEL_INPUTS]
    if models:
        lines += ["", "| model input | path | sha256 |", "|---|---|---|"]
        lines += [f"| {name} | `{spec.get('path')}` | {spec.get('sha256') or 'not local (hub id)'} |" for name, spec in models]

    lines += ["", "## Data", ""]
    data = [(name, spec) for name, spec in inputs.items() if name not in MODEL_INPUTS]
    generated = _toyworld_keys(config)
    if data:
        lines += ["| input | source | sha256 |", "|---|---|---|"]
        lines += [f"| {name} | `{spec.get('path')}` | "
                  f"{spec.get('sha256') or 'not a local file (hub dataset or callable; not hashed)'} |" for name, spec in data]
    if generated:
        lines += ["", "Generated in process by the embedded task world (toyworld; no file to hash), at "
                  + ", ".join(f"`{key}`" for key in generated) + "."]
    if not data and not generated:
        lines.append("The stage names no data inputs.")

    lines += ["", "## Key settings", "", "| key | value |", "|---|---|"]
    for key in KEY_SETTINGS.get(stage, ()):
        value = _get(config, key)
        if value is not None:
            lines.append(f"| `{key}` | {_num(value) if not isinstance(value, (list, dict)) else json.dumps(value)} |")
    lines += ["", "<details><summary>The whole resolved config</summary>", "", "```yaml",
              yaml.safe_dump(config, sort_keys=False).rstrip(), "```", "", "</details>"]

    lines += ["", "## Evaluation", ""]
    if evaluations:
        for name, result in evaluations.items():
            lines += [f"### {name}", "", *evaluation_lines(name, result), ""]
    else:
        lines.append("This stage wrote no evaluation.")

    lines += ["", "## Reproduce", "", "```bash", command.format(config=Path(stage_folder) / "config.yaml"), "```", ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | os.PathLike, stage_folder: str | os.PathLike, manifest: dict | None = None) -> Path:
    """Write `model_dir/README.md` from the stage folder's manifest.json (or the
    `manifest` about to be written there), config.yaml and evaluation files."""
    from core.run import CONFIG, read_manifest

    model_dir, stage_folder = Path(model_dir), Path(stage_folder)
    manifest = manifest if manifest is not None else read_manifest(stage_folder) or {}
    config = manifest.get("config")
    if not isinstance(config, dict):
        try:
            config = yaml.safe_load((stage_folder / CONFIG).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            config = {}
    evaluations = {}
    for name, path in (manifest.get("outputs") or {}).items():
        if "eval" in name and str(path).endswith(".json"):
            result = _read_json(Path(path))
            if isinstance(result, dict):
                evaluations[Path(path).name] = result
    if not evaluations and (stage_folder / "eval.json").is_file():
        result = _read_json(stage_folder / "eval.json")
        if isinstance(result, dict):
            evaluations["eval.json"] = result
    card = model_dir / CARD
    atomic_write_text(card, model_card_text(manifest, config, evaluations, stage_folder))  # a new file: never writes through a hard link
    return card


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.model_card", description="(Re)write a model folder's README.md model card.")
    parser.add_argument("model_dir")
    parser.add_argument("stage_folder")
    args = parser.parse_args(argv)
    print(write_model_card(args.model_dir, args.stage_folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
