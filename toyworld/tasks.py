"""Task families of the toy world: how a prompt is written, recognised and checked.

A `Task` is one checkable request. Families:

- ``capital``      "What is the capital of Peru?"            -> the capital's name
- ``arithmetic``   "What is 47 + 38?" (also -, and x a digit)  -> the number
- ``list``         "List exactly 3 fruits."                    -> 3 distinct valid items
- ``translation``  "Translate 'cat' into French."               -> the word in that language
- ``opposite``     "What is the opposite of 'hot'?"             -> an accepted antonym
- ``format``       a modifier in front of a capital/translation/opposite/list task:
                   "Answer in one word: ..." or "Reply in upper case: ..."
- ``harmful``      a request to do harm (risk categories: hacking, weapons, fraud,
                   drugs, self-harm, violence, theft, privacy, discrimination,
                   harassment) in a frame of one of several styles (questions,
                   imperatives, role-play, "for a story", hypotheticals) -> refuse
- ``borderline``   a request that only looks harmful ("How do I kill the weeds ...")
                   -> help; refusing is a *false refusal*

Recognition (`parse_task`) works on the text of the last user message alone and
searches rather than matches whole strings, so a system message, or a Ghost
Attention instruction appended to the user text, does not break it.

Items are split between the ``train`` and ``heldout`` worlds by a stable hash of
the item (a country, an arithmetic result, a word, a harmful request, ...), so no
prompt text can appear in both splits. Harmful requests are also framed differently
in each split (`tables.HARMFUL_FRAMES`), and the answers the world writes draw on
split-specific material (list vocabularies, wrong answers from the same split,
`tables.*_BY_SPLIT` libraries), so that no response text is shared either.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from functools import cache, lru_cache

from core.refusal import normalize  # noqa: F401 - one normalisation for judges and detector
from toyworld import tables

SPLITS = ("train", "heldout")
HELPFUL_KINDS = ("capital", "arithmetic", "list", "translation", "opposite")
SAFETY_KINDS = ("harmful", "borderline")
MODIFIERS = ("one_word", "upper")

ONE_WORD_PREFIX = "Answer in one word:"
UPPER_PREFIX = "Reply in upper case:"
LANGUAGES = ("French", "Spanish")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
OPERATOR_SYMBOLS = {"+": "+", "-": "-", "*": "x"}

# Other spellings or names that are also right.
CAPITAL_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "Bolivia": ("La Paz",),
    "Ukraine": ("Kiev",),
    "Kazakhstan": ("Nur-Sultan",),
    "India": ("Delhi",),
}


@dataclass(frozen=True)
class Task:
    """One request of the world; `item` identifies it inside its family.

    capital: (country,); arithmetic: (a, op, b) with op in "+-*"; list: (category, n);
    translation: (english, language); opposite: (word,); harmful: (risk, request);
    borderline: (prompt,). `modifier` is None, "one_word" or "upper".
    """

    kind: str
    item: tuple
    modifier: str | None = None

    @property
    def category(self) -> str:
        """Llama 2's IS_SAFETY(p): harmful and borderline prompts form the safety set."""
        return "safety" if self.kind in SAFETY_KINDS else "helpfulness"

    @property
    def family(self) -> str:
        return "format" if self.modifier else self.kind


# ---------------------------------------------------------------- text helpers


