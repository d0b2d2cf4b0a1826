"""The one before/after evaluation of policies, used by SFT, RS, PPO, GAtt and the pipeline.

On the same held-out prompts (a prompt source: the user's file, or toyworld's
held-out set) every model answers once with the section's sampling, and each
answer gets, per prompt:

    rm_reward        Llama 2's gated reward R_c from the reward models (when given)
    refusal_rate     1 if the string-match refusal detector (`core.refusal`) fires
    response_length  answer length in tokens of the evaluated model's tokenizer
    truncation_rate  1 if the answer was cut at max_new_tokens (no end-of-turn token)
    gold_combined    toyworld's gated gold score, only when the prompts are toyworld's

Each model's summary holds the means with their standard errors (plus toyworld's
gold breakdown when it applies). Every later model is compared with the first one
(the start) on the same prompts: a paired difference with its standard error and
wins/losses per metric, and the win rate judged by the reward models (share of
prompts where its answer's R_c beats the start's; ties count half). A gain under
two standard errors is no measured gain: `paired_comparison` says which.
"""

from __future__ import annotations

import gc
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from core.config import StrictModel
from core.generation import SamplingConfig, generate
from core.sources import PromptSourceSpec

# Per-prompt columns every evaluation has (rm_reward and gold_combined only when they apply).
COLUMNS = ("rm_reward", "refusal_rate", "response_length", "truncation_rate", "gold_combined")


class HeldoutEval(StrictModel):
    """The before/after evaluation's settings; the same keys in every stage."""

    enabled: bool = True
    # A prompt source: `toyworld` (its held-out evaluation set), a file or hub dataset of
    # prompts in any format core.data reads (the user's held-out prompts), or a section
    # `{source: ..., split: test, data_dir: ..., category: ...}` with the shared keys.
    prompts: PromptSourceSpec = "toyworld"
    n_prompts: int | None = Field(default=120, ge=1)  # the first N (toyworld: N drawn); None: all
    seed: int = 0
    # Greedy by default: a before/after difference is then the models', not the dice's.
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=48, temperature=0.0, batch_size=16)


def check_heldout_source(section: HeldoutEval, data_source, data_key: str) -> None:
    """A stage trained on the user's data must not evaluate on toyworld's prompts by
    default: ValueError naming `eval.prompts` when the section left it unset."""
    from core.sources import is_toyworld

    if section.enabled and "prompts" not in section.model_fields_set and not is_toyworld(data_source):
        raise ValueError(f"eval.prompts: {data_key} is your own data, but the held-out evaluation would use toyworld's "
                         "prompts (the default); set eval.prompts to your held-out prompts, or eval.enabled=false")


# ---------------------------------------------------------------- statistics (pure)


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, stderr


def paired_comparison(after: Sequence[float], before: Sequence[float]) -> dict:
    """Per-prompt paired difference `after - before`: means, stderrs, the difference's
    mean ± stderr, wins/losses, and `significant` (|diff| > 2 stderr).

    Paired because both lists score the same prompts: the stderr of the mean
    difference is the right yardstick for "better by more than noise".
    """
    if len(after) != len(before):
        raise ValueError(f"paired lists differ in length: {len(after)} vs {len(before)}")
    diffs = [a - b for a, b in zip(after, before)]
    a_mean, a_se = mean_stderr(after)
    b_mean, b_se = mean_stderr(before)
    d_mean, d_se = mean_stderr(diffs)
    return {
        "n": len(diffs),
        "after": a_mean,
        "after_stderr": a_se,
        "before": b_mean,
        "before_stderr": b_se,
        "diff": d_mean,
        "diff_stderr": d_se,
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "significant": len(diffs) > 1 and d_se > 0 and abs(d_mean) > 2 * d_se,
    }


def win_rate(after: Sequence[float], before: Sequence[float]) -> dict:
    """Share of prompts where `after` beats `before` (ties count half), with its stderr."""
    if len(after) != len(before) or not after:
        raise ValueError(f"win_rate needs two equally long, non-empty lists, got {len(after)} and {len(before)}")
    outcomes = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(after, before)]
    rate, stderr = mean_stderr(outcomes)
    return {"rate": rate, "stderr": stderr, "wins": outcomes.count(1.0), "ties": outcomes.count(0.5), "losses": outcomes.count(0.0)}


