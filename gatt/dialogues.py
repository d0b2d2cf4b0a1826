"""Dialogues as user turns, and where an instruction goes in them.

A GAtt dialogue is only its user turns (plus an optional system message): the
assistant turns are always the model's own samples. `prompt_messages` builds
what the model sees before answering turn t; `dialogue_messages` the finished
conversation. The instruction is either appended to every user turn (how GAtt
samples, and the paper's "concatenate inst to all the user messages"), or given
once: appended to the first user turn (`first_user`) or as the system message
(`system`), which is how the data is trained on and how evaluation asks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from core.errors import DataError
from core.sources import TOYWORLD

Position = Literal["first_user", "system"]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Dialogue:
    id: str
    users: tuple[str, ...]
    system: str | None = None


def dialogue_from_record(record: dict, default_id: str, path: object = None, line: int | None = None) -> Dialogue:
    """A Dialogue from `{"messages": [...]}`; assistant turns are dropped (they will be re-sampled)."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError("expected a non-empty list of messages", path=path, line=line, field="messages")
    users, system = [], None
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise DataError("expected {\"role\": system|user|assistant, \"content\": str}", path=path, line=line, field=field)
        if message["role"] == "system":
            if index != 0:
                raise DataError("a system message may only come first", path=path, line=line, field=field)
            system = message["content"]
        elif message["role"] == "user":
            users.append(message["content"])
    return Dialogue(str(record.get("id", default_id)), tuple(users), system)


def load_dialogues(source, split: str, n: int, n_turns: int, seed: int, *,
                   report=None) -> tuple[list[Dialogue], int]:
    """`n` dialogues with at least `n_turns` user turns (cut to `n_turns`), and how many were too short.

    `source` is "toyworld" (the embedded world's `split`, drawn with `seed`), or a file
    (JSON lines, JSON, Parquet, CSV), a folder or a hub dataset read through
    `core.data`'s readers: a name, or a section with `source` and the per-source keys
    of `core.data.SFTSourceKeys` (adapter, split, data_dir, subset, on_bad, limit; a
    bare name: the defaults). Rows of `{"messages": [...], "id"?}` keep their id; any
    other conversation format core.data reads as SFT (HH-RLHF transcripts,
    prompt/completion, ...) is converted by its adapter. A file's dialogues are taken
    in order. A bad row stops with its file, line and field, or with `on_bad: skip` is
    left out and counted in `report` (a `core.data.LoadReport`, when given).
    """
    keys = None
    if not isinstance(source, (str, os.PathLike)):
        keys, source = source, source.source
    if source == TOYWORLD:
        from core.sources import toyworld_dialogues

        rows = ((None, record) for record in toyworld_dialogues(split, n, n_turns, seed))
        path = None
    else:
        from core.data import LoadReport, SFTSourceKeys

        path = os.fspath(source)
        report = report if report is not None else LoadReport()
        rows = dialogue_rows(path, keys if keys is not None else SFTSourceKeys(), report)
    dialogues, too_short = [], 0
    for location, record in rows:
        if isinstance(record, DataError):  # a bad row, left out and counted (on_bad: skip)
            report.skip(record)
            continue
        try:
            dialogue = dialogue_from_record(record, f"dialogue-{len(dialogues) + too_short:05d}", *place(location, path))
        except DataError as error:
            if keys is None or keys.on_bad == "error":
                raise
            report.skip(error)
            continue
        if len(dialogue.users) < n_turns:
            too_short += 1
            continue
        dialogues.append(Dialogue(dialogue.id, dialogue.users[:n_turns], dialogue.system))
        if len(dialogues) == n:
            break
    if report is not None and path is not None:
        report.n_loaded = len(dialogues)
    if not dialogues:
        skipped = f", {report.n_skipped} bad rows left out" if report is not None and report.n_skipped else ""
        raise DataError(f"no dialogue with at least {n_turns} user turns ({too_short} too short{skipped})", path=path)
    return dialogues, too_short