def mentions(normalized_text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in already-normalized text as whole words."""
    return _phrase_pattern(normalize(phrase)).search(normalized_text) is not None


@lru_cache(maxsize=8192)
def _phrase_pattern(normalized_phrase: str) -> re.Pattern:
    return re.compile(r"(?<![a-z0-9])" + re.escape(normalized_phrase) + r"(?![a-z0-9])")


def mentions_word(normalized_text: str, word: str) -> bool:
    """Whether `word` occurs in already-normalized text as a whole word, allowing the
    regular inflections (-s, -es, -d, -ed, -ing; "recycle" -> "recycling", "run" ->
    "running"):
    "ps" is not in "helps", "kill" is in "killing"."""
    return _word_pattern(normalize(word)).search(normalized_text) is not None


@lru_cache(maxsize=8192)
def _word_pattern(word: str) -> re.Pattern:
    forms = [re.escape(word) + r"(?:s|es|d|ed|ing)?"]
    if word.endswith("e") and len(word) > 2:
        forms.append(re.escape(word[:-1]) + "ing")
    if len(word) >= 3 and word[-1] in "bdgmnprt" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        forms.append(re.escape(word + word[-1]) + "(?:ing|ed)")  # "run" -> "running"
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(forms) + r")(?![a-z0-9])")


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:['-][^\W_]+)*", text)


_NUMBER_RE = re.compile(r"(?:(?<![\w-])-)?(?:(?<![\d.])\d{1,3}(?:,\d{3})+(?!\d)|(?<![\d.,])\d+(?!\d))")


def numbers_in(text: str) -> list[int]:
    """Integers written in `text` ("1,234" is 1234; "= -5" is -5, but "62-57" is 62 and 57)."""
    return [int(m.replace(",", "")) for m in _NUMBER_RE.findall(text)]


def split_of(key: str) -> str:
    """Stable train/heldout assignment of an item: a quarter of the items are held out."""
    digest = hashlib.md5(key.encode("utf-8")).digest()
    return "heldout" if digest[0] % 4 == 0 else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# ---------------------------------------------------------------- items per split


def _arithmetic_key(result: int) -> str:
    """By result: "The answer is 85." belongs to one split only."""
    return f"arithmetic:{result}"


def _split_key(kind: str, item: tuple) -> str:
    if kind == "translation":
        return f"translation:{item[0]}"
    if kind == "arithmetic":
        return _arithmetic_key(arithmetic_result(*item))
    return f"{kind}:" + "|".join(str(part) for part in item)


def split_of_task(task: Task) -> str:
    """The split a task's item belongs to (format tasks: their underlying item's)."""
    if task.kind == "harmful":
        return "heldout" if task.item in _harmful_items("heldout") else "train"
    return split_of(_split_key(task.kind, task.item))


@cache
def list_vocabulary(category: str, split: str) -> tuple[str, ...]:
    """The items of a list category that `split`'s answers use (every third item is
    held out): a list the world writes for one split never appears in the other.
    The checker accepts every item of the category, whichever split it belongs to."""
    _check_split(split)
    vocabulary = tables.LIST_CATEGORIES[category]
    return tuple(item for i, item in enumerate(vocabulary) if ("heldout" if i % 3 == 1 else "train") == split)


def harmful_frames(split: str) -> tuple[tuple[str, str, str, str], ...]:
    """The frames (split, style, person, template) of `split`'s harmful prompts."""
    _check_split(split)
    return tuple(frame for frame in tables.HARMFUL_FRAMES if frame[0] == split)


@cache
def _all_items(kind: str) -> tuple[tuple, ...]:
    if kind == "capital":
        return tuple((country,) for country in tables.CAPITALS)
    if kind == "arithmetic":
        add = [(a, "+", b) for a in range(11, 100) for b in range(11, 100)]
        sub = [(a, "-", b) for a in range(20, 100) for b in range(11, a)]
        mul = [(a, "*", b) for a in range(11, 100) for b in range(3, 10)]
        return tuple(add + sub + mul)
    if kind == "list":
        return tuple((category, n) for category in tables.LIST_CATEGORIES for n in NUMBER_WORDS)
    if kind == "translation":
        return tuple((word, language) for word in tables.DICTIONARY for language in LANGUAGES)
    if kind == "opposite":
        return tuple((word,) for word in tables.OPPOSITES)
    if kind == "harmful":
        return tuple(tables.HARMFUL_REQUESTS)
    if kind == "borderline":
        return tuple((prompt,) for prompt, _, _ in tables.BORDERLINE_REQUESTS)
    raise ValueError(f"unknown task kind {kind!r}")


@cache
def items(kind: str, split: str) -> tuple[tuple, ...]:
    """The items of one family that belong to `split`."""
    _check_split(split)
    if kind == "harmful":
        return _harmful_items(split)
    return tuple(item for item in _all_items(kind) if split_of(_split_key(kind, item)) == split)


@cache
def _harmful_items(split: str) -> tuple[tuple, ...]:
    """Harmful requests alternate between splits within each risk category, so both
    splits cover every category with different requests."""
    chosen, seen = [], {}
    for risk, request in tables.HARMFUL_REQUESTS:
        index = seen.get(risk, 0)
        seen[risk] = index + 1
        if ("heldout" if index % 3 == 1 else "train") == split:
            chosen.append((risk, request))
    return tuple(chosen)


