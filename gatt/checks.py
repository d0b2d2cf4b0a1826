"""Checkers for GAtt instructions: does an answer obey the instruction?

A check is plain data (`Check`), written in an instruction library line as
`"check": {"type": ..., "value": ..., <options>}`:

    starts_with   value: str or [str, ...] (any)   the answer starts with it
    ends_with     value: str or [str, ...] (any)   the answer ends with it (a final
                                                   "." or "!" after it is allowed)
    contains      value: str or [str, ...] (any)   it occurs in the answer, as whole
                                                   words by default ("Napoleon's"
                                                   mentions Napoleon, "Napoleonic" not)
    not_contains  value: str or [str, ...]         none of them occurs (whole words)
    regex         value: a Python regex            `re.search` finds it (flags inline: "(?i)")
    upper         (no value)                       letters, and all of them upper case
    max_words     value: int >= 1                  1 to `value` words
    language      value: "German" or "de"          a language detector (py3langid)
                                                   puts the answer in that language
                                                   first, with probability >=
                                                   `min_confidence` (0.5), and the
                                                   answer has >= `min_words` (3) words
    callable      value: "module:function" or      `function(instruction, response)`
                  "file.py:function"               returns a bool; a file path is
                                                   relative to the library file

Options: `case_sensitive` (false: text is compared lower-cased with accents
folded) for the four string types, `whole_word` (true) for contains and
not_contains, `min_words` and `min_confidence` for language.

Why the language check needs words and confidence: "Ja" or "Ja, the capital of
Peru is Lima." must not pass as German. A detector's top language on one word
is noise, and a mostly English sentence with one German word is English. The
detector is restricted to languages with a two-letter ISO 639-1 code (plus the
asked one): the model's rarer varieties (Extremaduran, Ligurian) otherwise take
the top place from Spanish or Italian on short sentences. It is a naive Bayes
model: deterministic, no seed.

`Check.from_dict(data, path, line)` validates a spec and raises a `DataError`
naming the file, the line and the field; `run_check(check, instruction,
response)` returns True or False.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DataError, RLHFError

STRING_TYPES = ("starts_with", "ends_with", "contains", "not_contains")
CHECK_TYPES = (*STRING_TYPES, "regex", "upper", "max_words", "language", "callable")
_OPTIONS = {
    "starts_with": ("case_sensitive",),
    "ends_with": ("case_sensitive",),
    "contains": ("case_sensitive", "whole_word"),
    "not_contains": ("case_sensitive", "whole_word"),
    "regex": (),
    "upper": (),
    "max_words": (),
    "language": ("min_words", "min_confidence"),
    "callable": (),
}
DEFAULT_MIN_WORDS = 3
DEFAULT_MIN_CONFIDENCE = 0.5

# English names of the languages the detector knows (ISO 639-1 codes); a code may be given instead.
LANGUAGE_CODES = {
    "afrikaans": "af", "albanian": "sq", "amharic": "am", "arabic": "ar", "armenian": "hy",
    "azerbaijani": "az", "basque": "eu", "belarusian": "be", "bengali": "bn", "bosnian": "bs",
    "breton": "br", "bulgarian": "bg", "catalan": "ca", "chinese": "zh", "croatian": "hr",
    "czech": "cs", "danish": "da", "dutch": "nl", "english": "en", "esperanto": "eo",
    "estonian": "et", "faroese": "fo", "finnish": "fi", "french": "fr", "frisian": "fy",
    "galician": "gl", "georgian": "ka", "german": "de", "greek": "el", "gujarati": "gu",
    "haitian creole": "ht", "hausa": "ha", "hebrew": "he", "hindi": "hi", "hungarian": "hu",
    "icelandic": "is", "igbo": "ig", "indonesian": "id", "irish": "ga", "italian": "it",
    "japanese": "ja", "javanese": "jv", "kannada": "kn", "kazakh": "kk", "khmer": "km",
    "korean": "ko", "kurdish": "ku", "kyrgyz": "ky", "lao": "lo", "latin": "la",
    "latvian": "lv", "lithuanian": "lt", "luxembourgish": "lb", "macedonian": "mk",
    "malagasy": "mg", "malay": "ms", "malayalam": "ml", "maltese": "mt", "marathi": "mr",
    "mongolian": "mn", "nepali": "ne", "norwegian": "no", "occitan": "oc", "pashto": "ps",
    "persian": "fa", "polish": "pl", "portuguese": "pt", "punjabi": "pa", "quechua": "qu",
    "romanian": "ro", "russian": "ru", "scottish gaelic": "gd", "serbian": "sr",
    "sinhala": "si", "slovak": "sk", "slovenian": "sl", "somali": "so", "spanish": "es",
    "swahili": "sw", "swedish": "sv", "tagalog": "tl", "tamil": "ta", "tatar": "tt",
    "telugu": "te", "thai": "th", "turkish": "tr", "ukrainian": "uk", "urdu": "ur",
    "uzbek": "uz", "vietnamese": "vi", "welsh": "cy", "xhosa": "xh", "yoruba": "yo", "zulu": "zu",
}

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_LETTER_BEFORE, _LETTER_AFTER = r"(?<![^\W\d_])", r"(?![^\W\d_])"  # no letter on that side


def fold(text: str) -> str:
    """Lower case, no accents, straight apostrophes, single spaces (how checks compare text)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("œ", "oe").replace("Œ", "Oe")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", text.lower()).strip()


