"""Data sources by name: toyworld is one source among a user's files.

A config names a source with a string: `toyworld` (the embedded task world) or
a local file / hub dataset read by `core.data`. This module is the one place
outside `toyworld/` that imports toyworld, and only when a config names it, so a
run on the user's own files never loads it.

    load_prompt_source(source, split, n, seed)   prompt records (RLHF and held-out prompts)
    toyworld_preference_pairs(split, n, seed)    toyworld's preference pairs (reward models)
    toyworld_gold_agreement(pairs)               its noise-free judge on them (RM accuracy ceiling)
    toyworld_dialogues(split, n, n_turns, seed)  toyworld's multi-turn dialogues (GAtt)
    toyworld_sft_examples(n, seed, weights)      toyworld's SFT demonstrations
    toyworld_instruction_library()               toyworld's GAtt instruction library
    toyworld_annotated_pairs(...)                toyworld's simulated annotators
    gold_judge(source)                           toyworld's gold judges, or None
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from core.data.sources import PromptSourceKeys
from core.errors import DataError

TOYWORLD = "toyworld"


class PromptSource(PromptSourceKeys):
    """A prompt source with the keys every stage shares:
    `{source: FILE_OR_HUB_ID, adapter, split, data_dir, subset, category, on_bad, limit}`.
    Configs take this or a bare name (`toyworld`, a file, a hub id)."""

    source: str


PromptSourceSpec = str | PromptSource


def source_name(source: str | PromptSource | None) -> str | None:
    """The name of a source given as a string or as a section with `source`."""
    return getattr(source, "source", source)


def describe_source(source: str | PromptSource) -> str:
    """`name`, with its hub part and split when they are set (for logs and --check)."""
    if isinstance(source, str):
        return source
    parts = [source.source] + ([source.data_dir] if source.data_dir else [])
    return "/".join(parts) + (f" [{source.split}]" if source.split != "train" else "")


def is_toyworld(source) -> bool:
    return source_name(source) == TOYWORLD


def load_prompt_source(source, split: str = "train", n: int | None = None, seed: int = 0, *,
                       report=None, key: str | None = None) -> list[dict]:
    """Prompt records `{"messages", "category", "id", ...}` with unique ids.

    `source` is a name (`toyworld`, a file, a folder or a hub dataset) or a section
    with `source` and the per-source keys of `core.data.PromptSourceKeys` (adapter,
    split, data_dir, subset, category, on_bad, limit), e.g. RS's `prompts`.

    toyworld: its `train` split, or for `heldout` the evaluation set (the held-out
    mix plus every held-out borderline prompt), `n` of them drawn with `seed`.
    Anything else is read through `core.data` in any prompt format (prompt records,
    HH-RLHF transcripts give their shared turns, PKU-SafeRLHF and UltraFeedback their
    prompts, ...) with the section's keys (a bare name: the defaults, split `train`),
    then its first `n` prompts are kept (None: all). `report` (a `core.data.LoadReport`)
    gets what was read and left out; `key` (e.g. `prompts`) names the config section in
    format errors.
    """
    keys = None
    if not isinstance(source, (str, os.PathLike)):
        keys, source = source, source.source
    source = os.fspath(source)
    if is_toyworld(source):
        from toyworld.world import build_eval_prompts, build_prompts

        prompts = build_eval_prompts(n or 120, seed=seed) if split == "heldout" else build_prompts(split, n=n, seed=seed)
    else:
        from core.data import PromptSourceKeys, load_source

        located = load_source("prompts", source, keys if keys is not None else PromptSourceKeys(), report=report,
                              adapter_key=f"{key}.adapter" if key else "adapter")
        prompts = [row for _, row in located]
        prompts = prompts[:n] if n is not None else prompts
    if not prompts:
        raise DataError("no prompts", path=source)
    seen: set[str] = set()
    for prompt in prompts:
        if prompt["id"] in seen:
            raise DataError(f"duplicate prompt id {prompt['id']!r}", path=source, field="id")
        seen.add(prompt["id"])
    return prompts


def toyworld_sft_examples(n: int, seed: int, family_weights: dict[str, float] | None = None) -> list[dict]:
    """toyworld's train-split SFT demonstrations `{"messages": [...], ...}`."""
    from toyworld.world import build_sft_examples

    return build_sft_examples("train", n=n, seed=seed, weights=family_weights)