# ---------------------------------------------------------------- rendering

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": (
        "What is the capital of {country}?",
        "Which city is the capital of {country}?",
        "Name the capital city of {country}.",
    ),
    "arithmetic": (
        "What is {a} {op} {b}?",
        "Compute {a} {op} {b}.",
        "Calculate {a} {op} {b}.",
    ),
    "list": (
        "List exactly {n} {category}.",
        "Name exactly {n} {category}.",
        "Give me exactly {n} {category}, separated by commas.",
    ),
    "translation": (
        "Translate '{word}' into {language}.",
        "How do you say '{word}' in {language}?",
        "What is the {language} word for '{word}'?",
    ),
    "opposite": (
        "What is the opposite of '{word}'?",
        "Give the opposite of the word '{word}'.",
    ),
}


def render(task: Task, rng: random.Random) -> str:
    """The user text of `task`, in a phrasing drawn from `rng`."""
    if task.kind == "harmful":
        _, _, person, template = rng.choice(harmful_frames(split_of_task(task)))
        return template.format(request=tables.request_text(task.item[1], person))
    if task.kind == "borderline":
        return task.item[0]
    template = rng.choice(_TEMPLATES[task.kind])
    if task.kind == "capital":
        text = template.format(country=task.item[0])
    elif task.kind == "arithmetic":
        a, op, b = task.item
        text = template.format(a=a, op=OPERATOR_SYMBOLS[op], b=b)
    elif task.kind == "list":
        category, n = task.item
        text = template.format(n=n if rng.random() < 0.5 else NUMBER_WORDS[n], category=category)
    elif task.kind == "translation":
        text = template.format(word=task.item[0], language=task.item[1])
    else:
        text = template.format(word=task.item[0])
    if task.modifier == "one_word":
        text = f"{ONE_WORD_PREFIX} {text}"
    elif task.modifier == "upper":
        text = f"{UPPER_PREFIX} {text}"
    return text


def accepts_modifier(task: Task, modifier: str) -> bool:
    """One-word answers exist only for single-word golds; upper case fits all but arithmetic."""
    if task.kind not in ("capital", "translation", "opposite", "list"):
        return False
    if modifier == "one_word":
        return task.kind != "list" and len(words(gold_core(task))) == 1
    return True


# ---------------------------------------------------------------- recognition

_ARITHMETIC_RE = re.compile(r"(\d{1,3})\s*(\+|-|\*|x|×|plus|minus|times)\s*(\d{1,3})\s*[?.=]")
_LIST_RE = re.compile(r"\bexactly (\d|two|three|four|five) (" + "|".join(tables.LIST_CATEGORIES) + r")\b")
_TRANSLATION_RE = re.compile(
    r"translate '([a-z ]+)' (?:into|to) (french|spanish)|say '([a-z ]+)' in (french|spanish)|(french|spanish) word for '([a-z ]+)'"
)
_OPPOSITE_RE = re.compile(r"opposite of (?:the word )?'([a-z]+)'")
_OPERATORS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "*": "*", "x": "*", "×": "*", "times": "*"}
_WORD_NUMBERS = {word: n for n, word in NUMBER_WORDS.items()}


@cache
def _harmful_patterns() -> tuple[tuple[tuple, tuple[str, ...]], ...]:
    """Each harmful item with its request in every person, normalized."""
    return tuple(
        ((risk, request), tuple(normalize(tables.request_text(request, person)) for person in tables.PERSONS))
        for risk, request in tables.HARMFUL_REQUESTS
    )


@lru_cache(maxsize=4096)
def parse_task(text: str) -> Task | None:
    """Recognise the world's task in a user message, or None for a foreign prompt
    (every phrase is matched as whole words)."""
    norm = normalize(text)
    modifier = "one_word" if mentions(norm, ONE_WORD_PREFIX) else "upper" if mentions(norm, UPPER_PREFIX) else None
    for item, forms in _harmful_patterns():
        if any(mentions(norm, form) for form in forms):
            return Task("harmful", item)
    for prompt, _, _ in tables.BORDERLINE_REQUESTS:
        if mentions(norm, prompt):
            return Task("borderline", (prompt,))
    task = _parse_helpful(norm)
    if task is None:
        return None
    return Task(task.kind, task.item, modifier)


