"""Adapters: public data formats mapped onto the canonical records (DESIGN section 4).

An adapter is selected by name (`ADAPTERS[name]`) or, when none is named, from
the keys of a source's first record (`detect_adapter`). Each adapter offers
converters for some of the three kinds (`sft`, `prompts`, `preferences`); a
converter takes `(record, index, options)` and returns canonical dicts (zero,
one or several per record), raising `RecordError` that names the bad field.
The loader then checks every returned dict against the strict schemas.

| name | record | sft | prompts | preferences |
| --- | --- | --- | --- | --- |
| `canonical` | the project's own schema (unknown keys refused; SFT rows may carry other keys, only `messages` is read) | yes | yes | yes |
| `plain` | `messages`, or `prompt` (text or messages) with `completion`/`response` (text, or TRL's conversational `[{"role": "assistant", ...}]`); `prompt` or `messages` (+ optional `id`, `category`, `kind`); `prompt`, `chosen`, `rejected` (answers as text or as TRL's conversational lists; + optional `rating`, `category`, `chosen_safe`, `rejected_safe`, `source`) | yes | yes | yes |
| `hh-rlhf` | Anthropic HH-RLHF `{"chosen": transcript, "rejected": transcript}` | chosen transcript | shared turns | one pair |
| `implicit-prompt` | TRL's implicit-prompt pairs `{"chosen": [messages], "rejected": [messages]}`: the same prompt turns, then a different last assistant turn | chosen conversation | shared turns | one pair |
| `pku-saferlhf` | PKU-SafeRLHF `prompt, response_0/1, better_response_id, safer_response_id, is_response_0/1_safe` | - | yes | two pairs |
| `ultrafeedback` | scored pairs `prompt, chosen, rejected, score_chosen, score_rejected` | - | yes | one pair |

Mappings that are choices, not facts of the formats:
- Ratings: formats without a rating get `default_rating`. UltraFeedback's score gap
  (scores on a 1-10 scale) maps with `rating_thresholds=(3, 2, 1)`: gap >= 3
  `significantly_better`, >= 2 `better`, >= 1 `slightly_better`, else
  `negligibly_better`; a negative gap is a bad record.
- PKU-SafeRLHF gives one *helpfulness* pair (chosen = `better_response_id`) and one
  *safety* pair (chosen = `safer_response_id`) per row, both with the responses'
  safety labels; `category=` keeps only one of the two. A PKU prompt is a safety
  prompt (Llama 2's IS_SAFETY) when at least one of its responses is unsafe.
- HH-RLHF: the prompt is the turns before the last `Assistant:`, which must be the
  same in both transcripts; consecutive turns of one speaker (a known quirk of
  the data) are merged; the category is `category=` if given, else `safety` when
  the source name says `harmless` or `red-team`, else `helpfulness`.
- Implicit-prompt pairs: the prompt is every turn before the last (assistant) one, which
  must be the same in both conversations; `rating`/`category` are read when present.
- Detection looks at the first record's keys and, where keys alone cannot tell
  (`chosen`/`rejected` as HH-RLHF text or as TRL message lists), at their types.
- Records without an id get `p{index}` (0-based position in the source); records
  without a category get `category=` or `helpfulness`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.data.schemas import (
    PreferencePair,
    PromptExample,
    RecordError,
    SFTExample,
    json_type_name,
    parse_messages,
)


@dataclass(frozen=True)
class AdapterOptions:
    """What a converter may need beyond the record itself."""

    default_rating: str = "better"
    category: str | None = None
    rating_thresholds: tuple[float, float, float] = (3.0, 2.0, 1.0)
    source_name: str = ""  # the source as the user named it (path or hub name)


Converter = Callable[[dict, int, AdapterOptions], list[dict]]


@dataclass(frozen=True)
class Adapter:
    name: str
    description: str
    sft: Converter | None = None
    prompts: Converter | None = None
    preferences: Converter | None = None
    # (kind, a source's first record) -> whether the source looks like this format
    matches: Callable[[str, dict], bool] | None = None

    def converter(self, kind: str) -> Converter | None:
        return getattr(self, kind)


# ---------------------------------------------------------------- 1. field readers
def required(record: dict, name: str) -> Any:
    if name not in record:
        raise RecordError("missing field", name)
    if record[name] is None:
        raise RecordError("no value (null, or an empty CSV cell)", name)
    return record[name]


def text(record: dict, name: str) -> str:
    value = required(record, name)
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {json_type_name(value)}", name)
    return value


def optional_text(record: dict, name: str) -> str | None:
    return None if record.get(name) is None else text(record, name)


def number(record: dict, name: str) -> float:
    """A finite number; numeric text is accepted (CSV cells are text)."""
    value = required(record, name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RecordError(f"expected a number, got {value!r}", name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"expected a finite number, got {value!r}", name)
    return float(value)


def prompt_messages(value: Any, name: str) -> list[dict]:
    """A prompt given as text (one user turn) or as a list of messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return parse_messages(value, name)
    raise RecordError(f"expected a string or a list of messages, got {json_type_name(value)}", name)


