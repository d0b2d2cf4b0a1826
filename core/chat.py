"""Chat formatting and answer-only labels.

Conversations are rendered through the tokenizer's own chat template (ChatML for
SmolLM2). Tokenizers without one get Llama 2's `[INST] <<SYS>>` template:

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]

`tokenize_conversation` builds the labels of the paper's SFT: every token is
masked with -100 except the assistant answers and the end-of-turn token that
closes each of them (only the last answer when `learn="last"`, as GAtt needs).
Spans are found on the rendered text (the prefix rendered with a generation
prompt is where the answer starts) and mapped to tokens with the fast
tokenizer's offsets, so the same code works for any template.
"""

from __future__ import annotations

from typing import Literal

from core.errors import DataError, ModelLoadError

IGNORE_INDEX = -100

LLAMA2_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set system_message = none -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and system_message is not none -%}"
    "{{ bos_token + '[INST] <<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else -%}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{%- else -%}{{ raise_exception('unknown role ' + message['role']) }}{%- endif -%}"
    "{%- endfor -%}"
)

TemplateChoice = Literal["auto", "llama2", "require"]


def ensure_chat_template(tokenizer, which: str = "auto") -> None:
    """`auto`: keep the tokenizer's template, else Llama 2's; `llama2`: force Llama 2's;
    `require`: error if the tokenizer has none."""
    if which == "llama2" or (which == "auto" and not tokenizer.chat_template):
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    elif which == "require" and not tokenizer.chat_template:
        raise ModelLoadError(
            f"tokenizer '{getattr(tokenizer, 'name_or_path', '?')}' has no chat template; "
            "set chat_template: llama2 to use Llama 2's [INST] format"
        )
    elif which not in ("auto", "llama2", "require"):
        raise ModelLoadError(f"unknown chat_template choice '{which}' (expected auto, llama2 or require)")


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def answer_spans(tokenizer, messages: list[dict], learn: Literal["all", "last"] = "all") -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans to learn.

    Each span runs from the end of the prompt prefix (rendered with a generation
    prompt) to the end of the answer's end-of-turn token.
    """
    text = render(tokenizer, messages)
    eos = tokenizer.eos_token or ""
    assistant_turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    if learn == "last":
        assistant_turns = assistant_turns[-1:]
    spans = []
    for index in assistant_turns:
        prefix = render(tokenizer, messages[:index], add_generation_prompt=True)
        content = messages[index]["content"]
        if not text.startswith(prefix):
            raise DataError(f"chat template is not prefix-stable at turn {index}; cannot locate the answer")
        start = len(prefix)
        content_at = text.find(content, start)
        if content_at < 0:
            raise DataError(f"answer of turn {index} not found in the rendered conversation")
        end = content_at + len(content)
        tail = text[end:]
        stripped = tail.lstrip(" ")
        if eos and stripped.startswith(eos):
            end += len(tail) - len(stripped) + len(eos)
        spans.append((start, end))
    return text, spans


def tokenize_conversation(
    tokenizer, messages: list[dict], learn: Literal["all", "last"] = "all"
) -> dict[str, list[int]]:
    """`input_ids`, `attention_mask` and `labels` (-100 outside the learned answers).

    A token is learned when its characters overlap a learned span, so a token
    that joins a template space to the answer's first word is learned too.
    Nothing is truncated: the caller compares the length with its maximum and
    reports overlong examples.
    """
    text, spans = answer_spans(tokenizer, messages, learn)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        learned = any(start < span_end and end > span_start for span_start, span_end in spans)
        labels.append(token_id if learned else IGNORE_INDEX)
    return {"input_ids": list(encoded["input_ids"]), "attention_mask": [1] * len(labels), "labels": labels}


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a prompt rendered with the generation prompt (what the model continues)."""
    return tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
