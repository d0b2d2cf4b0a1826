"""Ghost Attention instruction library: system instructions whose adherence is checkable.

Kinds follow the Llama 2 paper (hobby, language, public figure) plus format
constraints. Every instruction has a deterministic checker that a 135M model can
learn to satisfy in a few tokens:

    hobby        "You enjoy chess. Mention it in every answer."  -> mentions "chess"
    language     "Always answer in French ..."                   -> contains a French
                                                                    marker word (bonjour,
                                                                    merci, oui, ...)
    figure       "Always act as Napoleon from now, and sign every answer as
                 Napoleon." (short: "Figure: Napoleon")          -> mentions "Napoleon"
    upper        "Always write your answers in capital letters." -> no lower-case letters
    end_marker   "End every answer with '-- done'."              -> ends with the marker
    prefix       "Start every answer with 'Answer:'."            -> starts with it
    max_words    "Answer in at most 12 words."                   -> <= 12 words

Instructions combine at random (two kinds at most, never two of the same kind)
and are sometimes shortened ("Figure: Napoleon"). Train and held-out sets use the
same kinds with different values (hobbies, languages, figures, markers, limits).
Checkers compare case-insensitively except `upper`, so combinations stay satisfiable.

This library is one instruction library like a user's JSONL file: each
instruction is a `gatt.instructions.Instruction` whose checker is a plain
`gatt.checks.Check` spec (mentions -> `contains`, a language's marker words ->
`contains` any of them, `upper`, `ends_with`, `starts_with`, `max_words`), so
`instruction.to_record(split)` writes the line a user's file would hold and
`gatt.instructions.parse_record` reads it back to the same object. The
rewrites that `apply` uses for hobbies, figures and languages ("I enjoy chess
too.", "- Napoleon", "Bonjour!") are the instructions' `repair`.
"""

from __future__ import annotations

from gatt.checks import Check
from gatt.instructions import Instruction, add_combinations, apply, check, combine, instruction_text

__all__ = [
    "KINDS", "LANGUAGE_GREETINGS", "LANGUAGE_MARKERS", "Instruction", "apply", "build_instructions",
    "check", "combine", "instruction_text", "make_instruction", "single_instructions",
]

KINDS = ("hobby", "language", "figure", "upper", "end_marker", "prefix", "max_words")

LANGUAGE_MARKERS: dict[str, tuple[str, ...]] = {
    "French": ("bonjour", "merci", "oui", "voila", "c'est", "tres", "avec"),
    "Spanish": ("hola", "gracias", "claro", "muy", "pero", "amigo"),
    "German": ("hallo", "danke", "ja", "sehr", "und", "gut"),
    "Italian": ("ciao", "grazie", "molto", "bene", "allora"),
}
LANGUAGE_GREETINGS = {"French": "Bonjour!", "Spanish": "¡Hola!", "German": "Hallo!", "Italian": "Ciao!"}

_VALUES: dict[str, dict[str, tuple]] = {
    # Many values per copyable kind: with two end markers a model learns the two
    # strings; with a dozen it has to learn to copy the one in the instruction,
    # which is what the held-out values test.
    "train": {
        "hobby": ("chess", "gardening", "painting", "pottery", "baking", "fishing",
                  "cycling", "sailing", "origami", "juggling", "birdwatching", "surfing"),
        "language": ("French", "Spanish"),
        "figure": ("Napoleon", "Cleopatra", "Shakespeare", "Einstein", "Darwin", "Newton",
                   "Gandhi", "Picasso", "Galileo", "Beethoven", "Lincoln", "Curie"),
        "end_marker": ("-- done", "-- end", "-- fin", "-- bye", "-- ok", "-- stop",
                       "-- out", "-- later", "-- thanks", "-- cheers", "-- peace", "-- yours"),
        "prefix": ("Answer:", "Reply:", "Note:", "Output:", "Result:", "Sure:",
                   "Okay:", "Well:", "So:", "Here:", "Info:", "Fact:"),
        "max_words": (10, 12),
        "upper": (None,),
    },
    "heldout": {
        "hobby": ("hiking", "knitting", "astronomy"),
        "language": ("German", "Italian"),
        "figure": ("Mozart", "Cervantes"),
        "end_marker": ("-- over",),
        "prefix": ("Response:",),
        "max_words": (8,),
        "upper": ("Use only upper-case letters in all your answers.",),
    },
}
_INCOMPATIBLE = {frozenset({"max_words", "hobby"}), frozenset({"max_words", "figure"}), frozenset({"max_words", "language"})}


def make_instruction(kind: str, value: str | int | None = None) -> Instruction:
    """One single-kind instruction with its long and short wording (for "upper",
    `value` is an alternative wording or None for the default one)."""
    if kind == "hobby":
        return Instruction(
            f"hobby:{value}", kind, f"You enjoy {value}. Mention {value} in every answer.", f"Hobby: {value}",
            Check("contains", value), repair=("append", f"I enjoy {value} too."),
        )
    if kind == "language":
        return Instruction(
            f"language:{value}", kind,
            f"Always answer in {value}, or at least greet the user in {value}.", f"Language: {value}",
            Check("contains", LANGUAGE_MARKERS[str(value)]), repair=("prepend", LANGUAGE_GREETINGS[str(value)]),
        )
    if kind == "figure":
        return Instruction(
            f"figure:{value}", kind,
            f"Always act as {value} from now, and sign every answer as {value}.", f"Figure: {value}",
            Check("contains", value), repair=("append", f"- {value}"),
        )
    if kind == "upper":
        text = value or "Always write your answers in capital letters."
        short = "Capitals only" if value is None else "Upper case only"
        return Instruction("upper" if value is None else "upper:v2", kind, text, short, Check("upper"))
    if kind == "end_marker":
        return Instruction(f"end_marker:{value}", kind, f"End every answer with '{value}'.", f"End: {value}", Check("ends_with", value))
    if kind == "prefix":
        return Instruction(f"prefix:{value}", kind, f"Start every answer with '{value}'.", f"Start: {value}", Check("starts_with", value))
    if kind == "max_words":
        return Instruction(f"max_words:{value}", kind, f"Answer in at most {value} words.", f"Max {value} words", Check("max_words", int(value)))
    raise ValueError(f"unknown instruction kind {kind!r}")


def single_instructions(split: str) -> list[Instruction]:
    """Every single-kind instruction of `split`."""
    if split not in _VALUES:
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    values = _VALUES[split]
    singles = []
    for kind in KINDS:
        singles += [make_instruction(kind, value) for value in values[kind]]
    return singles


def build_instructions(split: str = "train", seed: int = 0, n_combined: int | None = None) -> list[Instruction]:
    """Single instructions of `split` plus `n_combined` random pairs of two different kinds.

    Train and held-out sets share kinds but no values (for "upper", which has no
    value, the two splits word the instruction differently). A word limit is never
    combined with a hobby, a figure or a language (their rewrites need the words).
    """
    singles = single_instructions(split)
    n_combined = len(singles) if n_combined is None else n_combined
    return add_combinations(
        singles, split, seed, n_combined, KINDS, compatible=lambda a, b: frozenset({a.kind, b.kind}) not in _INCOMPATIBLE,
    )