def summarize(columns: dict[str, list[float]]) -> dict:
    """{column: mean, column_stderr: stderr} for every non-empty column."""
    summary: dict = {}
    for name, values in columns.items():
        if values:
            summary[name], summary[f"{name}_stderr"] = mean_stderr(values)
    return summary


def compare(after: dict[str, list[float]], before: dict[str, list[float]]) -> dict:
    """Paired differences per shared column, and the RM win rate when both have rewards."""
    result = {name: paired_comparison(after[name], before[name]) for name in after if name in before and after[name] and before[name]}
    if after.get("rm_reward") and before.get("rm_reward"):
        result["rm_win_rate"] = win_rate(after["rm_reward"], before["rm_reward"])
    return result


# ---------------------------------------------------------------- answers and scores


@dataclass(frozen=True)
class Answers:
    """One model's answers to the held-out prompts (same order)."""

    responses: list[str]
    finished: list[bool]  # False: cut at max_new_tokens
    lengths: list[int]  # tokens, in the answering model's tokenizer

    def to_rows(self) -> list[dict]:
        return [{"response": r, "finished": f, "length": n} for r, f, n in zip(self.responses, self.finished, self.lengths)]

    @classmethod
    def from_rows(cls, rows: list[dict]) -> Answers:
        return cls([r["response"] for r in rows], [bool(r["finished"]) for r in rows], [int(r["length"]) for r in rows])


def answer_prompts(model, tokenizer, prompts: list[dict], sampling: SamplingConfig, progress: bool = True, description: str = "eval") -> Answers:
    """One answer per prompt record, with whether it finished and its token length."""
    responses, finished = generate(model, tokenizer, [p["messages"] for p in prompts], sampling,
                                   progress=progress, description=description, with_finished=True)
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    return Answers(responses, finished, lengths)


def score_answers(prompts: list[dict], answers: Answers, scorer=None, gold=None) -> dict[str, list[float]]:
    """Per-prompt columns (see the module docstring) of one model's answers.

    `scorer`: a `reward.gated.GatedScorer` or None; `gold`: a `core.sources.GoldJudge` or None.
    """
    from core.refusal import is_refusal

    columns: dict[str, list[float]] = {
        "refusal_rate": [float(is_refusal(r)) for r in answers.responses],
        "response_length": [float(n) for n in answers.lengths],
        "truncation_rate": [0.0 if done else 1.0 for done in answers.finished],
    }
    if scorer is not None:
        columns["rm_reward"] = scorer.score(prompts, answers.responses, where="the held-out evaluation").reward.tolist()
    if gold is not None:
        columns["gold_combined"] = [gold.combined(p, r) for p, r in zip(prompts, answers.responses)]
    return columns


def model_summary(prompts: list[dict], answers: Answers, columns: dict[str, list[float]], gold=None) -> dict:
    """A model's summary: n_prompts, means ± stderr of every column, toyworld's gold breakdown."""
    summary = {"n_prompts": len(prompts), **summarize(columns)}
    if gold is not None:
        summary.update(gold.metrics(prompts, answers.responses))
    return summary


# ---------------------------------------------------------------- the service


