"""SFT data: load conversations, check them, tokenize with answer-only labels, report.

Pipeline (each step a small function):

1. `load_conversations`: rows from toyworld, or from any file, folder or hub
   dataset through `core.data` (format detected from the first row for every file
   type, or named by `data.adapter`: chat `messages`, prompt/completion, HH-RLHF,
   TRL implicit-prompt pairs, ...). Malformed rows (broken JSON, a message without
   a `role`/`content` string, an unknown role) are a `DataError` naming the file,
   the line and the field: that is broken input, not a bad example; with
   `data.on_bad: skip` they are left out, counted and listed in the report.
2. `prepare_examples`: tokenizes every conversation with
   `core.chat.tokenize_conversation` (labels -100 everywhere but the learned
   answers and their end-of-turn token) and sorts out the examples that cannot
   be learned: no assistant turn, an empty answer, longer than `max_length`
   (never truncated: a cut answer would teach the model to stop mid-sentence),
   or no learned token at all. Each reason is counted with its first offending
   row; with `on_bad_example: error` the first one is a `DataError`.
3. The `DataReport` goes to the log, `data_report.json`, the manifest and
   `metrics.jsonl` (see `sft.train`): unlearnable examples by reason, and per source
   (`sources`) the rows read, loaded and left out as unreadable, the first ones named.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.chat import IGNORE_INDEX, tokenize_conversation
from core.errors import DataError

log = logging.getLogger("sft")

ROLES = ("system", "user", "assistant")
BAD_REASONS = ("no_assistant_turn", "empty_answer", "too_long", "no_learned_tokens")


@dataclass
class Conversation:
    messages: list[dict]
    ref: str  # where it came from, e.g. "data/sft.jsonl:12" or "toyworld[3]"


@dataclass
class BadExamples:
    count: int = 0
    first: str | None = None  # reference of the first offending row
    detail: str | None = None  # what was wrong with it


@dataclass
class DataReport:
    source: str
    n_rows: int = 0
    n_kept: int = 0
    n_skipped: int = 0
    bad: dict[str, BadExamples] = field(default_factory=lambda: {reason: BadExamples() for reason in BAD_REASONS})
    n_tokens: int = 0
    n_learned_tokens: int = 0
    max_tokens: int = 0
    max_length: int = 0
    learn: str = "all"
    adapter: str = ""  # the format the source was read as
    n_bad_rows: int = 0  # rows left out as unreadable (data.on_bad=skip), see `sources`
    sources: list[dict] = field(default_factory=list)  # core.data LoadReport per source

    def to_dict(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict:
        """Flat numbers for metrics.jsonl."""
        row = {
            "data/n_rows": self.n_rows,
            "data/n_kept": self.n_kept,
            "data/n_skipped": self.n_skipped,
            "data/n_bad_rows": self.n_bad_rows,
            "data/n_tokens": self.n_tokens,
            "data/n_learned_tokens": self.n_learned_tokens,
        }
        row.update({f"data/bad_{reason}": bad.count for reason, bad in self.bad.items()})
        return row

    def summary(self) -> str:
        text = f"{self.source}: {self.n_rows} conversations, {self.n_kept} kept, {self.n_skipped} skipped"
        if self.n_bad_rows:
            first = next((s["first_skipped"] for s in self.sources if s.get("first_skipped")), None)
            text += f"; {self.n_bad_rows} unreadable rows left out (first: {first})"
        for reason, bad in self.bad.items():
            if bad.count:
                text += f"; {reason}: {bad.count} (first: {bad.first}: {bad.detail})"
        return text


# ---------------------------------------------------------------- 1. loading
def validate_messages(messages: object, path: object = None, line: int | None = None) -> list[dict]:
    """Schema check of one row's `messages`; a violation is a DataError naming file, line, field."""
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list of {role, content} objects", path=path, line=line, field="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise DataError("expected an object with 'role' and 'content'", path=path, line=line, field=where)
        if message.get("role") not in ROLES:
            raise DataError(f"role must be one of {', '.join(ROLES)}, got {message.get('role')!r}", path=path, line=line, field=f"{where}.role")
        if not isinstance(message.get("content"), str):
            raise DataError("content must be a string", path=path, line=line, field=f"{where}.content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_conversations(
    source: str,
    adapter: str | None = None,
    toyworld_n: int = 300,
    toyworld_seed: int = 0,
    *,
    split: str = "train",
    on_bad: str = "error",
    limit: int | None = None,
    report=None,
    data_dir: str | None = None,
    subset: str | None = None,
) -> list[Conversation]:
    """Conversations of `source` (`toyworld`, a file, a folder or a hub dataset), each with
    its `file:line` (or `file:row N`). `report` (a `core.data.LoadReport`) gets the format
    read and the rows left out with `on_bad="skip"`. A format that cannot be detected is
    an error naming the file, the fields seen and `data.adapter` with the adapters there are."""
    if source == "toyworld":
        from core.sources import toyworld_sft_examples

        rows = toyworld_sft_examples(toyworld_n, toyworld_seed)
        conversations = [Conversation(validate_messages(row["messages"], "toyworld", i), f"toyworld[{i}]") for i, row in enumerate(rows)]
        conversations = conversations if limit is None else conversations[:limit]
        if report is not None:
            report.source, report.adapter = "toyworld", "toyworld"
            report.n_records = report.n_read = report.n_loaded = len(conversations)
        return conversations
    from core.data import located_sft

    rows = located_sft(source, adapter, split=split, on_bad=on_bad, limit=limit, adapter_key="data.adapter", report=report,
                       data_dir=data_dir, subset=subset)
    return [Conversation(row["messages"], str(location)) for location, row in rows]


