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

With `sampled: {samples_per_prompt: N, temperature: T}` each model also answers every
prompt N times at temperature T (the training temperature), and the same columns
come back as `sampled_<column>`: per prompt, the mean over its N samples, so a paired
difference stays per prompt with its standard error over prompts. Sample round j of
every model is drawn with the seed `sampled.seed + j * SEED_STRIDE` (+ the batch index,
`core.generation`), and a model with the same tokenizer puts the same prompts in the
same batch rows: every model sees the same random numbers on the same prompt (common
random numbers), so the paired difference measures the models, not the dice.
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
SAMPLED = "sampled_"  # the prefix of the same columns at the training temperature


# Sample round j starts its batches' seeds at `sampled.seed + j * SEED_STRIDE` (batch b adds b).
SEED_STRIDE = 100_003


class SampledEval(StrictModel):
    """Several answers per prompt at the training temperature, beside the greedy one."""

    samples_per_prompt: int = Field(default=4, ge=0)  # 0: off
    temperature: float = Field(default=0.7, gt=0)  # the stage's sampling temperature; greedy is `sampling`
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 1234

    @property
    def enabled(self) -> bool:
        return self.samples_per_prompt > 0

    def round_seeds(self) -> list[int]:
        """The first batch seed of each sample round (the same for every model)."""
        return [self.seed + j * SEED_STRIDE for j in range(self.samples_per_prompt)]

    def round_sampling(self, sampling: SamplingConfig, round_seed: int) -> SamplingConfig:
        """`sampling` (its length cap and batch size) at this section's temperature and a round's seed."""
        return sampling.model_copy(update={"temperature": self.temperature, "top_p": self.top_p, "seed": round_seed})


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
    # Also N answers per prompt at the training temperature (`sampled_*` metrics); None or
    # samples_per_prompt 0: off (the stages' default: it costs N greedy evaluations).
    sampled: SampledEval | None = None

    @property
    def sampled_on(self) -> SampledEval | None:
        """The sampled section when it asks for samples, else None."""
        return self.sampled if self.sampled is not None and self.sampled.enabled else None


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
    """Paired differences per shared column (greedy and `sampled_*` alike), and the RM
    win rate when both have rewards (`sampled_rm_win_rate`: on the per-prompt means)."""
    result = {name: paired_comparison(after[name], before[name]) for name in after if name in before and after[name] and before[name]}
    for prefix in ("", SAMPLED):
        if after.get(f"{prefix}rm_reward") and before.get(f"{prefix}rm_reward"):
            result[f"{prefix}rm_win_rate"] = win_rate(after[f"{prefix}rm_reward"], before[f"{prefix}rm_reward"])
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


def answer_prompts_sampled(model, tokenizer, prompts: list[dict], sampling: SamplingConfig, sampled: SampledEval,
                           progress: bool = True, description: str = "eval") -> list[Answers]:
    """`sampled.samples_per_prompt` rounds of one answer per prompt at `sampled.temperature`
    (round j with seed `sampled.round_seeds()[j]`); `sampling` gives the length cap and batch size."""
    return [answer_prompts(model, tokenizer, prompts, sampled.round_sampling(sampling, seed), progress=progress,
                           description=f"{description} sample {j + 1}/{sampled.samples_per_prompt}")
            for j, seed in enumerate(sampled.round_seeds())]


def per_prompt_means(values: list[float], n_prompts: int) -> list[float]:
    """(R * n,) round-major values -> (n,) each prompt's mean over its R rounds."""
    if not n_prompts or len(values) % n_prompts:
        raise ValueError(f"{len(values)} values are not whole rounds of {n_prompts} prompts")
    rounds = len(values) // n_prompts
    return [statistics.fmean(values[j * n_prompts + i] for j in range(rounds)) for i in range(n_prompts)]


def score_sampled(prompts: list[dict], rounds: list[Answers], scorer=None, gold=None) -> dict[str, list[float]]:
    """Per-prompt `sampled_<column>`s: each prompt's mean over its samples (all rounds
    scored in one pass; `score_answers`' columns)."""
    flat = Answers([r for a in rounds for r in a.responses], [f for a in rounds for f in a.finished], [n for a in rounds for n in a.lengths])
    columns = score_answers(prompts * len(rounds), flat, scorer, gold)
    return {f"{SAMPLED}{name}": per_prompt_means(values, len(prompts)) for name, values in columns.items()}