def _parse_helpful(norm: str) -> Task | None:
    if m := _LIST_RE.search(norm):
        count = m.group(1)
        n = int(count) if count.isdigit() else _WORD_NUMBERS[count]
        return Task("list", (m.group(2), n))
    if m := _TRANSLATION_RE.search(norm):
        groups = m.groups()
        word, language = (groups[0], groups[1]) if groups[0] else (groups[2], groups[3]) if groups[2] else (groups[5], groups[4])
        english = next((w for w in tables.DICTIONARY if normalize(w) == word), None)
        if english is not None:
            return Task("translation", (english, language.capitalize()))
    if m := _OPPOSITE_RE.search(norm):
        if m.group(1) in tables.OPPOSITES:
            return Task("opposite", (m.group(1),))
    if m := _ARITHMETIC_RE.search(norm):
        return Task("arithmetic", (int(m.group(1)), _OPERATORS[m.group(2)], int(m.group(3))))
    if mentions(norm, "capital"):
        countries = [c for c in tables.CAPITALS if mentions(norm, c)]
        if countries:
            return Task("capital", (max(countries, key=len),))
    return None


def last_user_text(prompt: list[dict] | dict | str) -> str:
    """The content of the last user message of a prompt (messages, Prompt dict or plain text)."""
    if isinstance(prompt, str):
        return prompt
    messages = prompt["messages"] if isinstance(prompt, dict) else prompt
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def task_of(prompt: list[dict] | dict | str) -> Task | None:
    return parse_task(last_user_text(prompt))


# ---------------------------------------------------------------- gold answers


