"""Loaders: a source (file, folder, hub name) -> validated canonical dicts of one kind.

Every loader reads the records (`load_records`), converts them with the named or
detected adapter, and checks each result against the strict schema. A bad record
raises `DataError` (`file, line N, field 'x': what is wrong`) unless
`on_bad="skip"`, which leaves it out and counts it in the `LoadReport` (and logs
a warning with the first one): nothing is dropped silently. A line of a JSON-lines
file that is not a JSON object (broken JSON, bad UTF-8) is a bad record too, raised
or skipped in file order like the others; every other file-level problem (no such
file, a malformed JSON list or CSV, a format that cannot be told) always raises.

`limit` keeps the first N canonical rows of a source: records after them are not
converted, so a bad record past the limit neither stops nor counts.

`load_sft`, `load_prompts` and `load_preferences` return the canonical dicts;
`located_sft`, `located_prompts` and `located_preferences` return
`(location, dict)` pairs, for stages that name a row's file and line later.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from core.data.adapters import ADAPTERS, AdapterOptions, Converter, adapters_for, detect_adapter
from core.data.readers import Location, describe_source, load_records
from core.data.schemas import (
    CATEGORIES,
    RATINGS,
    RecordError,
    preference_record,
    prompt_record,
    sft_record,
)
from core.errors import ConfigError, DataError

log = logging.getLogger("core.data")

OnBad = Literal["error", "skip"]
KIND_NAMES = {"sft": "SFT examples", "prompts": "prompts", "preferences": "preference pairs"}
EMPTY_SOURCE = {
    "sft": "no records: no conversations to learn from",
    "prompts": "no records: no prompts",
    "preferences": "no records: no preference pairs",
}
MAX_LISTED = 20  # bad records listed by name in a report (all are counted)


@dataclass
class LoadReport:
    """What a loader read, kept and left out (fill one by passing `report=`)."""

    source: str = ""
    adapter: str = ""
    n_records: int = 0
    n_loaded: int = 0
    n_skipped: int = 0
    first_skipped: str | None = None
    n_too_long: int = 0
    first_too_long: str | None = None
    # the first MAX_LISTED bad records' errors (`file, line N, field 'x': why`), in file order
    skipped: list[str] = field(default_factory=list)
    limit: int | None = None
    n_read: int = 0  # records looked at (fewer than n_records when `limit` was reached)

    def skip(self, error: DataError) -> None:
        self.n_skipped += 1
        self.first_skipped = self.first_skipped or str(error)
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append(str(error))

    def to_dict(self) -> dict:
        return asdict(self)

    def too_long(self, location: Location, detail: str) -> None:
        self.n_too_long += 1
        self.first_too_long = self.first_too_long or f"{location}: {detail}"

    def summary(self) -> str:
        text = (
            f"{self.source} ({self.adapter}): {self.n_loaded} loaded from {self.n_records} records"
        )
        if self.limit is not None and self.n_read < self.n_records:
            text += f" (limit {self.limit}: read the first {self.n_read})"
        if self.n_skipped:
            text += f"; {self.n_skipped} bad records left out (first: {self.first_skipped})"
        if self.n_too_long:
            text += f"; {self.n_too_long} too long, left out (first: {self.first_too_long})"
        return text


# ---------------------------------------------------------------- 1. the shared loop
def choose_converter(
    kind: str, adapter: str | None, first: tuple[Location, dict], adapter_key: str = "adapter"
) -> tuple[str, Converter]:
    """The named adapter's converter for `kind`, or the one detected from the first record.

    When none fits, the error names the file and line, the fields seen, the config key
    that names an adapter (`adapter_key`, e.g. `data.adapter`) and the adapters there are."""
    choices = ", ".join(adapters_for(kind))
    if adapter is None:
        location, record = first
        adapter = detect_adapter(kind, record)
        if adapter is None:
            fields = ", ".join(sorted(record)) or "none"
            described = "; ".join(
                f"{name} ({ADAPTERS[name].description})" for name in adapters_for(kind)
            )
            # an SFT example has one field; naming it is the likeliest fix
            prefix = "missing field, and " if kind == "sft" and "messages" not in record else ""
            raise location.error(
                f"{prefix}cannot tell the format of these {KIND_NAMES[kind]} from the fields "
                f"({fields}); name an adapter with `{adapter_key}`: {described}",
                "messages" if prefix else None,
            )
    if adapter not in ADAPTERS:
        raise ConfigError(f"unknown data adapter {adapter!r} (known: {', '.join(ADAPTERS)})")
    converter = ADAPTERS[adapter].converter(kind)
    if converter is None:
        raise ConfigError(
            f"data adapter {adapter!r} does not make {KIND_NAMES[kind]} (adapters that do: {choices})"
        )
    return adapter, converter


def load_located(
    kind: str,
    source,
    adapter,
    options: AdapterOptions,
    check,
    split: str,
    on_bad: OnBad,
    report: LoadReport,
    limit: int | None = None,
    adapter_key: str = "adapter",
    data_dir: str | None = None,
    subset: str | None = None,
) -> list[tuple[Location, dict]]:
    """`(location, canonical dict)` for every good record; bad ones raise or are counted.

    `data_dir` and `subset` choose a part of a hub dataset (see `load_records`)."""
    if on_bad not in ("error", "skip"):
        raise ConfigError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or null, got {limit!r}")
    bad_lines: list[DataError] = []  # broken JSON lines: raised or skipped in file order below
    records = load_records(source, split, bad_lines, data_dir, subset)
    unreadable = sorted(bad_lines, key=lambda error: error.line or 0)
    report.source = describe_source(source, data_dir, subset)
    report.n_records = len(records) + len(unreadable)
    report.limit = limit
    if (
        unreadable
        and on_bad == "error"
        and (not records or unreadable[0].line < (records[0][0].line or 0))
    ):
        raise unreadable[0]  # the first bad line comes before any record
    if not records:
        if unreadable:
            raise DataError(
                f"no readable records ({len(unreadable)} bad lines, first: {unreadable[0]})",
                path=source,
            )
        raise DataError(EMPTY_SOURCE[kind], path=source)
    report.adapter, convert = choose_converter(kind, adapter, records[0], adapter_key)
    rows: list[tuple[Location, dict]] = []
    for index, (location, record) in enumerate(records):
        if limit is not None and len(rows) >= limit:
            break
        while unreadable and (unreadable[0].line or 0) < (location.line or 0):
            report.n_read += 1
            reject(unreadable.pop(0), on_bad, report)  # a broken line before this record
        report.n_read += 1
        try:
            converted = [check(row) for row in convert(record, index, options)]
        except RecordError as error:
            reject(location.error(error.message, error.field), on_bad, report)
            continue
        rows.extend((location, row) for row in converted)
    else:
        for error in unreadable:  # broken lines after the last record
            report.n_read += 1
            reject(error, on_bad, report)
    return rows if limit is None else rows[:limit]


def reject(error: DataError, on_bad: OnBad, report: LoadReport) -> None:
    if on_bad == "error":
        raise error
    report.skip(error)


def finish(rows: list[tuple[Location, dict]], report: LoadReport) -> list[tuple[Location, dict]]:
    report.n_loaded = len(rows)
    if report.n_skipped or report.n_too_long:
        log.warning(report.summary())
    else:
        log.info(report.summary())
    return rows


def check_thresholds(rating_thresholds) -> tuple[float, float, float]:
    if len(rating_thresholds) != 3 or list(rating_thresholds) != sorted(
        rating_thresholds, reverse=True
    ):
        raise ConfigError(
            f"rating_thresholds must be 3 decreasing score gaps, got {rating_thresholds!r}"
        )
    return tuple(float(gap) for gap in rating_thresholds)


def check_options(default_rating: str = "better", category: str | None = None) -> None:
    if default_rating not in RATINGS:
        raise ConfigError(
            f"default_rating must be one of {', '.join(RATINGS)}, got {default_rating!r}"
        )
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")


# ---------------------------------------------------------------- 2. the three kinds
def located_sft(
    source: str | Path,
    adapter: str | None = None,
    *,
    require_answer: bool = False,
    split: str = "train",
    on_bad: OnBad = "error",
    limit: int | None = None,
    adapter_key: str = "adapter",
    report: LoadReport | None = None,
    data_dir: str | None = None,
    subset: str | None = None,
) -> list[tuple[Location, dict]]:
    """`load_sft`'s examples with the place each came from."""
    report = report if report is not None else LoadReport()
    options = AdapterOptions(source_name=describe_source(source, data_dir, subset))
    rows = load_located(
        "sft",
        source,
        adapter,
        options,
        lambda row: sft_record(row, require_answer),
        split,
        on_bad,
        report,
        limit,
        adapter_key,
        data_dir,
        subset,
    )
    return finish(rows, report)