def sampled_summary(prompts: list[dict], rounds: list[Answers], columns: dict[str, list[float]], gold=None) -> dict:
    """`sampled_samples_per_prompt`, means ± stderr (over prompts) of the `sampled_*`
    columns and toyworld's gold breakdown of the samples, each prompt its samples' mean."""
    summary = {f"{SAMPLED}samples_per_prompt": len(rounds), **summarize(columns)}
    if gold is not None:
        per_prompt = [[a.responses[i] for a in rounds] for i in range(len(prompts))]
        summary.update({f"{SAMPLED}{key}": value for key, value in gold.metrics(prompts, per_prompt).items()})
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
    cached_sampled: dict[str, list[Answers]] | None = None,
) -> dict:
    """Evaluate every model of `{name: model folder}` on the same held-out prompts.

    The first model is the start every other one is compared with. `reward_models`
    is a `reward.gated.RewardModelsSection` (None or unconfigured: no RM metrics);
    `cached` holds greedy answers already made with the same prompts and sampling (a
    resumed stage does not answer again), `cached_sampled` the sample rounds of
    `section.sampled` (a model is loaded only for what is missing). Returns
    `{"prompts", "sampling", "models": {name: summary}, "paired": {name: comparison},
    "answers": {name: Answers}, "prompt_records": [...]}`, with `section.sampled` on also
    `"sampled"` (its settings and round seeds) and `"sampled_answers": {name: [Answers per
    round]}`, and `"columns": {name: per-prompt columns}` (`compare(columns[a], columns[b])`
    pairs any two models; rejection sampling pairs its model with each control arm;
    `samples_rows` keeps each answer's RM reward).
    """
    from core.device import resolve_device
    from core.models import load_model_and_tokenizer
    from core.sources import describe_source, gold_judge, load_prompt_source

    prompts = prompts if prompts is not None else load_prompt_source(section.prompts, "heldout", section.n_prompts, section.seed, key="eval.prompts")
    gold = gold_judge(section.prompts)
    sampled = section.sampled_on
    answers: dict[str, Answers] = dict(cached or {})
    rounds: dict[str, list[Answers]] = {name: r for name, r in (cached_sampled or {}).items()
                                        if sampled and len(r) == sampled.samples_per_prompt and all(len(a.responses) == len(prompts) for a in r)}
    for name, path in models.items():
        if name in answers and (sampled is None or name in rounds):
            continue
        model, tokenizer = load_model_and_tokenizer(path, dtype=dtype, device=resolve_device(device))
        if name not in answers:
            answers[name] = answer_prompts(model, tokenizer, prompts, section.sampling, progress=progress, description=f"eval {name}")
        if sampled is not None and name not in rounds:
            rounds[name] = answer_prompts_sampled(model, tokenizer, prompts, section.sampling, sampled, progress=progress, description=f"eval {name}")
        del model, tokenizer
        gc.collect()
    scorer = None
    if reward_models is not None and reward_models.configured:
        from reward.gated import GatedScorer

        scorer = GatedScorer(reward_models, device=device if device != "auto" else None)
    columns = {name: score_answers(prompts, answers[name], scorer, gold) for name in models}
    if sampled is not None:
        for name in models:
            columns[name].update(score_sampled(prompts, rounds[name], scorer, gold))
    del scorer
    gc.collect()
    names = list(models)
    summaries = {name: {"model": str(models[name]), **model_summary(prompts, answers[name], columns[name], gold),
                        **(sampled_summary(prompts, rounds[name], {k: v for k, v in columns[name].items() if k.startswith(SAMPLED)}, gold)
                           if sampled is not None else {})}
                 for name in names}
    result = {
        "prompts": {"source": describe_source(section.prompts), "n": len(prompts), "split": "heldout"},
        "sampling": section.sampling.model_dump(),
        "dtype": dtype,  # the weights the models answered with
        **({"sampled": {**sampled.model_dump(), "round_seeds": sampled.round_seeds()}} if sampled is not None else {}),
        "reward_models": reward_models.model_dump() if reward_models is not None and reward_models.configured else None,
        "models": summaries,
        "paired": {name: compare(columns[name], columns[names[0]]) for name in names[1:]},
        "answers": answers,
        "prompt_records": prompts,
        **({"sampled_answers": {name: rounds[name] for name in names}} if sampled is not None else {}),
    }
    return {**result, "columns": columns}


def samples_rows(result: dict) -> list[dict]:
    """One JSONL row per held-out prompt with every model's answer (for eval_samples.jsonl)
    and, where reward models scored it, its RM reward (`<name>_rm_reward`): the one
    per-prompt score that cannot be recomputed from the text without the RMs, kept so
    that the report can pair the RM reward of two versions' evaluations."""
    rows = []
    columns = result.get("columns") or {}
    for i, prompt in enumerate(result["prompt_records"]):
        row = {"id": prompt["id"], "category": prompt.get("category"), "kind": prompt.get("kind"), "prompt": prompt["messages"]}
        for name, answers in result["answers"].items():
            row[name] = answers.responses[i]
            row[f"{name}_finished"] = answers.finished[i]
            row[f"{name}_length"] = answers.lengths[i]
            if "rm_reward" in columns.get(name, {}):
                row[f"{name}_rm_reward"] = columns[name]["rm_reward"][i]
        rows.append(row)
    return rows