def place(location, path) -> tuple[object, int | None]:
    """(path, line) for a DataError about the row at `location` (None: the source itself)."""
    if location is None:
        return path, None
    return (location.path if location.row is None else f"{location.path}, row {location.row}"), location.line


def dialogue_rows(source: str, keys, report, adapter_key: str = "adapter"):
    """Yield `(location, record)` of a file, folder or hub dataset in file order, each
    record `{"messages", "id"?}`; a bad row is raised (`on_bad: error`) or yielded in its
    place as `(None, DataError)` (`skip`). Rows past `keys.limit` are not read."""
    from core.data.adapters import AdapterOptions
    from core.data.loaders import choose_converter
    from core.data.readers import describe_source, load_records
    from core.data.schemas import RecordError

    bad_lines: list[DataError] = []
    records = load_records(source, keys.split, bad_lines, keys.data_dir, keys.subset)
    unreadable = sorted(bad_lines, key=lambda error: error.line or 0)
    report.source = describe_source(source, keys.data_dir, keys.subset)
    report.n_records, report.limit = len(records) + len(unreadable), keys.limit

    def bad(error: DataError) -> tuple[None, DataError]:
        if keys.on_bad == "error":
            raise error
        return None, error

    if not records:
        if unreadable and keys.on_bad == "error":
            raise unreadable[0]
        if unreadable:
            raise DataError(f"no readable records ({len(unreadable)} bad lines, first: {unreadable[0]})", path=source)
        raise DataError("no records: no dialogues", path=source)
    report.adapter, convert = choose_converter("sft", keys.adapter, records[0], adapter_key)
    options = AdapterOptions(source_name=report.source)

    def full() -> bool:
        return keys.limit is not None and report.n_read >= keys.limit

    for index, (location, record) in enumerate(records):
        while unreadable and (unreadable[0].line or 0) < (location.line or 0) and not full():
            report.n_read += 1
            yield bad(unreadable.pop(0))  # a broken line before this record
        if full():
            return
        report.n_read += 1
        if report.adapter == "canonical" or (keys.adapter is None and "messages" in record):
            yield location, record  # chat rows are read as they are: the id kept, every message checked
            continue
        try:
            converted = convert(record, index, options)
        except RecordError as error:
            yield bad(location.error(error.message, error.field))
            continue
        for row in converted:
            yield location, {"messages": row["messages"], **({"id": record["id"]} if record.get("id") is not None else {})}
    for error in unreadable:  # broken lines after the last record
        if full():
            return
        report.n_read += 1
        yield bad(error)


def with_instruction(user_text: str, instruction_text: str) -> str:
    return f"{user_text} {instruction_text}"


def _messages(dialogue: Dialogue, answers: list[str], n_users: int, instruction_text: str, position: Position, every_turn: bool) -> list[dict]:
    messages = []
    system = dialogue.system
    if position == "system" and not every_turn:
        system = instruction_text if system is None else f"{instruction_text}\n{system}"
    if system is not None:
        messages.append({"role": "system", "content": system})
    for turn in range(n_users):
        user = dialogue.users[turn]
        if every_turn or (position == "first_user" and turn == 0):
            user = with_instruction(user, instruction_text)
        messages.append({"role": "user", "content": user})
        if turn < len(answers):
            messages.append({"role": "assistant", "content": answers[turn]})
    return messages


def prompt_messages(dialogue: Dialogue, answers: list[str], instruction_text: str, position: Position, every_turn: bool) -> list[dict]:
    """The conversation before answering turn `len(answers) + 1` (1-based)."""
    return _messages(dialogue, answers, len(answers) + 1, instruction_text, position, every_turn)


def dialogue_messages(dialogue: Dialogue, answers: list[str], instruction_text: str, position: Position, every_turn: bool) -> list[dict]:
    """The conversation of the first `len(answers)` turns, answers included."""
    return _messages(dialogue, answers, len(answers), instruction_text, position, every_turn)