def split_conversation(value: Any, name: str) -> tuple[list[dict], str]:
    """(turns before the answer, answer) of a message list ending with an assistant turn."""
    messages = parse_messages(value, name)
    if not messages or messages[-1]["role"] != "assistant":
        raise RecordError("expected a conversation ending with an assistant message", name)
    return messages[:-1], messages[-1]["content"]


def answer_text(value: Any, name: str) -> str:
    """An answer given as text, or as a conversation whose last (assistant) turn is the answer."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return split_conversation(value, name)[1]
    raise RecordError(f"expected a string or a list of messages, got {json_type_name(value)}", name)


def prompt_id(record: dict, index: int, name: str = "id") -> str:
    """The record's id (integers, as CSV ids often are, become text), else `p{index}`."""
    value = record.get(name)
    if value is None:
        return f"p{index}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {json_type_name(value)}", name)
    return value


def category_of(record: dict, options: AdapterOptions, fallback: str = "helpfulness") -> Any:
    return record.get("category") or options.category or fallback


def rating_from_score_gap(
    gap: float, thresholds: tuple[float, float, float] = (3.0, 2.0, 1.0)
) -> str:
    """Llama 2's 4-level rating from a score difference (see the module docstring)."""
    significantly, better, slightly = thresholds
    if gap >= significantly:
        return "significantly_better"
    if gap >= better:
        return "better"
    if gap >= slightly:
        return "slightly_better"
    return "negligibly_better"