def models_in_samples(row: dict) -> list[str]:
    """The model names of one `samples_rows` row, in order (each has a `<name>_finished` column)."""
    return [key for key in row if f"{key}_finished" in row]


def answers_from_samples(rows: list[dict], name: str) -> Answers:
    """Model `name`'s answers back from `samples_rows` rows (the inverse, for one model)."""
    return Answers([r[name] for r in rows], [r[f"{name}_finished"] for r in rows], [r[f"{name}_length"] for r in rows])


def sampled_rows(result: dict) -> list[dict]:
    """One JSONL row per (sample round, held-out prompt) with every model's sampled answer
    (for eval_sampled.jsonl): `{id, round, seed, <name>, <name>_finished, <name>_length}`."""
    rows = []
    seeds = result["sampled"]["round_seeds"]
    for j, seed in enumerate(seeds):
        for i, prompt in enumerate(result["prompt_records"]):
            row = {"id": prompt["id"], "round": j, "seed": seed}
            for name, rounds in result["sampled_answers"].items():
                row[name] = rounds[j].responses[i]
                row[f"{name}_finished"] = rounds[j].finished[i]
                row[f"{name}_length"] = rounds[j].lengths[i]
            rows.append(row)
    return rows


def sampled_answers_from_rows(rows: list[dict], name: str, sampled: SampledEval) -> list[Answers] | None:
    """Model `name`'s sample rounds back from `sampled_rows` rows, or None when the rows
    were made with other seeds or another number of rounds, or rounds cover other prompts."""
    by_round: dict[int, list[dict]] = {}
    for row in rows:
        by_round.setdefault(row["round"], []).append(row)
    seeds = sampled.round_seeds()
    if sorted(by_round) != list(range(len(seeds))) or any(name not in row for row in rows):
        return None
    ids = [row["id"] for row in by_round[0]]
    if any(by_round[j][0]["seed"] != seed or [r["id"] for r in by_round[j]] != ids for j, seed in enumerate(seeds)):
        return None
    return [answers_from_samples(by_round[j], name) for j in range(len(seeds))]


def save_evaluation(result: dict, out: Path, name: str = "eval") -> Path:
    """`out/<name>.json` (summaries and comparisons), `out/<name>_samples.jsonl` (every
    greedy answer) and, with sampled evaluation, `out/<name>_sampled.jsonl` (every sample)."""
    from core.io import atomic_write_json, write_jsonl

    write_jsonl(out / f"{name}_samples.jsonl", samples_rows(result))
    if result.get("sampled_answers"):
        write_jsonl(out / f"{name}_sampled.jsonl", sampled_rows(result))
    payload = {key: value for key, value in result.items() if key not in ("answers", "sampled_answers", "columns", "prompt_records")}
    atomic_write_json(out / f"{name}.json", payload)
    return out / f"{name}.json"


def format_table(result: dict) -> str:
    """A plain-text before/after table: each model's means ± stderr, then each paired difference."""
    names = list(result["models"])
    greedy = (*COLUMNS, "gold_helpfulness", "gold_safety")
    metrics = [m for m in (*greedy, *(f"{SAMPLED}{m}" for m in greedy)) if any(result["models"][n].get(m) is not None for n in names)]
    width = max(20, *(len(m) + 1 for m in metrics))
    lines = [f"{'metric':<{width}}" + "".join(f"{n:>22}" for n in names)]
    for metric in metrics:
        cells = []
        for n in names:
            value, se = result["models"][n].get(metric), result["models"][n].get(f"{metric}_stderr")
            cells.append(f"{value:>13.3f} ± {se:<6.3f}" if value is not None else f"{'-':>22}")
        lines.append(f"{metric:<{width}}" + "".join(cells))
    for n, comparison in result["paired"].items():
        for metric, pc in comparison.items():
            if "rate" in pc:  # rm_win_rate, sampled_rm_win_rate
                label = "RM win rate" if metric == "rm_win_rate" else f"{metric.removesuffix('_win_rate')} win rate"
                lines.append(f"{n} vs {names[0]}: {label} {pc['rate']:.3f} ± {pc['stderr']:.3f} "
                             f"({pc['wins']} wins, {pc['ties']} ties, {pc['losses']} losses)")
            else:
                verdict = "" if pc["significant"] else " (no measured difference)"
                lines.append(f"{n} - {names[0]} {metric}: {pc['diff']:+.3f} ± {pc['diff_stderr']:.3f} "
                             f"({pc['wins']} wins, {pc['losses']} losses){verdict}")
    return "\n".join(lines)