# ---------------------------------------------------------------- 2. checking and tokenizing
def with_toyworld_replay(data_path: Path, out_path: Path, n: int, seed: int, weights: dict[str, float] | None) -> tuple[Path, int]:
    """A training file of `data_path`'s rows followed by `n` toyworld train-split
    demonstrations (families re-weighted by `weights`), written to `out_path`; with
    `n` = 0, `data_path` itself. Returns the file and the number of replayed rows.

    Stages that fine-tune on a few hundred rows of one narrow kind (rejection-sampling
    targets, GAtt dialogues) replay ordinary demonstrations so that the fine-tune
    does not erase what SFT taught (the refusals above all).
    """
    if n == 0:
        return data_path, 0
    from core.io import iter_jsonl, write_jsonl
    from core.sources import toyworld_sft_examples

    replay = [
        {"messages": example["messages"], "id": f"replay-{index:05d}"}
        for index, example in enumerate(toyworld_sft_examples(n, seed, weights))
    ]
    write_jsonl(out_path, [*(row for _, row in iter_jsonl(data_path)), *replay])
    return out_path, len(replay)


def problem_before_tokenizing(messages: list[dict], learn: str) -> tuple[str, str] | None:
    """(reason, detail) for a conversation that cannot be learned whatever the tokenizer."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        return "no_assistant_turn", "the conversation has no assistant turn"
    learned = assistant[-1:] if learn == "last" else assistant
    for index in learned:
        if not messages[index]["content"].strip():
            return "empty_answer", f"messages[{index}] (assistant) is empty"
    return None


def prepare_examples(
    conversations: list[Conversation],
    tokenizer,
    max_length: int,
    learn: str = "all",
    on_bad_example: str = "skip",
    source: str = "",
    max_examples: int | None = None,
) -> tuple[list[dict], DataReport]:
    """Tokenized examples `{"input_ids", "labels"}` and the report of what was left out."""
    report = DataReport(source=source, max_length=max_length, learn=learn)
    examples: list[dict] = []
    for conversation in conversations:
        if max_examples is not None and len(examples) >= max_examples:
            break
        report.n_rows += 1
        problem = problem_before_tokenizing(conversation.messages, learn)
        encoded = None
        if problem is None:
            encoded = tokenize_conversation(tokenizer, conversation.messages, learn=learn)
            n_tokens = len(encoded["input_ids"])
            if n_tokens > max_length:
                problem = "too_long", f"{n_tokens} tokens > max_length {max_length}"
            elif all(label == IGNORE_INDEX for label in encoded["labels"]):
                problem = "no_learned_tokens", "no token of the answer survived tokenization"
        if problem is not None:
            reason, detail = problem
            if on_bad_example == "error":
                raise DataError(f"{conversation.ref}: {reason.replace('_', ' ')}: {detail} (set data.on_bad_example=skip to skip such rows, counted)")
            bad = report.bad[reason]
            bad.count += 1
            if bad.first is None:
                bad.first, bad.detail = conversation.ref, detail
            report.n_skipped += 1
            continue
        assert encoded is not None
        examples.append({"input_ids": encoded["input_ids"], "labels": encoded["labels"]})
        report.n_kept += 1
        report.n_tokens += len(encoded["input_ids"])
        report.n_learned_tokens += sum(label != IGNORE_INDEX for label in encoded["labels"])
        report.max_tokens = max(report.max_tokens, len(encoded["input_ids"]))
    if report.n_skipped:
        log.warning("SFT data: %s", report.summary())
    else:
        log.info("SFT data: %s", report.summary())
    if not examples:
        raise DataError(f"no usable SFT example in {source}: {report.summary()}")
    return examples, report


def build_sft_dataset(config, tokenizer, train_path: str | None = None) -> tuple[list[dict], DataReport]:
    """Steps 1-2 for an `SFTConfig`: the tokenized examples and the data report.

    `train_path` replaces `data.train` (the stage passes the JSONL file it wrote the
    toyworld demonstrations to)."""
    from core.data import LoadReport

    data = config.data
    load_report = LoadReport()
    conversations = load_conversations(
        train_path or data.train, data.adapter, data.toyworld_n, data.toyworld_seed,
        split=data.split, on_bad=data.on_bad, limit=data.limit, report=load_report,
        data_dir=data.data_dir, subset=data.subset,
    )
    examples, report = prepare_examples(
        conversations,
        tokenizer,
        max_length=config.training.max_length,
        learn=data.learn,
        on_bad_example=data.on_bad_example,
        source=data.train,
        max_examples=data.max_examples,
    )
    report.adapter, report.n_bad_rows, report.sources = load_report.adapter, load_report.n_skipped, [load_report.to_dict()]
    return examples, report
