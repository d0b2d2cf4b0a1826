"""Per-source config keys, the same names in every stage, and the report of what was left out.

A stage that reads a user's file names it in a source section. The keys that say
how to read it are the same for SFT sources, prompt sources and preference
sources, wherever they apply:

| key | applies to | meaning |
| --- | --- | --- |
| `adapter` | all | the format (`core.data.ADAPTERS`); unset: detected from the first record |
| `split` | all | the split of a folder (`<split>.<ext>`) or a hub dataset (UltraFeedback binarized: `train_prefs`, `test_prefs`) |
| `data_dir` | all | a hub dataset's folder, `load_dataset(..., data_dir=)` (HH-RLHF: `helpful-base`, `harmless-base`, ...); a local folder's subfolder if it has one; a file ignores it |
| `subset` | all | a hub dataset's config, `load_dataset(name, subset)` (PKU-SafeRLHF: `default`); a local source ignores it |
| `on_bad` | all | `error` (default): a bad row stops with file, line and field; `skip`: it is left out, counted and listed in the stage's `data_report.json` |
| `limit` | all | keep the first N rows of this source (unset: all) |
| `category` | prompts, pairs | `helpfulness` or `safety` for rows that carry none (HH-RLHF: beats the guess from the file name or `data_dir`; PKU-SafeRLHF: keep only that pair) |
| `default_rating` | pairs | the rating of pairs whose source has none (unset: the stage's own default) |
| `rating_thresholds` | pairs | three decreasing score gaps for scored data (UltraFeedback): significantly better, better, slightly better |

`SFTSourceKeys`, `PromptSourceKeys` and `PreferenceSourceKeys` hold them as strict
config models for stages to build their source sections on; `load_source` reads one
source with them; `data_report` / `write_data_report` give the stage folder's
`data_report.json` (per source: what was read, loaded and left out, and the first bad
rows with file, line and reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from core.config import StrictModel
from core.data.adapters import ADAPTERS
from core.data.loaders import LOCATED, LoadReport, OnBad, check_thresholds
from core.data.readers import Location
from core.data.schemas import Category, Rating


def known_adapter(name: str | None) -> str | None:
    if name is not None and name not in ADAPTERS:
        raise ValueError(f"unknown data adapter {name!r} (known: {', '.join(ADAPTERS)})")
    return name


def decreasing_gaps(gaps: tuple[float, float, float] | None):
    if gaps is not None:
        try:
            check_thresholds(gaps)
        except Exception as exc:  # ConfigError: pydantic wants a ValueError
            raise ValueError(str(exc)) from None
    return gaps


AdapterName = Annotated[str | None, AfterValidator(known_adapter)]
Thresholds = Annotated[tuple[float, float, float] | None, AfterValidator(decreasing_gaps)]
Limit = Annotated[int, Field(ge=1)] | None


class SFTSourceKeys(StrictModel):
    """How to read one source of any kind (the keys every kind shares)."""

    adapter: AdapterName = None
    split: str = "train"
    data_dir: str | None = None
    subset: str | None = None
    on_bad: OnBad = "error"
    limit: Limit = None


class PromptSourceKeys(SFTSourceKeys):
    category: Category | None = None


class PreferenceSourceKeys(PromptSourceKeys):
    default_rating: Rating | None = None
    rating_thresholds: Thresholds = None


def load_source(
    kind: str,
    source: str | Path,
    keys: SFTSourceKeys,
    *,
    report: LoadReport | None = None,
    adapter_key: str = "adapter",
    default_rating: str = "better",
    require_answer: bool = False,
) -> list[tuple[Location, dict]]:
    """`(location, canonical dict)` rows of one source read with its keys.

    `default_rating` is the stage's own default, used when `keys.default_rating` is
    unset; `adapter_key` is the key a format error tells the user to set."""
    options = {
        "split": keys.split,
        "data_dir": keys.data_dir,
        "subset": keys.subset,
        "on_bad": keys.on_bad,
        "limit": keys.limit,
        "adapter_key": adapter_key,
        "report": report,
    }
    if kind == "sft":
        options["require_answer"] = require_answer
    if kind in ("prompts", "preferences"):
        options["category"] = getattr(keys, "category", None)
    if kind == "preferences":
        options["default_rating"] = getattr(keys, "default_rating", None) or default_rating
        thresholds = getattr(keys, "rating_thresholds", None)
        if thresholds is not None:
            options["rating_thresholds"] = thresholds
    return LOCATED[kind](source, keys.adapter, **options)


def data_report(reports: list[LoadReport]) -> dict:
    """The `data_report.json` record of a stage's sources (per source and in all)."""
    return {
        "n_records": sum(r.n_records for r in reports),
        "n_loaded": sum(r.n_loaded for r in reports),
        "n_skipped": sum(r.n_skipped for r in reports),
        "sources": [r.to_dict() for r in reports],
    }


def write_data_report(folder: str | Path, reports: list[LoadReport], **extra) -> Path:
    """Write `folder/data_report.json` atomically; `extra` keys go in beside the counts."""
    from core.io import atomic_write_json

    path = Path(folder) / "data_report.json"
    atomic_write_json(path, {**data_report(reports), **extra})
    return path