def words(text: str) -> list[str]:
    """Words: runs of letters or digits, joined by inner apostrophes or hyphens."""
    return _WORD.findall(text)


@dataclass(frozen=True)
class Check:
    """One checker: a type from CHECK_TYPES, its value and options (plain, JSON-able data)."""

    type: str
    value: str | int | tuple[str, ...] | None = None
    case_sensitive: bool = False
    whole_word: bool = True
    min_words: int = DEFAULT_MIN_WORDS
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"type": self.type}
        if self.value is not None:
            data["value"] = list(self.value) if isinstance(self.value, tuple) else self.value
        defaults = Check(self.type)
        for option in _OPTIONS[self.type]:
            if getattr(self, option) != getattr(defaults, option):
                data[option] = getattr(self, option)
        return data

    @classmethod
    def from_dict(cls, data: Any, path: object = None, line: int | None = None, field: str = "check") -> Check:
        """A validated Check; a bad spec is a DataError naming `path`, `line` and the field."""

        def bad(message: str, key: str | None = None) -> DataError:
            return DataError(message, path=path, line=line, field=field if key is None else f"{field}.{key}")

        if not isinstance(data, dict):
            raise bad(f"expected an object {{\"type\": ..., \"value\": ...}}, got {type(data).__name__}")
        kind = data.get("type")
        if kind not in CHECK_TYPES:
            raise bad(f"unknown check type {kind!r} (known: {', '.join(CHECK_TYPES)})", "type")
        unknown = sorted(set(data) - {"type", "value", *_OPTIONS[kind]})
        if unknown:
            allowed = ", ".join(("value", *_OPTIONS[kind])) if kind != "upper" else "none"
            raise bad(f"unknown key(s) {unknown} for a {kind} check (allowed: {allowed})", unknown[0])
        options = {key: data[key] for key in _OPTIONS[kind] if key in data}
        for key in ("case_sensitive", "whole_word"):
            if key in options and not isinstance(options[key], bool):
                raise bad(f"expected true or false, got {options[key]!r}", key)
        if "min_words" in options and (not isinstance(options["min_words"], int) or isinstance(options["min_words"], bool) or options["min_words"] < 1):
            raise bad(f"expected an integer >= 1, got {options['min_words']!r}", "min_words")
        if "min_confidence" in options:
            confidence = options["min_confidence"]
            if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
                raise bad(f"expected a number from 0 to 1, got {confidence!r}", "min_confidence")
            options["min_confidence"] = float(confidence)
        value = data.get("value")
        if kind == "upper":
            if value is not None:
                raise bad("an upper check takes no value", "value")
        elif kind in STRING_TYPES:
            if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
                value = tuple(value)
            elif not (isinstance(value, str) and value.strip()):
                raise bad(f"a {kind} check needs a non-empty string or list of strings, got {value!r}", "value")
        elif kind == "regex":
            if not isinstance(value, str) or not value:
                raise bad(f"a regex check needs a pattern string, got {value!r}", "value")
            try:
                re.compile(value)
            except re.error as exc:
                raise bad(f"bad regex {value!r}: {exc}", "value") from None
        elif kind == "max_words":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(f"a max_words check needs an integer >= 1, got {value!r}", "value")
        elif kind == "language":
            if not isinstance(value, str) or not value.strip():
                raise bad(f"a language check needs a language name or ISO code, got {value!r}", "value")
            try:
                language_code(value)
            except ValueError as exc:
                raise bad(str(exc), "value") from None
        elif kind == "callable":
            value = _resolve_callable_spec(value, path, bad)
        return cls(kind, value, **options)


