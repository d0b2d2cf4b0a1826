"""The GAtt instruction library: re-exported from `toyworld.gatt_instructions`.

The library (kinds, train/held-out values, checkers, short forms, combinations)
belongs to the embedded world; the GAtt stage only reads it. One helper is
added here: `assign_instructions`, which deals instructions to dialogues so that
every instruction is used about equally often.
"""

from __future__ import annotations

import random

from toyworld.gatt_instructions import (
    KINDS,
    Instruction,
    apply,
    build_instructions,
    check,
    combine,
    instruction_text,
    make_instruction,
    single_instructions,
)

__all__ = [
    "KINDS",
    "Instruction",
    "apply",
    "assign_instructions",
    "build_instructions",
    "check",
    "combine",
    "instruction_text",
    "make_instruction",
    "select_instructions",
    "single_instructions",
]


def select_instructions(split: str, seed: int, n_combined: int, kinds: list[str] | None) -> list[Instruction]:
    """The library's instructions of `split`; with `kinds`, only those whose parts all have one of them."""
    library = build_instructions(split, seed=seed, n_combined=n_combined)
    if kinds is None:
        return library
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown instruction kinds {unknown} (known: {', '.join(KINDS)})")
    return [ins for ins in library if all(part.kind in kinds for part in (ins.parts or (ins,)))]


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