def load_sft(source: str | Path, adapter: str | None = None, **keys) -> list[dict]:
    """SFT examples `{"messages": [...]}`.

    Types and roles are always checked. Conversations with no assistant turn or an
    empty answer are kept unless `require_answer=True` (the SFT stage counts and
    reports them itself, see `check_sft_example`). Keys: see `located_sft`.
    """
    return [row for _, row in located_sft(source, adapter, **keys)]


def located_prompts(
    source: str | Path,
    adapter: str | None = None,
    max_prompt_chars: int | None = None,
    *,
    category: str | None = None,
    split: str = "train",
    on_bad: OnBad = "error",
    limit: int | None = None,
    adapter_key: str = "adapter",
    report: LoadReport | None = None,
    data_dir: str | None = None,
    subset: str | None = None,
) -> list[tuple[Location, dict]]:
    """`load_prompts`'s prompts with the place each came from."""
    check_options(category=category)
    report = report if report is not None else LoadReport()
    options = AdapterOptions(
        category=category, source_name=describe_source(source, data_dir, subset)
    )
    rows = load_located(
        "prompts",
        source,
        adapter,
        options,
        prompt_record,
        split,
        on_bad,
        report,
        limit,
        adapter_key,
        data_dir,
        subset,
    )
    rows = without_duplicate_ids(rows, on_bad, report)
    if max_prompt_chars is not None:
        rows = without_long_prompts(rows, max_prompt_chars, report)
    return finish(rows, report)