def toyworld_instruction_library():
    """toyworld's GAtt instruction library (module `toyworld.gatt_instructions`: KINDS,
    build_instructions, single_instructions, make_instruction, ...)."""
    import toyworld.gatt_instructions as library

    return library


def toyworld_preference_pairs(split: str, n: int, seed: int) -> list[dict]:
    """toyworld's templated preference pairs of `split` (`train` or `heldout`), in the canonical schema."""
    from toyworld.world import build_preference_pairs

    return build_preference_pairs(split, n, seed)


def toyworld_gold_agreement(pairs: list[dict]) -> list[float]:
    """Per toyworld pair, 1 where its noise-free judge prefers the chosen answer, 0.5 for a tie, else 0."""
    from toyworld.annotators import gold_agreement

    return [gold_agreement(pair) for pair in pairs]


def toyworld_dialogues(split: str, n: int, n_turns: int, seed: int) -> list[dict]:
    """toyworld's multi-turn dialogues `{"id", "messages"}` of `split` (GAtt)."""
    from toyworld.world import build_dialogues

    return build_dialogues(split, n, n_turns, seed)


def check_toyworld_family_weights(weights: dict[str, float] | None) -> None:
    """Raises ValueError on an unknown toyworld family, naming the known ones."""
    if weights is not None:
        from toyworld.world import family_weights

        family_weights(weights)


def toyworld_guideline_share() -> float:
    """The share of safety prompts toyworld's annotators rate under the helpfulness guideline."""
    from toyworld.annotators import HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS

    return HELPFULNESS_GUIDELINE_SHARE_OF_SAFETY_PROMPTS


def toyworld_annotated_pairs(prompts_and_answers: list[tuple[dict, str, str]], seed: int, noise: float,
                             share: float | None = None) -> list[dict]:
    """Preference pairs of two answers per toyworld prompt, labelled by its simulated
    annotators under the protocol of its templated pairs (a `share` of the safety
    prompts rated under the helpfulness guideline; None: toyworld's own share)."""
    import random

    from toyworld.annotators import guideline_for
    from toyworld.world import annotate

    rng = random.Random(seed)
    share = toyworld_guideline_share() if share is None else share
    return [annotate(p["messages"], a, b, rng, noise=noise, category=guideline_for(p["category"], rng, share), source="toyworld-refresh")
            for p, a, b in prompts_and_answers]


@dataclass(frozen=True)
class GoldJudge:
    """A ground-truth judge of a task world.

    combined(prompt_record, response) -> [0, 1]: the gated gold score of one answer;
    combined_messages(messages, response) -> [0, 1]: the same for a bare prompt;
    helpfulness(messages, response) -> [0, 1]: the gold helpfulness of one answer;
    metrics(prompt_records, responses) -> dict: means and standard errors by family.
    """

    combined: Callable[[dict, str], float]
    combined_messages: Callable[[list[dict] | str, str], float]  # the category inferred from the prompt
    helpfulness: Callable[[list[dict], str], float]
    metrics: Callable[[list[dict], list[str]], dict]


def gold_judge(source: str) -> GoldJudge | None:
    """toyworld's gold judges when the prompts are toyworld's; None for any other source."""
    if not is_toyworld(source):
        return None
    from toyworld.gold import combined_score, combined_score_of_messages, gold_metrics
    from toyworld.judges import helpfulness

    return GoldJudge(combined=combined_score, combined_messages=combined_score_of_messages, helpfulness=helpfulness, metrics=gold_metrics)