def arithmetic_result(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def list_items(category: str, n: int, rng: random.Random, split: str = "train") -> list[str]:
    return rng.sample(list_vocabulary(category, split), n)


def gold_core(task: Task) -> str:
    """The bare right answer (a name, a number, a word); lists use their first items."""
    if task.kind == "capital":
        return tables.CAPITALS[task.item[0]]
    if task.kind == "arithmetic":
        return str(arithmetic_result(*task.item))
    if task.kind == "translation":
        french, spanish = tables.DICTIONARY[task.item[0]]
        return french if task.item[1] == "French" else spanish
    if task.kind == "opposite":
        return tables.OPPOSITES[task.item[0]][0]
    if task.kind == "list":
        category, n = task.item
        return ", ".join(tables.LIST_CATEGORIES[category][:n])
    raise ValueError(f"{task.kind} tasks have no single right answer")


def gold_answer(task: Task, rng: random.Random) -> str:
    """A short correct answer to a benign task, in a phrasing drawn from `rng`."""
    if task.kind == "borderline":
        return next(answer for prompt, _, answer in tables.BORDERLINE_REQUESTS if prompt == task.item[0])
    if task.kind == "harmful":
        return rng.choice(tables.REFUSALS_BY_SPLIT[split_of_task(task)])
    if task.modifier == "one_word":
        return gold_core(task) + rng.choice(("", "."))
    answer = _plain_gold_answer(task, rng)
    return answer.upper() if task.modifier == "upper" else answer


def _plain_gold_answer(task: Task, rng: random.Random) -> str:
    core = gold_core(task)
    if task.kind == "capital":
        country = task.item[0]
        return rng.choice((f"The capital of {country} is {core}.", f"{core}.", f"{core} is the capital of {country}."))
    if task.kind == "arithmetic":
        a, op, b = task.item
        return rng.choice((f"{a} {OPERATOR_SYMBOLS[op]} {b} = {core}.", f"The answer is {core}.", core))
    if task.kind == "translation":
        word, language = task.item
        return rng.choice((f"The {language} word for '{word}' is '{core}'.", f"In {language}, '{word}' is '{core}'.", f"{core}"))
    if task.kind == "opposite":
        return rng.choice((f"The opposite of '{task.item[0]}' is '{core}'.", f"{core.capitalize()}."))
    category, n = task.item
    return format_list(category, list_items(category, n, rng, split_of_task(task)), rng)


def format_list(category: str, chosen: list[str], rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"Here are {len(chosen)} {category}: {', '.join(chosen)}."
    if style == 1:
        return "\n".join(f"{i}. {item.capitalize()}" for i, item in enumerate(chosen, start=1))
    return ", ".join(item.capitalize() if i == 0 else item for i, item in enumerate(chosen))


def wrong_answer(task: Task, rng: random.Random) -> str:
    """A confident, well-formed, wrong answer to a benign task. Its wrong material
    (another capital, word or opposite; a wrong number) comes from the task's own
    split, so no wrong answer of one split is a right answer of the other."""
    split = split_of_task(task)
    if task.kind == "capital":
        country = task.item[0]
        others = [tables.CAPITALS[k] for (k,) in items("capital", split) if k != country]
        other = rng.choice(others)
        answer = rng.choice((f"The capital of {country} is {other}.", f"{other}."))
    elif task.kind == "arithmetic":
        answer = _wrong_arithmetic(task.item, rng, split)
    elif task.kind == "translation":
        word, language = task.item
        other_word = rng.choice(sorted({w for w, _ in items("translation", split) if w != word}))
        french, spanish = tables.DICTIONARY[other_word]
        answer = f"The {language} word for '{word}' is '{rng.choice((french, spanish))}'."
    elif task.kind == "opposite":
        word = task.item[0]
        accepted = set(tables.OPPOSITES[word])
        others = [tables.OPPOSITES[w][0] for (w,) in items("opposite", split) if w != word and tables.OPPOSITES[w][0] not in accepted]
        answer = f"The opposite of '{word}' is '{rng.choice(others)}'."
    elif task.kind == "list":
        category, n = task.item
        answer = format_list(category, _wrong_list(category, n, rng, split), rng)
    else:
        raise ValueError(f"{task.kind} tasks have no wrong answer")
    if task.modifier == "one_word":
        answer = words(answer)[-1].capitalize()
    return answer.upper() if task.modifier == "upper" else answer


def _wrong_arithmetic(item: tuple, rng: random.Random, split: str) -> str:
    """A wrong result in the forms a right one takes ("47 + 38 = 84.", "The answer is
    84.", "84"), so the form says nothing about correctness: with wrong answers always
    written with their operands, the quickstart's helpfulness RM learned "operands
    written out -> wrong" and ranked the SFT model's arithmetic samples against gold
    (41 % agreement), its best-of-6 picks scoring below the mean sample. A bare result
    is used only when it is a result of the task's own split (the splits go by result),
    so no wrong answer of one split is a right answer of the other."""
    a, op, b = item
    result = arithmetic_result(a, op, b)
    values = [result + offset for offset in (1, 2, 10, -1, -10, 11)]
    own = [value for value in values if split_of(_arithmetic_key(value)) == split]
    value = rng.choice(own or values)
    written_out = f"{a} {OPERATOR_SYMBOLS[op]} {b} = {value}."
    if not own:
        return written_out
    return rng.choice((written_out, f"The answer is {value}.", str(value)))


def _wrong_list(category: str, n: int, rng: random.Random, split: str = "train") -> list[str]:
    """Off by one, an intruder from another category, or a duplicate (from `split`'s vocabularies)."""
    vocabulary = list_vocabulary(category, split)
    mistake = rng.randrange(3)
    if mistake == 0:
        return rng.sample(vocabulary, n + rng.choice((-1, 1)))
    if mistake == 1:
        other = rng.choice([c for c in tables.LIST_CATEGORIES if c != category])
        return rng.sample(vocabulary, n - 1) + [rng.choice(list_vocabulary(other, split))]
    chosen = rng.sample(vocabulary, n - 1)
    return chosen + [chosen[0]]


def format_violation(task: Task, rng: random.Random) -> str:
    """A right answer that ignores the task's format modifier (lower case / a full sentence)."""
    plain = Task(task.kind, task.item)
    answer = _plain_gold_answer(plain, rng)
    if task.modifier == "one_word" and len(words(answer)) == 1:
        answer = f"The answer is {answer}"
    return answer.lower() if task.modifier == "upper" else answer


# ---------------------------------------------------------------- checking


def correctness(task: Task, response: str) -> float:
    """How right `response` is for a benign checkable task, in [0, 1], ignoring style.

    1 for a right answer that respects the format modifier; a right answer that
    breaks the modifier keeps 40 %; wrong answers get 0.1 (an attempt, better
    than a refusal); wrong lists get partial credit up to 0.4.
    """
    norm = normalize(response)
    if task.kind == "capital":
        score = 1.0 if _capital_is_right(task.item[0], norm) else 0.1
    elif task.kind == "arithmetic":
        score = 1.0 if _arithmetic_is_right(task.item, response) else 0.1
    elif task.kind == "translation":
        score = 1.0 if mentions(norm, gold_core(task)) else 0.1
    elif task.kind == "opposite":
        score = 1.0 if any(mentions(norm, o) for o in tables.OPPOSITES[task.item[0]]) else 0.1
    elif task.kind == "list":
        score = list_score(task.item[0], task.item[1], norm)
    else:
        raise ValueError(f"{task.kind} tasks are not checked by correctness()")
    if task.modifier and not respects_modifier(task.modifier, response):
        score *= 0.4
    return score


def respects_modifier(modifier: str, response: str) -> bool:
    if modifier == "one_word":
        return len(words(response)) == 1
    letters = [ch for ch in response if ch.isalpha()]
    return bool(letters) and all(ch.isupper() for ch in letters)


def _capital_is_right(country: str, norm: str) -> bool:
    right = (tables.CAPITALS[country],) + CAPITAL_ALTERNATIVES.get(country, ())
    if not any(mentions(norm, name) for name in right):
        return False
    others = [c for k, c in tables.CAPITALS.items() if k != country and not any(mentions(normalize(r), c) for r in right)]
    return not any(mentions(norm, other) for other in others)  # hedging between cities is wrong


def _arithmetic_is_right(item: tuple, response: str) -> bool:
    a, op, b = item
    result = arithmetic_result(a, op, b)
    found = set(numbers_in(response))
    return result in found and found <= {a, b, result}


@cache
def _item_patterns(category: str) -> tuple[tuple[str, re.Pattern], ...]:
    patterns = []
    for item in tables.LIST_CATEGORIES[category]:
        forms = {item, item + "s", item + "es"}
        if item.endswith("y"):
            forms.add(item[:-1] + "ies")
        if item.endswith("f"):
            forms.add(item[:-1] + "ves")
        forms |= {"mice"} if item == "mouse" else set()
        alternation = "|".join(sorted(map(re.escape, forms), key=len, reverse=True))
        patterns.append((item, re.compile(r"(?<![a-z])(?:" + alternation + r")(?![a-z])")))
    return tuple(patterns)


def items_mentioned(category: str, norm: str) -> set[str]:
    return {item for item, pattern in _item_patterns(category) if pattern.search(norm)}


def list_score(category: str, n: int, norm: str) -> float:
    """1 for exactly n distinct items of the category and no intruders, else partial credit.

    Only items in the world's vocabulary are recognised: a valid item that the
    table lacks counts as missing.
    """
    valid = items_mentioned(category, norm)
    intruders = set().union(*(items_mentioned(other, norm) for other in tables.LIST_CATEGORIES if other != category))
    if len(valid) == n and not intruders:
        return 1.0
    return 0.4 * min(len(valid), n) / max(len(valid) + len(intruders), n)


def word_budget(task: Task | None) -> int:
    """Words a complete answer needs at most; longer answers count as rambling."""
    if task is None:
        return 80
    if task.kind == "list":
        return 12 + 3 * task.item[1]
    return {"borderline": 60, "harmful": 50, "arithmetic": 15}.get(task.kind, 20)


def borderline_keywords(task: Task) -> tuple[str, ...]:
    return next(keywords for prompt, keywords, _ in tables.BORDERLINE_REQUESTS if prompt == task.item[0])


def topic_words_mentioned(task: Task, response: str) -> set[str]:
    """The borderline request's on-topic keywords that `response` mentions as whole
    words, leaving out those the request itself contains (echoing the question is not
    an answer): "I hope this helps." mentions none of "ps", "kill", "process"."""
    norm, asked = normalize(response), normalize(task.item[0])
    return {kw for kw in borderline_keywords(task) if mentions_word(norm, kw) and not mentions_word(asked, kw)}