# ---------------------------------------------------------------- 2. canonical and plain
def canonical_record(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    return [record]  # the loader's strict schema check is the whole conversion


def canonical_sft(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    """SFT rows of this project carry ids and other bookkeeping beside `messages`
    (RS targets, GAtt dialogues, replayed demonstrations): only `messages` is read."""
    return [{"messages": required(record, "messages")}]


def plain_sft(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    if "messages" in record:
        return [{"messages": parse_messages(required(record, "messages"), "messages")}]
    messages = prompt_messages(required(record, "prompt"), "prompt")
    answer_field = next(
        (name for name in ("completion", "response") if record.get(name) is not None), None
    )
    if answer_field is None:
        raise RecordError("missing field (expected 'completion' or 'response')", "completion")
    system = optional_text(record, "system")
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    answer = record[answer_field]
    if isinstance(answer, list):  # TRL's conversational prompt-completion
        return [{"messages": [*messages, *parse_messages(answer, answer_field)]}]
    return [{"messages": [*messages, {"role": "assistant", "content": text(record, answer_field)}]}]


def plain_prompt(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    if "messages" in record:
        messages = parse_messages(required(record, "messages"), "messages")
    else:
        messages = prompt_messages(required(record, "prompt"), "prompt")
    prompt = {
        "messages": messages,
        "category": category_of(record, options),
        "id": prompt_id(record, index),
    }
    prompt["kind"] = optional_text(record, "kind")
    return [prompt]


def plain_pair(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    return [
        {
            "prompt": prompt_messages(required(record, "prompt"), "prompt"),
            "chosen": answer_text(required(record, "chosen"), "chosen"),
            "rejected": answer_text(required(record, "rejected"), "rejected"),
            "rating": record.get("rating") or options.default_rating,
            "category": category_of(record, options),
            "chosen_safe": record.get("chosen_safe"),
            "rejected_safe": record.get("rejected_safe"),
            "source": record.get("source") or options.source_name or "plain",
        }
    ]


# ---------------------------------------------------------------- 3. Anthropic HH-RLHF
HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def hh_transcript_to_messages(transcript: str) -> list[dict]:
    """`"\\n\\nHuman: hi\\n\\nAssistant: hello"` -> user/assistant messages.

    Contents are stripped; consecutive turns of one speaker are merged (joined by a
    blank line). Raises `ValueError` for text before the first turn or no turns.
    """
    if transcript.startswith(("Human:", "Assistant:")):
        transcript = "\n\n" + transcript
    head, *turns = HH_TURN.split(transcript)
    if head.strip():
        raise ValueError("text before the first 'Human:' turn")
    messages: list[dict] = []
    for speaker, content in zip(turns[0::2], turns[1::2], strict=True):
        role, content = HH_ROLES[speaker], content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content}".strip()
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise ValueError("no 'Human:' or 'Assistant:' turns")
    return messages


def hh_messages(record: dict, name: str) -> list[dict]:
    try:
        messages = hh_transcript_to_messages(text(record, name))
    except ValueError as exc:
        raise RecordError(str(exc), name) from None
    if messages[-1]["role"] != "assistant":
        raise RecordError("transcript does not end with an 'Assistant:' turn", name)
    return messages


def hh_category(options: AdapterOptions) -> str:
    if options.category:
        return options.category
    name = options.source_name.lower()
    return (
        "safety"
        if "harmless" in name or "red-team" in name or "red_team" in name
        else "helpfulness"
    )


def hh_sft(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    return [{"messages": hh_messages(record, "chosen")}]


def hh_prompt(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    return [
        {
            "messages": hh_messages(record, "chosen")[:-1],
            "category": hh_category(options),
            "id": f"p{index}",
            "kind": None,
        }
    ]


def hh_pair(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    chosen, rejected = hh_messages(record, "chosen"), hh_messages(record, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise RecordError(
            "the chosen and rejected transcripts differ before their last 'Assistant:' turn",
            "rejected",
        )
    return [
        {
            "prompt": chosen[:-1],
            "chosen": chosen[-1]["content"],
            "rejected": rejected[-1]["content"],
            "rating": options.default_rating,
            "category": hh_category(options),
            "chosen_safe": None,
            "rejected_safe": None,
            "source": "hh-rlhf",
        }
    ]


# ---------------------------------------------------------------- 3b. TRL implicit-prompt pairs
def implicit_split(record: dict) -> tuple[list[dict], str, str]:
    """(shared prompt turns, chosen answer, rejected answer) of two conversations."""
    prompt, chosen = split_conversation(required(record, "chosen"), "chosen")
    rejected_prompt, rejected = split_conversation(required(record, "rejected"), "rejected")
    if prompt != rejected_prompt:
        raise RecordError(
            "the chosen and rejected conversations differ before their last (assistant) turn",
            "rejected",
        )
    if not prompt:
        raise RecordError("no prompt turns before the assistant answer", "chosen")
    return prompt, chosen, rejected


def implicit_sft(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    return [{"messages": parse_messages(required(record, "chosen"), "chosen")}]


def implicit_prompt(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    prompt, _, _ = implicit_split(record)
    return [
        {
            "messages": prompt,
            "category": category_of(record, options),
            "id": prompt_id(record, index),
            "kind": None,
        }
    ]


def implicit_pair(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    prompt, chosen, rejected = implicit_split(record)
    return [
        {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "rating": record.get("rating") or options.default_rating,
            "category": category_of(record, options),
            "chosen_safe": record.get("chosen_safe"),
            "rejected_safe": record.get("rejected_safe"),
            "source": record.get("source") or "implicit-prompt",
        }
    ]


# ---------------------------------------------------------------- 4. PKU-SafeRLHF
PKU_PAIRS = (("helpfulness", "better_response_id"), ("safety", "safer_response_id"))


def response_index(record: dict, name: str) -> int:
    value = required(record, name)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, bool) or value not in (0, 1):
        raise RecordError(f"expected 0 or 1, got {value!r}", name)
    return int(value)


def safety_label(record: dict, name: str) -> bool | None:
    value = record.get(name)
    if value is not None and not isinstance(value, bool):
        raise RecordError(f"expected true, false or null, got {json_type_name(value)}", name)
    return value


def pku_prompt(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    labels = [
        safety_label(record, "is_response_0_safe"),
        safety_label(record, "is_response_1_safe"),
    ]
    category = options.category or ("safety" if False in labels else "helpfulness")
    return [
        {
            "messages": prompt_messages(required(record, "prompt"), "prompt"),
            "category": category,
            "id": f"p{index}",
            "kind": None,
        }
    ]


def pku_pairs(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    prompt = prompt_messages(required(record, "prompt"), "prompt")
    responses = [text(record, "response_0"), text(record, "response_1")]
    labels = [
        safety_label(record, "is_response_0_safe"),
        safety_label(record, "is_response_1_safe"),
    ]
    pairs = []
    for category, id_field in PKU_PAIRS:
        if options.category and options.category != category:
            continue
        best = response_index(record, id_field)
        pairs.append(
            {
                "prompt": prompt,
                "chosen": responses[best],
                "rejected": responses[1 - best],
                "rating": options.default_rating,
                "category": category,
                "chosen_safe": labels[best],
                "rejected_safe": labels[1 - best],
                "source": "pku-saferlhf",
            }
        )
    return pairs


# ---------------------------------------------------------------- 5. UltraFeedback-style scored pairs
def scored_prompt_and_answers(record: dict) -> tuple[list[dict], str, str]:
    chosen, rejected = required(record, "chosen"), required(record, "rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):
        prompt, chosen_text = split_conversation(chosen, "chosen")
        rejected_prompt, rejected_text = split_conversation(rejected, "rejected")
        if prompt != rejected_prompt:
            raise RecordError(
                "the chosen and rejected conversations differ before their last turn", "rejected"
            )
        if not prompt:
            prompt = prompt_messages(required(record, "prompt"), "prompt")
        return prompt, chosen_text, rejected_text
    prompt = prompt_messages(required(record, "prompt"), "prompt")
    return prompt, answer_text(chosen, "chosen"), answer_text(rejected, "rejected")


def ultrafeedback_pair(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    prompt, chosen, rejected = scored_prompt_and_answers(record)
    score_chosen, score_rejected = number(record, "score_chosen"), number(record, "score_rejected")
    if score_chosen < score_rejected:
        raise RecordError(
            f"score_chosen {score_chosen:g} is below score_rejected {score_rejected:g}",
            "score_chosen",
        )
    return [
        {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "rating": rating_from_score_gap(
                score_chosen - score_rejected, options.rating_thresholds
            ),
            "category": category_of(record, options),
            "chosen_safe": None,
            "rejected_safe": None,
            "source": "ultrafeedback",
        }
    ]


def ultrafeedback_prompt(record: dict, index: int, options: AdapterOptions) -> list[dict]:
    if record.get("prompt") is not None:
        messages = prompt_messages(record["prompt"], "prompt")
    else:
        messages = split_conversation(required(record, "chosen"), "chosen")[0]
    return [
        {
            "messages": messages,
            "category": category_of(record, options),
            "id": prompt_id(record, index, "prompt_id"),
            "kind": None,
        }
    ]


# ---------------------------------------------------------------- 6. registry and detection
CANONICAL_MODELS: dict[str, type[BaseModel]] = {
    "sft": SFTExample,
    "prompts": PromptExample,
    "preferences": PreferencePair,
}


def looks_canonical(kind: str, record: dict) -> bool:
    """The first record has the schema's keys and no others (later records are held to the
    strict schema, unknown keys refused); records with extra keys go to the lenient `plain`."""
    keys = set(record)
    fields = CANONICAL_MODELS[kind].model_fields
    conversation = record.get("prompt" if kind == "preferences" else "messages")
    required_keys = {name for name, info in fields.items() if info.is_required()}
    # a prompt given as text is the lenient `plain` format, even with the schema's keys
    return required_keys <= keys <= set(fields) and isinstance(conversation, list)


def looks_pku(kind: str, record: dict) -> bool:
    keys = set(record)
    return "better_response_id" in keys or "safer_response_id" in keys


def looks_scored(kind: str, record: dict) -> bool:
    keys = set(record)
    return "score_chosen" in keys or "score_rejected" in keys


def looks_hh(kind: str, record: dict) -> bool:
    keys = set(record)
    return (
        {"chosen", "rejected"} <= keys
        and not keys & {"prompt", "messages"}
        and isinstance(record["chosen"], str)
    )


def looks_implicit(kind: str, record: dict) -> bool:
    keys = set(record)
    return (
        {"chosen", "rejected"} <= keys
        and not keys & {"prompt", "messages"}
        and isinstance(record["chosen"], list)
    )


def looks_plain(kind: str, record: dict) -> bool:
    keys = set(record)
    if kind == "sft":
        return "messages" in keys or ("prompt" in keys and bool(keys & {"completion", "response"}))
    if kind == "prompts":
        return "prompt" in keys or "messages" in keys
    return {"prompt", "chosen", "rejected"} <= keys


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> Adapter:
    """Add (or replace) an adapter; auto-detection tries adapters in registration order."""
    ADAPTERS[adapter.name] = adapter
    return adapter


register_adapter(
    Adapter(
        "canonical",
        "the project's own schema",
        canonical_sft,
        canonical_record,
        canonical_record,
        looks_canonical,
    )
)
register_adapter(
    Adapter(
        "pku-saferlhf",
        "PKU-SafeRLHF rows",
        prompts=pku_prompt,
        preferences=pku_pairs,
        matches=looks_pku,
    )
)
register_adapter(
    Adapter(
        "ultrafeedback",
        "UltraFeedback-style scored pairs",
        prompts=ultrafeedback_prompt,
        preferences=ultrafeedback_pair,
        matches=looks_scored,
    )
)
register_adapter(
    Adapter("hh-rlhf", "Anthropic HH-RLHF transcripts", hh_sft, hh_prompt, hh_pair, looks_hh)
)
register_adapter(
    Adapter(
        "implicit-prompt",
        "TRL implicit-prompt chosen/rejected conversations",
        implicit_sft,
        implicit_prompt,
        implicit_pair,
        looks_implicit,
    )
)
register_adapter(
    Adapter(
        "plain",
        "messages, prompt/completion, prompt, prompt/chosen/rejected",
        plain_sft,
        plain_prompt,
        plain_pair,
        looks_plain,
    )
)


def detect_adapter(kind: str, record: dict) -> str | None:
    """The first registered adapter for `kind` whose format matches the record's fields."""
    for name, adapter in ADAPTERS.items():
        if (
            adapter.converter(kind) is not None
            and adapter.matches is not None
            and adapter.matches(kind, record)
        ):
            return name
    return None


def adapters_for(kind: str) -> list[str]:
    return [name for name, adapter in ADAPTERS.items() if adapter.converter(kind) is not None]


def detect_kind(record: dict) -> str | None:
    """Which kind of data a source holds, from its first record: `preferences` when a
    pair format fits, `sft` for conversations that end with an answer or prompt/completion
    rows, `prompts` for conversations ending with a user turn or bare prompts; else None."""
    if detect_adapter("preferences", record) is not None:
        return "preferences"
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return "sft" if messages[-1].get("role") == "assistant" else "prompts"
    if "prompt" in record:
        return "sft" if record.keys() & {"completion", "response"} else "prompts"
    return None
