"""The GAtt instruction library: system instructions and their checkers.

A library is toyworld's (built in code, `toyworld.gatt_instructions`) or a user's
JSONL file, one instruction a line:

    {"text": "Always act as Napoleon from now", "short": "Figure: Napoleon",
     "kind": "figure", "check": {"type": "contains", "value": "Napoleon"}}

Keys: `text` and `kind` (required); `short`, a shortened form (default: the
text); `check`, a checker spec (see `gatt.checks`; without one the instruction is
"unchecked": `check` returns None and only the reward models judge it); `split`,
`train` (default) or `heldout`; `id` (default `<file stem>:<line>`); `repair`,
`{"append": str}` or `{"prepend": str}`: how `apply` makes an answer obey when the
check type has no rewrite of its own. A bad line is a `DataError` naming the
file, the line and the field.

Instructions combine at random (two of different kinds: texts joined, short forms
joined with ". ", the check is both checks) and are sometimes shortened. Nothing
here imports toyworld unless the source is "toyworld": `make_instruction`,
`build_instructions`, `single_instructions` and `KINDS` are toyworld's and are
loaded on first use.

An `Instruction` is plain data, so it round-trips through JSON:
`Instruction.from_dict(instruction.to_dict())`.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, DataError
from gatt.checks import Check, run_check, words

log = logging.getLogger("gatt")

TOYWORLD = "toyworld"
SPLITS = ("train", "heldout")
RECORD_KEYS = ("text", "kind", "short", "check", "split", "id", "repair")
REPAIRS = ("append", "prepend")
_DEFAULT_REWRITE = ("starts_with", "ends_with", "contains", "not_contains", "upper", "max_words")
_APPLY_ORDER = {"max_words": 0, "starts_with": 2, "ends_with": 3, "upper": 4}  # any other check: 1

__all__ = [
    "Instruction",
    "add_combinations",
    "apply",
    "assign_instructions",
    "check",
    "combine",
    "instruction_text",
    "load_library",
    "parse_record",
    "repairable",
    "select_instructions",
]

# toyworld's helpers, kept importable from here but out of __all__ (a star import loads no toyworld)
_TOYWORLD_NAMES = ("KINDS", "build_instructions", "make_instruction", "single_instructions")


def __getattr__(name: str):
    """toyworld's library helpers, imported only when asked for (PEP 562)."""
    if name in _TOYWORLD_NAMES:
        from core.sources import toyworld_instruction_library

        return getattr(toyworld_instruction_library(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Instruction:
    """A system instruction and its checker.

    `check_spec` is None for an unchecked instruction and for a combination,
    whose `parts` are checked each. `short_text` is the shortened form used in
    some synthesised data (the text itself when the library gives none).
    `repair` is ("append" | "prepend", text): `apply`'s rewrite where the check
    has none of its own (toyworld's "I enjoy chess too.").
    """

    id: str
    kind: str
    text: str
    short_text: str
    check_spec: Check | None = None
    parts: tuple[Instruction, ...] = field(default=())
    repair: tuple[str, str] | None = None

    @property
    def short(self) -> str:
        return self.short_text

    @property
    def checked(self) -> bool:
        """Whether every part has a checker (else `check` may return None)."""
        return all(part.check_spec is not None for part in self.parts) if self.parts else self.check_spec is not None

    def check(self, response: str) -> bool | None:
        return check(self, response)

    def apply(self, answer: str) -> str:
        return apply(self, answer)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "text": self.text, "short_text": self.short_text,
            "check": None if self.check_spec is None else self.check_spec.to_dict(),
            "repair": None if self.repair is None else list(self.repair),
            "parts": [p.to_dict() for p in self.parts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Instruction:
        parts = tuple(cls.from_dict(p) for p in data.get("parts") or ())
        spec = Check.from_dict(data["check"]) if data.get("check") is not None else None
        repair = tuple(data["repair"]) if data.get("repair") else None
        return cls(data["id"], data["kind"], data["text"], data["short_text"], spec, parts, repair)

    def to_record(self, split: str | None = None) -> dict:
        """This single instruction as a library line (what `parse_record` reads)."""
        if self.parts:
            raise ValueError(f"{self.id} is a combination: a library holds its parts, one a line")
        record: dict[str, Any] = {"id": self.id, "kind": self.kind, "text": self.text}
        if self.short_text != self.text:
            record["short"] = self.short_text
        if self.check_spec is not None:
            record["check"] = self.check_spec.to_dict()
        if self.repair is not None:
            record["repair"] = {self.repair[0]: self.repair[1]}
        if split is not None:
            record["split"] = split
        return record


# ---------------------------------------------------------------- checking and rewriting
def check(instruction: Instruction, response: str) -> bool | None:
    """Whether `response` obeys `instruction`: True, False, or None when it is unchecked.

    A combination fails if a part fails, is unchecked (None) if a part is, else passes.
    """
    if instruction.parts:
        results = [check(part, response) for part in instruction.parts]
        if any(result is False for result in results):
            return False
        return None if any(result is None for result in results) else True
    if instruction.check_spec is None:
        return None
    return run_check(instruction.check_spec, instruction, response)


def repairable(instruction: Instruction) -> bool:
    """Whether `apply` can make an answer obey every part (a regex, language or callable
    check has no rewrite unless the library gives a `repair`)."""
    return all(
        part.repair is not None or (part.check_spec is not None and part.check_spec.type in _DEFAULT_REWRITE)
        for part in (instruction.parts or (instruction,))
    )


def apply(instruction: Instruction, answer: str) -> str:
    """Rewrite a plain answer so that it obeys `instruction` (for demonstrations, repairs and tests).

    Parts are applied in a fixed order: a word limit first (leaving room for the
    words the other parts add), then additions, a prefix, an end marker, upper case.
    A part the answer already obeys is not applied twice; a part with no rewrite
    (see `repairable`) leaves the answer as it is.
    """
    parts = instruction.parts or (instruction,)
    order = sorted(parts, key=lambda p: _APPLY_ORDER.get(p.check_spec.type if p.check_spec else "", 1))
    text = answer.strip()
    for part in order:
        spec = part.check_spec
        if spec is not None and spec.type == "max_words" and part.repair is None:
            added = sum(len(words(_rewrite(p, ""))) for p in parts if p is not part)
            text = " ".join(text.split()[: max(1, int(spec.value) - added)])
        elif check(part, text) is not True:
            text = _rewrite(part, text)
    return text


def _rewrite(part: Instruction, text: str) -> str:
    if part.repair is not None:
        how, extra = part.repair
        return f"{extra} {text}" if how == "prepend" else f"{text} {extra}"
    spec = part.check_spec
    if spec is None:
        return text
    value = spec.value[0] if isinstance(spec.value, tuple) else spec.value
    if spec.type == "starts_with":
        return f"{value} {text}"
    if spec.type in ("ends_with", "contains"):
        return f"{text} {value}"
    if spec.type == "upper":
        return text.upper()
    if spec.type == "not_contains":
        for banned in spec.value if isinstance(spec.value, tuple) else (spec.value,):
            text = re.sub(re.escape(banned), "", text, flags=0 if spec.case_sensitive else re.IGNORECASE)
        return re.sub(r"\s+", " ", text).strip()
    return text  # max_words is handled by `apply`; regex, language and callable have no rewrite


def combine(parts: list[Instruction]) -> Instruction:
    """One instruction made of `parts`: texts joined, short forms joined with ". ", every check."""
    if len(parts) == 1:
        return parts[0]
    return Instruction(
        "+".join(p.id for p in parts), "+".join(p.kind for p in parts),
        " ".join(p.text for p in parts), ". ".join(p.short_text for p in parts), None, tuple(parts),
    )


def add_combinations(
    singles: list[Instruction],
    split: str,
    seed: int,
    n_combined: int,
    kind_order: list[str] | tuple[str, ...],
    compatible: Callable[[Instruction, Instruction], bool] | None = None,
) -> list[Instruction]:
    """`singles` plus up to `n_combined` random pairs of two different kinds (seeded by split
    and seed; parts in `kind_order`; a pair that `compatible` refuses is skipped)."""
    rng = random.Random(f"gatt:{split}:{seed}")
    combos: dict[str, Instruction] = {}
    if len({s.kind for s in singles}) < 2:
        if n_combined > 0:
            log.warning("GAtt: no combinations: the %s instructions have fewer than two kinds", split)
        return list(singles)
    for _ in range(n_combined * 20):
        if len(combos) >= n_combined:
            break
        a, b = rng.sample(singles, 2)
        if a.kind == b.kind or (compatible is not None and not compatible(a, b)):
            continue
        combo = combine(sorted((a, b), key=lambda p: kind_order.index(p.kind)))
        combos.setdefault(combo.id, combo)
    return list(singles) + list(combos.values())


def instruction_text(instruction: Instruction, rng: random.Random, short_probability: float = 0.3) -> str:
    """The text to put in a dialogue: the long form, or sometimes the shortened one."""
    return instruction.short_text if rng.random() < short_probability else instruction.text


# ---------------------------------------------------------------- a library file
def parse_record(record: dict, path: object = None, line: int | None = None) -> tuple[str, Instruction]:
    """(split, Instruction) of one library line; a bad line is a DataError naming path, line, field."""

    def bad(message: str, key: str) -> DataError:
        return DataError(message, path=path, line=line, field=key)

    unknown = sorted(set(record) - set(RECORD_KEYS))
    if unknown:
        raise bad(f"unknown key (known: {', '.join(RECORD_KEYS)})", unknown[0])
    for key in ("text", "kind"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise bad("expected a non-empty string", key)
    text, kind = record["text"].strip(), record["kind"].strip()
    if "+" in kind:
        raise bad("'+' is reserved for combinations of kinds", "kind")
    short = record.get("short")
    if short is not None and (not isinstance(short, str) or not short.strip()):
        raise bad("expected a non-empty string (or no 'short' key)", "short")
    split = record.get("split", "train")
    if split not in SPLITS:
        raise bad(f"expected one of {', '.join(SPLITS)}, got {split!r}", "split")
    default_id = f"{Path(os.fspath(path)).stem}:{line}" if path is not None else f"line:{line}"
    ident = record.get("id", default_id)
    if not isinstance(ident, str) or not ident.strip() or "+" in ident:
        raise bad("expected a non-empty string without '+'", "id")
    spec = Check.from_dict(record["check"], path, line) if record.get("check") is not None else None
    repair = record.get("repair")
    if repair is not None:
        if not (isinstance(repair, dict) and len(repair) == 1 and next(iter(repair)) in REPAIRS and isinstance(next(iter(repair.values())), str)):
            raise bad('expected {"append": str} or {"prepend": str}', "repair")
        repair = next(iter(repair.items()))
    return split, Instruction(ident, kind, text, short.strip() if short else text, spec, (), repair)


def load_library(path: str | os.PathLike) -> list[tuple[str, Instruction]]:
    """Every line of a library file as (split, Instruction), in file order; ids must be unique."""
    from core.io import iter_jsonl

    entries, seen = [], {}
    for line, record in iter_jsonl(path):
        split, instruction = parse_record(record, path, line)
        if instruction.id in seen:
            raise DataError(f"duplicate id {instruction.id!r} (also on line {seen[instruction.id]})", path=path, line=line, field="id")
        seen[instruction.id] = line
        entries.append((split, instruction))
    if not entries:
        raise DataError("no instructions in the file", path=path)
    return entries


def library_singles(split: str, source: str = TOYWORLD, heldout_source: str | None = None) -> tuple[list[Instruction], str]:
    """The single instructions of `split` and where they come from (for messages).

    train: `source`'s train split. heldout: `heldout_source` if given (every line of
    a file, whatever its `split` says; or toyworld's held-out split), else `source`'s
    held-out split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    chosen = source if split == "train" or heldout_source is None else heldout_source
    if chosen == TOYWORLD:
        from core.sources import toyworld_instruction_library

        return toyworld_instruction_library().single_instructions(split), "toyworld"
    entries = load_library(chosen)
    whole_file = split == "heldout" and heldout_source is not None
    singles = [ins for line_split, ins in entries if whole_file or line_split == split]
    if not singles:
        hint = " (add lines with \"split\": \"heldout\" or set instructions.heldout_source)" if split == "heldout" else ""
        raise DataError(f"no {split} instructions in the file{hint}", path=chosen)
    return singles, str(chosen)


def select_instructions(
    split: str,
    seed: int,
    n_combined: int,
    kinds: list[str] | None,
    source: str = TOYWORLD,
    heldout_source: str | None = None,
    key: str = "instructions.kinds",
) -> list[Instruction]:
    """The library's instructions of `split` plus `n_combined` two-kind combinations; with
    `kinds`, only instructions whose parts all have one of them (an unknown kind is a
    ConfigError naming `key` and the kinds the library has).

    toyworld draws its combinations from all its kinds, then keeps those of `kinds` (as
    it always has); a file's combinations are drawn from the instructions of `kinds`.
    """
    if (source if split == "train" or heldout_source is None else heldout_source) == TOYWORLD:
        from core.sources import toyworld_instruction_library

        toy = toyworld_instruction_library()
        if kinds is not None and set(kinds) - set(toy.KINDS):
            raise ConfigError(f"{key}: unknown instruction kinds {sorted(set(kinds) - set(toy.KINDS))} (toyworld's: {', '.join(toy.KINDS)})")
        library = toy.build_instructions(split, seed=seed, n_combined=n_combined)
        return library if kinds is None else [ins for ins in library if all(p.kind in kinds for p in (ins.parts or (ins,)))]
    singles, origin = library_singles(split, source, heldout_source)
    kind_order = list(dict.fromkeys(ins.kind for ins in singles))
    if kinds is not None:
        unknown = sorted(set(kinds) - set(kind_order))
        if unknown:
            raise ConfigError(f"{key}: unknown instruction kinds {unknown}: the {split} instructions of {origin} have kinds {', '.join(kind_order)}")
        singles = [ins for ins in singles if ins.kind in kinds]
    return add_combinations(singles, split, seed, n_combined, kind_order)


def assign_instructions(instructions: list[Instruction], n: int, seed: int) -> list[Instruction]:
    """`n` instructions dealt from shuffled copies of the list (balanced, seeded)."""
    if not instructions:
        raise ValueError("no instructions to assign")
    rng = random.Random(f"gatt:assign:{seed}")
    dealt: list[Instruction] = []
    while len(dealt) < n:
        deck = list(instructions)
        rng.shuffle(deck)
        dealt.extend(deck)
    return dealt[:n]
