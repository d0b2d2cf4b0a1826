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

An `Instruction` is plain data (rule + argument), so it round-trips through JSON:
`Instruction.from_dict(instruction.to_dict())`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from toyworld.tasks import normalize, words

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


@dataclass(frozen=True)
class Instruction:
    """A system instruction and its checker.

    `rule`/`arg` define the check (see `check`); a combination has rule "all" and
    its `parts`. `short_text` is the shortened form used in some synthesized data.
    """

    id: str
    kind: str
    text: str
    short_text: str
    rule: str
    arg: str | int | None = None
    parts: tuple[Instruction, ...] = field(default=())

    def check(self, response: str) -> bool:
        return check(self, response)

    def apply(self, answer: str) -> str:
        return apply(self, answer)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "text": self.text, "short_text": self.short_text,
            "rule": self.rule, "arg": self.arg, "parts": [p.to_dict() for p in self.parts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Instruction:
        parts = tuple(cls.from_dict(p) for p in data.get("parts") or ())
        return cls(data["id"], data["kind"], data["text"], data["short_text"], data["rule"], data.get("arg"), parts)


def check(instruction: Instruction, response: str) -> bool:
    """Whether `response` obeys `instruction`."""
    rule, arg = instruction.rule, instruction.arg
    stripped = response.strip()
    norm = normalize(stripped)
    if rule == "all":
        return all(check(part, response) for part in instruction.parts)
    if rule == "mentions":
        return re.search(r"(?<![a-z])" + re.escape(normalize(str(arg))) + r"(?![a-z])", norm) is not None
    if rule == "language":
        tokens = set(re.findall(r"[a-z']+", norm))
        return any(marker in tokens for marker in LANGUAGE_MARKERS[str(arg)])
    if rule == "upper":
        letters = [ch for ch in stripped if ch.isalpha()]
        return bool(letters) and all(ch.isupper() for ch in letters)
    if rule == "ends_with":
        return norm.rstrip(" .!") .endswith(normalize(str(arg)))
    if rule == "starts_with":
        return norm.startswith(normalize(str(arg)))
    if rule == "max_words":
        return 0 < len(words(stripped)) <= int(arg)
    raise ValueError(f"unknown instruction rule {rule!r}")


def apply(instruction: Instruction, answer: str) -> str:
    """Rewrite a plain answer so that it obeys `instruction` (for demonstrations and tests)."""
    parts = instruction.parts or (instruction,)
    order = sorted(parts, key=lambda p: ["max_words", "hobby", "figure", "language", "prefix", "end_marker", "upper"].index(p.kind))
    text = answer.strip()
    for part in order:
        if part.kind == "max_words":  # leave room for the words other parts add
            added = sum(len(words(_apply_one(p, ""))) for p in parts if p is not part)
            text = " ".join(text.split()[: max(1, int(part.arg) - added)])
        elif not check(part, text):  # an answer that already obeys a part is not edited twice
            text = _apply_one(part, text)
    return text


def _apply_one(part: Instruction, text: str) -> str:
    if part.kind == "hobby":
        return f"{text} I enjoy {part.arg} too."
    if part.kind == "figure":
        return f"{text} - {part.arg}"
    if part.kind == "language":
        return f"{LANGUAGE_GREETINGS[str(part.arg)]} {text}"
    if part.kind == "prefix":
        return f"{part.arg} {text}"
    if part.kind == "end_marker":
        return f"{text} {part.arg}"
    if part.kind == "upper":
        return text.upper()
    raise ValueError(f"unknown instruction kind {part.kind!r}")


def make_instruction(kind: str, value: str | int | None = None) -> Instruction:
    """One single-kind instruction with its long and short wording (for "upper",
    `value` is an alternative wording or None for the default one)."""
    if kind == "hobby":
        return Instruction(f"hobby:{value}", kind, f"You enjoy {value}. Mention {value} in every answer.", f"Hobby: {value}", "mentions", value)
    if kind == "language":
        return Instruction(
            f"language:{value}", kind,
            f"Always answer in {value}, or at least greet the user in {value}.", f"Language: {value}", "language", value,
        )
    if kind == "figure":
        return Instruction(
            f"figure:{value}", kind,
            f"Always act as {value} from now, and sign every answer as {value}.", f"Figure: {value}", "mentions", value,
        )
    if kind == "upper":
        text = value or "Always write your answers in capital letters."
        short = "Capitals only" if value is None else "Upper case only"
        return Instruction("upper" if value is None else "upper:v2", kind, text, short, "upper")
    if kind == "end_marker":
        return Instruction(f"end_marker:{value}", kind, f"End every answer with '{value}'.", f"End: {value}", "ends_with", value)
    if kind == "prefix":
        return Instruction(f"prefix:{value}", kind, f"Start every answer with '{value}'.", f"Start: {value}", "starts_with", value)
    if kind == "max_words":
        return Instruction(f"max_words:{value}", kind, f"Answer in at most {value} words.", f"Max {value} words", "max_words", int(value))
    raise ValueError(f"unknown instruction kind {kind!r}")


def combine(parts: list[Instruction]) -> Instruction:
    if len(parts) == 1:
        return parts[0]
    return Instruction(
        "+".join(p.id for p in parts), "+".join(p.kind for p in parts),
        " ".join(p.text for p in parts), ". ".join(p.short_text for p in parts), "all", None, tuple(parts),
    )


def single_instructions(split: str) -> list[Instruction]:
    """Every single-kind instruction of `split`."""
    values = _VALUES[split]
    singles = []
    for kind in KINDS:
        singles += [make_instruction(kind, value) for value in values[kind]]
    return singles


def build_instructions(split: str = "train", seed: int = 0, n_combined: int | None = None) -> list[Instruction]:
    """Single instructions of `split` plus `n_combined` random pairs of two different kinds.

    Train and held-out sets share kinds but no values (for "upper", which has no
    value, the two splits word the instruction differently).
    """
    if split not in _VALUES:
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"gatt:{split}:{seed}")
    singles = single_instructions(split)
    n_combined = len(singles) if n_combined is None else n_combined
    combos: dict[str, Instruction] = {}
    for _ in range(n_combined * 20):
        if len(combos) >= n_combined:
            break
        a, b = rng.sample(singles, 2)
        if a.kind == b.kind or frozenset({a.kind, b.kind}) in _INCOMPATIBLE:
            continue
        combo = combine(sorted((a, b), key=lambda p: KINDS.index(p.kind)))
        combos.setdefault(combo.id, combo)
    return singles + list(combos.values())


def instruction_text(instruction: Instruction, rng: random.Random, short_probability: float = 0.3) -> str:
    """The text to put in a dialogue: the long form, or sometimes the shortened one."""
    return instruction.short_text if rng.random() < short_probability else instruction.text

