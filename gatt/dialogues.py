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
from core.io import iter_jsonl

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


def load_dialogues(source: str, split: str, n: int, n_turns: int, seed: int) -> tuple[list[Dialogue], int]:
    """`n` dialogues with at least `n_turns` user turns (cut to `n_turns`), and how many were too short.

    `source` is "toyworld" (the embedded world's `split`) or a JSONL file of
    `{"messages": [...]}`; a file's dialogues are taken in order.
    """
    if source == "toyworld":
        from toyworld.world import build_dialogues

        records = [(None, r) for r in build_dialogues(split, n, n_turns, seed)]
        path = None
    else:
        path = os.fspath(source)
        records = list(iter_jsonl(path))
    dialogues, too_short = [], 0
    for line, record in records:
        dialogue = dialogue_from_record(record, f"dialogue-{len(dialogues) + too_short:05d}", path, line)
        if len(dialogue.users) < n_turns:
            too_short += 1
            continue
        dialogues.append(Dialogue(dialogue.id, dialogue.users[:n_turns], dialogue.system))
        if len(dialogues) == n:
            break
    if not dialogues:
        raise DataError(f"no dialogue with at least {n_turns} user turns ({too_short} too short)", path=path)
    return dialogues, too_short


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
