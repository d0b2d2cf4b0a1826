"""Data schemas, loaders and adapters (DESIGN section 4).

Three record kinds travel between stages as JSONL, each with a strict schema:

- SFT example:      `{"messages": [{"role", "content"}, ...]}`
- prompt:           `{"messages": [...], "category": "helpfulness"|"safety", "id": str, "kind": str|null}`
- preference pair:  `{"prompt": [...], "chosen": str, "rejected": str, "rating": <4 levels>,
                      "category", "chosen_safe": bool|null, "rejected_safe": bool|null, "source": str}`
  (a pair's `category` is the guideline it was rated under, as Meta Helpfulness and
  Meta Safety data were; it need not be its prompt's category: toyworld's
  helpfulness annotators also rate some safety prompts)

`load_sft`, `load_prompts` and `load_preferences` read local JSONL (also `.jsonl.gz`),
JSON lists, Parquet, CSV, a folder with `<split>.<ext>`, or a hub dataset
`owner/name`; an adapter (named, or detected from the fields) maps public formats
(chat messages, prompt/completion, HH-RLHF, PKU-SafeRLHF, UltraFeedback, plain and
TRL implicit-prompt prompt/chosen/rejected) onto the schemas. Every bad input
raises `DataError` naming the file, the line (row for Parquet and hub data) and the
field (or, with `on_bad="skip"`, is left out and counted in a `LoadReport`), e.g.

    data.jsonl, line 7, field 'rating': unknown rating 'much_better' (expected one of ...)

Modules: `schemas` (models and checks), `readers` (files -> located records),
`adapters` (formats -> canonical dicts), `loaders` (the three loaders), `sources`
(the per-source config keys every stage shares, `load_source`, `data_report.json`),
`inspect` (`rlhf data inspect FILE`).
"""

from core.data.adapters import (
    ADAPTERS,
    Adapter,
    AdapterOptions,
    detect_adapter,
    detect_kind,
    hh_transcript_to_messages,
    rating_from_score_gap,
    register_adapter,
)
from core.data.loaders import (
    LoadReport,
    load_preferences,
    load_prompts,
    load_sft,
    located_preferences,
    located_prompts,
    located_sft,
)
from core.data.readers import Location, load_records
from core.data.schemas import (
    CATEGORIES,
    RATINGS,
    ROLES,
    Message,
    PreferencePair,
    PromptExample,
    SFTExample,
    check_sft_example,
    validate_preference_pair,
    validate_prompt,
    validate_sft_example,
)
from core.data.sources import (
    PreferenceSourceKeys,
    PromptSourceKeys,
    SFTSourceKeys,
    data_report,
    load_source,
    write_data_report,
)
from core.io import write_jsonl as save_jsonl

__all__ = [
    "ADAPTERS",
    "CATEGORIES",
    "RATINGS",
    "ROLES",
    "Adapter",
    "AdapterOptions",
    "LoadReport",
    "Location",
    "Message",
    "PreferencePair",
    "PreferenceSourceKeys",
    "PromptExample",
    "PromptSourceKeys",
    "SFTExample",
    "SFTSourceKeys",
    "check_sft_example",
    "data_report",
    "detect_adapter",
    "detect_kind",
    "hh_transcript_to_messages",
    "load_preferences",
    "load_prompts",
    "load_records",
    "load_sft",
    "load_source",
    "located_preferences",
    "located_prompts",
    "located_sft",
    "rating_from_score_gap",
    "register_adapter",
    "save_jsonl",
    "validate_preference_pair",
    "validate_prompt",
    "validate_sft_example",
    "write_data_report",
]