def load_prompts(
    source: str | Path, adapter: str | None = None, max_prompt_chars: int | None = None, **keys
) -> list[dict]:
    """Prompts `{"messages", "category", "id", "kind"}` ending with a user turn.

    Ids must be unique (records without one get `p{index}`). Prompts whose messages
    hold more than `max_prompt_chars` characters in all are left out, counted in the
    report and logged. `category` is the category of records that carry none.
    """
    return [row for _, row in located_prompts(source, adapter, max_prompt_chars, **keys)]


def without_duplicate_ids(
    rows: list[tuple[Location, dict]], on_bad: OnBad, report: LoadReport
) -> list[tuple[Location, dict]]:
    first_seen: dict[str, Location] = {}
    kept = []
    for location, row in rows:
        if row["id"] in first_seen:
            earlier = first_seen[row["id"]]
            where = f"line {earlier.line}" if earlier.line is not None else f"row {earlier.row}"
            reject(
                location.error(f"duplicate id {row['id']!r} (first at {where})", "id"),
                on_bad,
                report,
            )
            continue
        first_seen[row["id"]] = location
        kept.append((location, row))
    return kept


def without_long_prompts(
    rows: list[tuple[Location, dict]], max_chars: int, report: LoadReport
) -> list[tuple[Location, dict]]:
    kept = []
    for location, row in rows:
        length = sum(len(message["content"]) for message in row["messages"])
        if length > max_chars:
            report.too_long(
                location, f"prompt of {length} characters > max_prompt_chars {max_chars}"
            )
            continue
        kept.append((location, row))
    return kept


def located_preferences(
    source: str | Path,
    adapter: str | None = None,
    default_rating: str = "better",
    *,
    category: str | None = None,
    rating_thresholds: tuple[float, float, float] = (3.0, 2.0, 1.0),
    split: str = "train",
    on_bad: OnBad = "error",
    limit: int | None = None,
    adapter_key: str = "adapter",
    report: LoadReport | None = None,
    data_dir: str | None = None,
    subset: str | None = None,
) -> list[tuple[Location, dict]]:
    """`load_preferences`'s pairs with the place each came from."""
    check_options(default_rating, category)
    thresholds = check_thresholds(rating_thresholds)
    report = report if report is not None else LoadReport()
    options = AdapterOptions(
        default_rating, category, thresholds, describe_source(source, data_dir, subset)
    )
    rows = load_located(
        "preferences",
        source,
        adapter,
        options,
        preference_record,
        split,
        on_bad,
        report,
        limit,
        adapter_key,
        data_dir,
        subset,
    )
    return finish(rows, report)


def load_preferences(
    source: str | Path, adapter: str | None = None, default_rating: str = "better", **keys
) -> list[dict]:
    """Preference pairs in the canonical schema (see `core.data.adapters` for the mappings).

    `default_rating` is given to pairs whose source has no rating; `category` to
    pairs whose source has no category (PKU-SafeRLHF: keep only that category's
    pair); `rating_thresholds` map score gaps of scored sources to ratings.
    """
    return [row for _, row in located_preferences(source, adapter, default_rating, **keys)]


LOCATED = {"sft": located_sft, "prompts": located_prompts, "preferences": located_preferences}