def evaluate_models(
    models: dict[str, str],
    section: HeldoutEval,
    reward_models=None,
    dtype: str = "float32",
    device: str = "auto",
    progress: bool = True,
    cached: dict[str, Answers] | None = None,
    prompts: list[dict] | None = None,
    with_columns: bool = False,
) -> dict:
    """Evaluate every model of `{name: model folder}` on the same held-out prompts.

    The first model is the start every other one is compared with. `reward_models`
    is a `reward.gated.RewardModelsSection` (None or unconfigured: no RM metrics);
    `cached` holds answers already made with the same prompts and sampling (a
    resumed stage does not answer again). Returns
    `{"prompts", "sampling", "models": {name: summary}, "paired": {name: comparison},
    "answers": {name: Answers}, "prompt_records": [...]}`, with `with_columns` also
    `"columns": {name: per-prompt columns}` (`compare(columns[a], columns[b])` pairs any
    two models; rejection sampling pairs its model with each control arm).
    """
    from core.device import resolve_device
    from core.models import load_model_and_tokenizer
    from core.sources import describe_source, gold_judge, load_prompt_source

    prompts = prompts if prompts is not None else load_prompt_source(section.prompts, "heldout", section.n_prompts, section.seed, key="eval.prompts")
    gold = gold_judge(section.prompts)
    answers: dict[str, Answers] = dict(cached or {})
    for name, path in models.items():
        if name in answers:
            continue
        model, tokenizer = load_model_and_tokenizer(path, dtype=dtype, device=resolve_device(device))
        answers[name] = answer_prompts(model, tokenizer, prompts, section.sampling, progress=progress, description=f"eval {name}")
        del model, tokenizer
        gc.collect()
    scorer = None
    if reward_models is not None and reward_models.configured:
        from reward.gated import GatedScorer

        scorer = GatedScorer(reward_models, device=device if device != "auto" else None)
    columns = {name: score_answers(prompts, answers[name], scorer, gold) for name in models}
    del scorer
    gc.collect()
    names = list(models)
    result = {
        "prompts": {"source": describe_source(section.prompts), "n": len(prompts), "split": "heldout"},
        "sampling": section.sampling.model_dump(),
        "reward_models": reward_models.model_dump() if reward_models is not None and reward_models.configured else None,
        "models": {name: {"model": str(models[name]), **model_summary(prompts, answers[name], columns[name], gold)} for name in names},
        "paired": {name: compare(columns[name], columns[names[0]]) for name in names[1:]},
        "answers": answers,
        "prompt_records": prompts,
    }
    return {**result, "columns": columns} if with_columns else result


def samples_rows(result: dict) -> list[dict]:
    """One JSONL row per held-out prompt with every model's answer (for eval_samples.jsonl)."""
    rows = []
    for i, prompt in enumerate(result["prompt_records"]):
        row = {"id": prompt["id"], "category": prompt.get("category"), "kind": prompt.get("kind"), "prompt": prompt["messages"]}
        for name, answers in result["answers"].items():
            row[name] = answers.responses[i]
            row[f"{name}_finished"] = answers.finished[i]
            row[f"{name}_length"] = answers.lengths[i]
        rows.append(row)
    return rows


def models_in_samples(row: dict) -> list[str]:
    """The model names of one `samples_rows` row, in order (each has a `<name>_finished` column)."""
    return [key for key in row if f"{key}_finished" in row]


def answers_from_samples(rows: list[dict], name: str) -> Answers:
    """Model `name`'s answers back from `samples_rows` rows (the inverse, for one model)."""
    return Answers([r[name] for r in rows], [r[f"{name}_finished"] for r in rows], [r[f"{name}_length"] for r in rows])


def save_evaluation(result: dict, out: Path, name: str = "eval") -> Path:
    """`out/<name>.json` (summaries and comparisons) and `out/<name>_samples.jsonl` (every answer)."""
    from core.io import atomic_write_json, write_jsonl

    write_jsonl(out / f"{name}_samples.jsonl", samples_rows(result))
    payload = {key: value for key, value in result.items() if key not in ("answers", "columns", "prompt_records")}
    atomic_write_json(out / f"{name}.json", payload)
    return out / f"{name}.json"


def format_table(result: dict) -> str:
    """A plain-text before/after table: each model's means ± stderr, then each paired difference."""
    names = list(result["models"])
    metrics = [m for m in (*COLUMNS, "gold_helpfulness", "gold_safety") if any(result["models"][n].get(m) is not None for n in names)]
    lines = [f"{'metric':<20}" + "".join(f"{n:>22}" for n in names)]
    for metric in metrics:
        cells = []
        for n in names:
            value, se = result["models"][n].get(metric), result["models"][n].get(f"{metric}_stderr")
            cells.append(f"{value:>13.3f} ± {se:<6.3f}" if value is not None else f"{'-':>22}")
        lines.append(f"{metric:<20}" + "".join(cells))
    for n, comparison in result["paired"].items():
        for metric, pc in comparison.items():
            if metric == "rm_win_rate":
                lines.append(f"{n} vs {names[0]}: RM win rate {pc['rate']:.3f} ± {pc['stderr']:.3f} "
                             f"({pc['wins']} wins, {pc['ties']} ties, {pc['losses']} losses)")
            else:
                verdict = "" if pc["significant"] else " (no measured difference)"
                lines.append(f"{n} - {names[0]} {metric}: {pc['diff']:+.3f} ± {pc['diff_stderr']:.3f}{verdict}")
    return "\n".join(lines)
