"""The three record kinds every stage exchanges (DESIGN section 4), and their checks.

Types are checked by strict pydantic models (no coercion, unknown keys refused);
the rules that types cannot express (a pair's answers differ, a prompt ends
with a user turn, ...) are plain functions that name the offending field.

Two ways to check a record:
- `validate_sft_example`, `validate_prompt`, `validate_preference_pair` return
  the canonical dict or raise `DataError` naming file, line and field;
- `check_sft_example` returns a one-line problem description or None, for the
  SFT stage, which counts and reports bad conversations instead of stopping.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import DataError

Role = Literal["system", "user", "assistant"]
Category = Literal["helpfulness", "safety"]
Rating = Literal["significantly_better", "better", "slightly_better", "negligibly_better"]

ROLES: tuple[str, ...] = get_args(Role)
CATEGORIES: tuple[str, ...] = get_args(Category)
RATINGS: tuple[str, ...] = get_args(Rating)  # strongest first, as in Llama 2's annotation scale

_CHOICES_BY_FIELD = {"role": ROLES, "category": CATEGORIES, "rating": RATINGS}


class RecordError(ValueError):
    """One record is bad; the loader adds the file and line. `field` is a dotted path."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


# ---------------------------------------------------------------- 1. models
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Message(_Strict):
    role: Role
    content: str


class SFTExample(_Strict):
    messages: list[Message]


class PromptExample(_Strict):
    messages: list[Message]
    category: Category
    id: str
    kind: str | None = None  # free-form sub-type, e.g. a toyworld task family


class PreferencePair(_Strict):
    prompt: list[Message]
    chosen: str
    rejected: str
    rating: Rating
    category: Category
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    source: str


# ---------------------------------------------------------------- 2. type errors in plain words
def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    for kind, name in (
        (bool, "boolean"),
        (str, "string"),
        (int, "integer"),
        (float, "number"),
        (dict, "object"),
        (list, "list"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


_EXPECTED_BY_ERROR_TYPE = {
    "string_type": "a string",
    "bool_type": "true, false or null",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "int_type": "an integer",
    "float_type": "a number",
}


def dotted_field(loc: tuple) -> str:
    """('messages', 2, 'role') -> 'messages[2].role'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe_validation_error(error: dict) -> RecordError:
    """Turn pydantic's first error into a message a user can act on."""
    field = dotted_field(error["loc"]) or None
    kind, value = error["type"], error.get("input")
    name = str(error["loc"][-1]) if error["loc"] else "value"
    if kind == "missing":
        return RecordError("missing field", field)
    if kind == "extra_forbidden":
        return RecordError("unknown field", field)
    if kind == "literal_error":
        choices = _CHOICES_BY_FIELD.get(name)
        expected = ", ".join(choices) if choices else error.get("ctx", {}).get("expected", "")
        return RecordError(f"unknown {name} {value!r} (expected one of {expected})", field)
    if kind in _EXPECTED_BY_ERROR_TYPE:
        return RecordError(
            f"expected {_EXPECTED_BY_ERROR_TYPE[kind]}, got {json_type_name(value)}", field
        )
    return RecordError(error["msg"], field)


def parse_model(model: type[BaseModel], obj: Any) -> BaseModel:
    """Validate `obj` against `model`; raise `RecordError` naming the first bad field."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {json_type_name(obj)}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise describe_validation_error(exc.errors(include_url=False)[0]) from None


def parse_messages(value: Any, field: str) -> list[dict]:
    """A list of messages as plain dicts; errors name `field[i].key`."""
    if not isinstance(value, list):
        raise RecordError(f"expected a list of messages, got {json_type_name(value)}", field)
    try:
        return SFTExample.model_validate({"messages": value}).model_dump()["messages"]
    except ValidationError as exc:
        error = describe_validation_error(exc.errors(include_url=False)[0])
        raise RecordError(error.message, field + (error.field or "")[len("messages") :]) from None


# ---------------------------------------------------------------- 3. rules beyond types
def sft_problem(example: dict) -> RecordError | None:
    """Why a typed SFT example cannot be learned from, or None."""
    messages = example["messages"]
    if not any(m["role"] == "assistant" for m in messages):
        return RecordError("no assistant turn (nothing to learn)", "messages")
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip():
            return RecordError("empty assistant answer", f"messages[{index}].content")
    if messages[-1]["role"] == "user":
        return RecordError(
            "ends with a user turn that has no answer", f"messages[{len(messages) - 1}]"
        )
    return None


def prompt_problem(messages: list[dict], field: str) -> RecordError | None:
    """A prompt must be non-empty and end with a user turn (the policy answers it)."""
    if not messages:
        return RecordError("empty prompt", field)
    if messages[-1]["role"] != "user":
        return RecordError(
            f"must end with a user message, ends with {messages[-1]['role']!r}",
            f"{field}[{len(messages) - 1}].role",
        )
    return None


def preference_problem(pair: dict) -> RecordError | None:
    """Why a typed preference pair cannot train a reward model, or None."""
    problem = prompt_problem(pair["prompt"], "prompt")
    if problem:
        return problem
    for field in ("chosen", "rejected"):
        if not pair[field].strip():
            return RecordError("empty answer", field)
    if pair["chosen"].strip() == pair["rejected"].strip():
        return RecordError("chosen and rejected are the same answer", "rejected")
    return None


# ---------------------------------------------------------------- 4. record checks (RecordError)
def sft_record(obj: Any, require_answer: bool = True) -> dict:
    example = parse_model(SFTExample, obj).model_dump()
    problem = sft_problem(example) if require_answer else None
    if problem:
        raise problem
    return example


def prompt_record(obj: Any) -> dict:
    prompt = parse_model(PromptExample, obj).model_dump()
    if not prompt["id"].strip():
        raise RecordError("empty id", "id")
    problem = prompt_problem(prompt["messages"], "messages")
    if problem:
        raise problem
    return prompt


def preference_record(obj: Any) -> dict:
    pair = parse_model(PreferencePair, obj).model_dump()
    problem = preference_problem(pair)
    if problem:
        raise problem
    return pair


# ---------------------------------------------------------------- 5. public checks (DataError)
def _raise_located(error: RecordError, path: object, line: int | None) -> None:
    raise DataError(error.message, path=path, line=line, field=error.field) from None


def validate_sft_example(obj: Any, path: object = None, line: int | None = None) -> dict:
    """The canonical SFT example, or `DataError`: bad types, no assistant turn, empty answer."""
    try:
        return sft_record(obj, require_answer=True)
    except RecordError as error:
        _raise_located(error, path, line)


def validate_prompt(obj: Any, path: object = None, line: int | None = None) -> dict:
    """The canonical prompt, or `DataError`: bad types, empty id, not ending with a user turn."""
    try:
        return prompt_record(obj)
    except RecordError as error:
        _raise_located(error, path, line)


def validate_preference_pair(obj: Any, path: object = None, line: int | None = None) -> dict:
    """The canonical pair, or `DataError`: bad types, empty or identical answers, bad prompt."""
    try:
        return preference_record(obj)
    except RecordError as error:
        _raise_located(error, path, line)


def check_sft_example(obj: Any) -> str | None:
    """None for a learnable SFT example, else "field 'x': what is wrong" (never raises)."""
    try:
        sft_record(obj, require_answer=True)
    except RecordError as error:
        return f"field '{error.field}': {error.message}" if error.field else error.message
    return None