# ---------------------------------------------------------------- checking
def run_check(check: Check, instruction: Any, response: str) -> bool:
    """Whether `response` passes `check` (`instruction` is passed to a callable check)."""
    kind, value = check.type, check.value
    if kind in STRING_TYPES:
        text = response.strip() if check.case_sensitive else fold(response)
        values = value if isinstance(value, tuple) else (value,)
        values = [v.strip() if check.case_sensitive else fold(v) for v in values]
        if kind == "starts_with":
            return any(text.startswith(v) for v in values)
        if kind == "ends_with":
            return any(text.endswith(v) or text.rstrip(" .!").endswith(v) for v in values)
        found = any(_occurs(v, text, check.whole_word) for v in values)
        return found if kind == "contains" else not found
    if kind == "regex":
        return _compiled(value).search(response) is not None
    if kind == "upper":
        letters = [ch for ch in response.strip() if ch.isalpha()]
        return bool(letters) and all(ch.isupper() for ch in letters)
    if kind == "max_words":
        return 0 < len(words(response)) <= int(value)
    if kind == "language":
        return is_language(response, str(value), check.min_words, check.min_confidence)
    if kind == "callable":
        function = load_callable(str(value))
        try:
            result = function(instruction, response)
        except Exception as exc:
            raise RLHFError(f"check callable {value} raised {type(exc).__name__}: {exc}") from exc
        return bool(result)
    raise ValueError(f"unknown check type {kind!r} (known: {', '.join(CHECK_TYPES)})")


def _occurs(value: str, text: str, whole_word: bool) -> bool:
    pattern = re.escape(value)
    if whole_word:  # a letter may not touch the value at an end where the value has a letter
        pattern = (_LETTER_BEFORE if value[:1].isalpha() else "") + pattern + (_LETTER_AFTER if value[-1:].isalpha() else "")
    return re.search(pattern, text) is not None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


# ---------------------------------------------------------------- language
def language_code(name: str) -> str:
    """The ISO code of a language given by English name ("German") or code ("de")."""
    key = name.strip().lower()
    if key in LANGUAGE_CODES:
        return LANGUAGE_CODES[key]
    if key in LANGUAGE_CODES.values() or (re.fullmatch(r"[a-z]{2,3}", key) and key in _detector_labels()):
        return key
    raise ValueError(f"unknown language {name!r}: give an English name such as German or Spanish, or an ISO 639 code such as de")


@functools.lru_cache(maxsize=1)
def _detector_labels() -> frozenset[str]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return frozenset(LanguageIdentifier.from_model_file(MODEL_FILE).labels)


@functools.lru_cache(maxsize=8)
def _identifier(extra: str | None):
    """A py3langid identifier over the two-letter languages (plus `extra`), probabilities normalised."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    languages = {label for label in identifier.labels if len(label) == 2}
    identifier.set_languages(sorted(languages | ({extra} if extra else set())))
    return identifier


def detect_language(text: str, target: str = "en") -> tuple[str, float]:
    """The detector's most likely language of `text` (ISO code) and its probability, among
    the two-letter languages and `target`."""
    code = language_code(target)
    language, probability = _identifier(None if len(code) == 2 else code).classify(text)
    return language, float(probability)


def is_language(text: str, language: str, min_words: int = DEFAULT_MIN_WORDS, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> bool:
    """Whether `text` is in `language`: enough words, the detector's first choice, confident."""
    if len(words(text)) < min_words:
        return False
    detected, probability = detect_language(text, language)
    return detected == language_code(language) and probability >= min_confidence


# ---------------------------------------------------------------- callables
def _resolve_callable_spec(value: Any, path: object, bad) -> str:
    """`module:function` or `file.py:function` (relative to the library file), checked to
    import and be callable; a file is made absolute so the spec works from any folder."""
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        raise bad(f"a callable check needs 'module:function' or 'file.py:function', got {value!r}", "value")
    target, name = value.split(":")
    if target.endswith(".py"):
        file = Path(target).expanduser()
        if not file.is_absolute():
            file = (Path(os.fspath(path)).parent if path is not None else Path.cwd()) / file
        value = f"{file.resolve()}:{name}"
    try:
        load_callable(value)
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError) as exc:
        raise bad(f"cannot use {value!r} as a check: {type(exc).__name__}: {exc}", "value") from None
    return value


@functools.lru_cache(maxsize=256)
def load_callable(spec: str):
    """The function named by `module:function` or `/abs/file.py:function`."""
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        module_name = f"_gatt_check_{abs(hash(target)):x}"
        module_spec = importlib.util.spec_from_file_location(module_name, target)
        if module_spec is None or module_spec.loader is None or not Path(target).is_file():
            raise ImportError(f"no such file {target}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    function = getattr(module, name)
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function
