"""Strict typed configs: YAML plus `key=value` overrides, validated by pydantic.

Each stage declares one `StrictModel` subclass. Loading is strict: an unknown
key, a missing required key or a value of the wrong type is a `ConfigError`
that names the dotted key. A validated config is frozen (never mutated during a
run) and saved as `config.yaml` in the stage folder, fully resolved.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError

T = TypeVar("T", bound="StrictModel")


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but `1e-5` is a float (YAML 1.1 wants `1.0e-5`)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load_yaml(text: str) -> Any:
    """Parse YAML with the safe loader (no Python objects are ever constructed)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader derives from SafeLoader


class StrictModel(BaseModel):
    """Base for every config: unknown keys forbidden, no silent type coercion, frozen.

    `renamed_keys` maps old dotted keys of a top-level config to the key that
    replaced each: `validate_config` then fails with the new name, not "unknown key".
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)
    renamed_keys: ClassVar[dict[str, str]] = {}


# Old top-level keys that every config with the new key refuses, naming it (a stage's
# own old spellings are in its `renamed_keys`): old key -> new key.
SHARED_RENAMED = {"tensorboard": "report_to"}


def renamed_keys(cls: type[StrictModel]) -> dict[str, str]:
    """The old keys `cls` refuses: the shared ones whose new key is one of its fields, and its own."""
    shared = {old: new for old, new in SHARED_RENAMED.items() if new in cls.model_fields}
    return {**shared, **cls.renamed_keys}


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """Turn `["a.b=1", "c=[1, 2]"]` into a nested dict; values are parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            value = safe_load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{key}': cannot parse value {raw!r}: {exc}") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line that starts with the place: `line 3, column 7: ...`."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = safe_load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "<root>"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif error["type"] == "missing":
            problems.append(f"missing key '{key}'")
        elif error["type"] == "value_error":
            # a validator's own message names its keys; the input (at the root, the
            # whole config) would only bury it
            where = "" if key == "<root>" else f"key '{key}': "
            problems.append(where + str(error.get("ctx", {}).get("error", error["msg"])))
        else:
            problems.append(f"key '{key}': {error['msg']} (got {error.get('input')!r})")
    return f"{origin}: " + "; ".join(problems)


def validate_config(cls: type[T], data: dict, origin: str = "config") -> T:
    try:
        reject_renamed(data, renamed_keys(cls))
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    # Validation in JSON mode keeps strictness ("3" is not an int) while accepting
    # what YAML can express (a list for a tuple, a string for a path).
    try:
        payload = json.dumps(data, default=str)
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    try:
        return cls.model_validate_json(payload)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build a config of type `cls` from an optional YAML file and `key=value` overrides."""
    data = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(list(overrides)))
    origin = str(path) if path is not None else "config"
    return validate_config(cls, data, origin)


def config_to_dict(config: BaseModel) -> dict:
    return config.model_dump(mode="json")


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def reject_renamed(data: Any, renames: dict[str, str]) -> Any:
    """`data` unchanged, or ValueError naming every old dotted key in it and its new name.

    Settings keep one key in every stage; a config written with an old spelling
    fails with the key to use instead of "unknown key" (see `StrictModel.renamed_keys`).
    """
    if not isinstance(data, dict):
        return data
    found = []
    for old, new in renames.items():
        node: Any = data
        for part in old.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            found.append(f"key '{old}' is now '{new}'")
    if found:
        raise ValueError("; ".join(found))
    return data


_MISSING = object()
