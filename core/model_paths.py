"""Checks on a model name before anything loads it or writes a stage folder.

Every stage starts by checking each model it was given, for the role it plays:

- `check_policy_path(name)`: a causal LM to load as a policy, a reference or an
  init model (SFT, RS, PPO, GAtt, evaluation);
- `check_reward_model_path(name)`: a one-output `*ForSequenceClassification`
  folder (the RMs that RS, PPO, GAtt and evaluation score with);
- `check_reward_init_path(name)`: what reward training starts from, a causal LM
  or an earlier reward model;
- `check_config_models([(key, name, role), ...])`: all of a stage's models, each
  error prefixed with the config key that named the model.

Each raises `ModelLoadError` with one line that names the path and, where there is
one, the right path: a reward model given as a policy and the other way round, a
stage folder instead of its `model/`, an unmerged LoRA adapter, a corrupt or
truncated weight file (the safetensors headers are read, not the tensors, so the
check takes milliseconds on a 7B folder), a folder without config.json or
weights, a path that does not exist, an unknown `embedded:` name. Embedded names
are checked without being built.

Hub ids (`owner/name`) are checked without waiting on a hub that cannot be
reached: with `HF_HUB_OFFLINE=1` the model must be in the local Hugging Face
cache; otherwise one request to the hub endpoint (`HF_ENDPOINT`, else
https://huggingface.co) must get an answer within `HUB_PROBE_TIMEOUT_S` seconds,
or the cached copy is used, or the check fails at once (instead of after a minute
of retries inside `from_pretrained`). `hub_source` is that check; the loaders in
`core.models` call it through `resolve_model_path`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from core.errors import HubUnreachableError, ModelLoadError

ModelRole = Literal["policy", "reward_model", "reward_init"]

CONFIG_FILE = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
FULL_WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_INDEX, PICKLE_WEIGHTS, PICKLE_INDEX)
STAGE_MARKERS = ("manifest.json", "config.yaml")  # core.run writes both into every stage folder

HUB_PROBE_TIMEOUT_S = 3.0
_HUB_PROBE_TTL_S = 300.0  # one probe per endpoint and process for this long
_hub_probes: dict[str, tuple[float, bool]] = {}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


# ------------------------------------------------------------------ names
def looks_like_path(name: str) -> bool:
    """True for names that can only mean a local path (a hub id is `owner/name`)."""
    return (
        name.startswith((".", "/", "~", "\\"))
        or "runs/" in name
        or name.count("/") != 1
        or not _HUB_ID.match(name)
    )


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path."""
    return not name.startswith("embedded:") and not looks_like_path(name) and not Path(name).exists()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_embedded(name: str) -> None:
    from core.models import EMBEDDED_BUILDERS, EMBEDDED_PREFIX

    key = name[len(EMBEDDED_PREFIX):]
    if key not in EMBEDDED_BUILDERS:
        raise ModelLoadError(f"unknown embedded model '{name}' (known: {', '.join(EMBEDDED_PREFIX + k for k in EMBEDDED_BUILDERS)})")


# ------------------------------------------------------------------ weights
def _full_weight_files(folder: Path) -> list[Path]:
    return [folder / name for name in FULL_WEIGHT_FILES if (folder / name).is_file()]


def check_safetensors_file(file: Path) -> set[str]:
    """The tensor names in `file`, read from its header only; ModelLoadError if the
    file is empty, truncated or not safetensors (the tensors are never read)."""
    size = file.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{file} is empty (0 bytes): the save was cut off; save or download the model again")
    if size < 8:
        raise ModelLoadError(f"{file} is truncated ({size} bytes): not a safetensors file; save or download the model again")
    with open(file, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        if header_len < 2 or header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
            raise ModelLoadError(f"{file} is corrupt or truncated: not a valid safetensors file (bad header length); save or download the model again")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelLoadError(f"{file} is corrupt: its safetensors header is not valid JSON; save or download the model again") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{file} is corrupt: its safetensors header is not a JSON object; save or download the model again")
    end = 0
    names = set()
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            end = max(end, int(stop))
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{file} is corrupt: tensor '{key}' has no valid data_offsets in the header") from None
        names.add(key)
    data = size - 8 - header_len
    if end > data:
        raise ModelLoadError(
            f"{file} is truncated: its header describes {8 + header_len + end} bytes, the file has {size}; save or download the model again"
        )
    # The library's own parser as the last word (it maps the file, it does not read the tensors).
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass
    except Exception as exc:  # SafetensorError, OSError: whatever it is, the file cannot be loaded
        raise ModelLoadError(f"{file} is corrupt: {_one_line(exc)}; save or download the model again") from None
    return names


def _check_pickle_file(file: Path) -> None:
    size = file.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{file} is empty (0 bytes): the save was cut off; save or download the model again")
    with open(file, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(file):  # torch.save's zip format, cut off
        raise ModelLoadError(f"{file} is truncated: its zip directory is missing; save or download the model again")


def _check_index(index: Path, check_shard) -> None:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map:
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ModelLoadError(f"{index} is corrupt: not a JSON object with a non-empty 'weight_map'; save or download the model again") from None
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault(str(shard), []).append(tensor)
    for shard, tensors in sorted(by_shard.items()):
        file = index.parent / shard
        if not file.is_file():
            raise ModelLoadError(f"{index} names the shard {shard}, which is missing from {index.parent}; copy or download it again")
        names = check_shard(file)
        if names is not None:
            absent = [t for t in tensors if t not in names]
            if absent:
                raise ModelLoadError(
                    f"{file} lacks {len(absent)} tensors that {index.name} puts there (e.g. {absent[0]}); the shard is incomplete or stale"
                )


def check_weights(folder: Path) -> None:
    """ModelLoadError unless `folder` has a complete weight file (or index and shards).

    Safetensors files are checked through their headers; pickle files only for
    being empty or cut off (reading them means unpickling).
    """
    safe = [f for f in (folder / SAFE_WEIGHTS, folder / SAFE_INDEX) if f.is_file()]
    pickle = [f for f in (folder / PICKLE_WEIGHTS, folder / PICKLE_INDEX) if f.is_file()]
    if not safe and not pickle:
        raise ModelLoadError(f"{folder} has no weight file ({SAFE_WEIGHTS}, {SAFE_INDEX} or {PICKLE_WEIGHTS}); the model was not saved completely")
    for file in safe or pickle:  # transformers prefers safetensors and ignores the pickle files then
        if file.name == SAFE_INDEX:
            _check_index(file, check_safetensors_file)
        elif file.name == PICKLE_INDEX:
            _check_index(file, lambda shard: _check_pickle_file(shard))
        elif file.name == SAFE_WEIGHTS:
            check_safetensors_file(file)
        else:
            _check_pickle_file(file)


# ------------------------------------------------------------------ folders
def _models_inside(folder: Path, depth: int = 3, limit: int = 200) -> list[Path]:
    """Model folders (config.json or adapter_config.json) under `folder`, at most `depth` deep."""
    found, level, seen = [], [folder], 0
    for _ in range(depth):
        following = []
        for parent in level:
            try:
                children = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for child in children:
                seen += 1
                if seen > limit:
                    return found
                if (child / CONFIG_FILE).is_file() or (child / ADAPTER_CONFIG).is_file():
                    found.append(child)
                else:
                    following.append(child)
        level = following
    return found


def _not_a_model_folder(folder: Path) -> ModelLoadError:
    is_stage = any((folder / marker).is_file() for marker in STAGE_MARKERS)
    if is_stage and (folder / "model").is_dir():
        return ModelLoadError(f"{folder} is a stage folder; its model is {folder / 'model'}")
    inside = _models_inside(folder)
    if is_stage and len(inside) == 1:
        return ModelLoadError(f"{folder} is a stage folder; its model is {inside[0]}")
    if inside:
        more = f" (and {len(inside) - 3} more)" if len(inside) > 3 else ""
        return ModelLoadError(f"{folder} is not a model folder (no config.json); the model folders in it are {', '.join(map(str, inside[:3]))}{more}")
    if is_stage:
        return ModelLoadError(f"{folder} is a stage folder with no model in it (no config.json, no model/); see {folder / 'manifest.json'}: the stage may not have finished")
    return ModelLoadError(f"{folder} is not a model folder (no config.json)")


def _adapter_error(folder: Path) -> ModelLoadError:
    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        base = None
    base_text = f"base model {base}" if base else "base model not recorded"
    return ModelLoadError(
        f"{folder} is an unmerged LoRA adapter ({base_text}), not a full model; merge it into its base "
        "(train with merge_lora: true, or PeftModel.merge_and_unload) or give the merged model folder"
    )


def open_model_folder(folder: Path) -> dict:
    """The parsed config.json of a local model folder; ModelLoadError, naming the
    folder and the right one where there is one, for a missing path, a file, an
    unmerged adapter, a stage or run folder, or a folder without config.json."""
    if not folder.exists():
        raise ModelLoadError(f"no such folder: {folder}")
    if not folder.is_dir():
        if (folder.parent / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{folder} is a file; give the model folder that holds it: {folder.parent}")
        raise ModelLoadError(f"{folder} is a file, not a model folder")
    if (folder / ADAPTER_CONFIG).is_file() and not _full_weight_files(folder):
        raise _adapter_error(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise _not_a_model_folder(folder)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{config_file}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file}: not a JSON object")
    return config


def check_model_folder(folder: str | os.PathLike) -> dict:
    """Any model folder, whatever its kind: config.json and complete weights. Returns the config."""
    folder = Path(folder).expanduser()
    config = open_model_folder(folder)
    check_weights(folder)
    return config


# ------------------------------------------------------------------ kinds
def _architectures(config: dict) -> list[str]:
    return [str(a) for a in config.get("architectures") or []]


def _is_sequence_classifier(architectures: list[str]) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def _is_causal_lm(architectures: list[str]) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)


def _num_labels(config: dict) -> int:
    return len(config.get("id2label") or {}) or config.get("num_labels", 2)


def _nearest(folder: Path, patterns: tuple[str, ...], accept, levels: int = 4) -> list[Path]:
    """Model folders matching `patterns` under the nearest of `folder`'s parents that has any."""
    for parent in list(folder.parents)[:levels]:
        hits = sorted({hit for pattern in patterns for hit in parent.glob(pattern) if hit != folder and accept(hit)})
        if hits:
            return hits
    return []


def _config_of(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _check_policy_kind(config: dict, where: str, folder: Path | None) -> None:
    architectures = _architectures(config)
    if not architectures or _is_causal_lm(architectures):
        return
    names = ", ".join(architectures)
    if _is_sequence_classifier(architectures):
        policies = _nearest(folder, ("sft/model",), lambda p: _is_causal_lm(_architectures(_config_of(p)))) if folder else []
        hint = policies[0] if policies else "RUN/sft/model"
        raise ModelLoadError(f"{where} is a reward model ({names}), not a causal LM; give a policy folder such as {hint}")
    raise ModelLoadError(f"{where} holds {names}, not a causal LM (a *ForCausalLM model)")


def _check_reward_model_kind(config: dict, where: str, folder: Path | None) -> None:
    architectures = _architectures(config)
    if not _is_sequence_classifier(architectures):
        what = f"a causal LM ({', '.join(architectures)})" if _is_causal_lm(architectures) else (", ".join(architectures) or "an unknown architecture")
        rms = _nearest(folder, ("rm_*/model", "*/rm_*/model"), lambda p: _is_sequence_classifier(_architectures(_config_of(p)))) if folder else []
        hint = f"give a reward-model folder such as {' or '.join(map(str, rms[:2]))}" if rms else "train one with `rlhf reward train`"
        raise ModelLoadError(f"{where} holds {what}, not a reward model (a *ForSequenceClassification model with one output); {hint}")
    num_labels = _num_labels(config)
    if num_labels != 1:
        raise ModelLoadError(f"{where}: the classification head has {num_labels} outputs; a reward model has exactly 1")


# ------------------------------------------------------------------ hub
def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _probe(endpoint: str, timeout: float, answer: list) -> None:
    request = urllib.request.Request(endpoint + "/", method="HEAD", headers={"User-Agent": "llama-rlhf-probe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
        answer.append(True)
    except urllib.error.HTTPError:  # any HTTP status is an answer: the hub is there
        answer.append(True)
    except Exception:  # refused, timed out, no route, no DNS, TLS failure
        answer.append(False)


def hub_reachable(endpoint: str | None = None, timeout: float | None = None) -> bool:
    """Whether the hub endpoint answers one request within `timeout` seconds.

    The request runs in a daemon thread joined with the timeout, so that a name
    lookup that hangs (which the socket timeout does not cover) cannot stall the
    caller. The answer is remembered per endpoint for a few minutes.
    """
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    timeout = HUB_PROBE_TIMEOUT_S if timeout is None else timeout
    remembered = _hub_probes.get(endpoint)
    if remembered is not None and time.monotonic() - remembered[0] < _HUB_PROBE_TTL_S:
        return remembered[1]
    answer: list[bool] = []
    thread = threading.Thread(target=_probe, args=(endpoint, timeout, answer), daemon=True, name="hub-probe")
    thread.start()
    thread.join(timeout + 0.5)
    reachable = bool(answer and answer[0])
    _hub_probes[endpoint] = (time.monotonic(), reachable)
    return reachable


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot folder of `repo_id` (its main revision), if any."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, CONFIG_FILE)
    except Exception:  # an id the hub library rejects is simply not cached
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def hub_source(repo_id: str, probe: bool = True) -> str | Path:
    """What to hand `from_pretrained` for a hub id, decided within seconds.

    HF_HUB_OFFLINE set: the cached snapshot folder, else ModelLoadError. Otherwise
    the id itself when the hub answers, the cached snapshot when it does not, and
    HubUnreachableError when it does not and nothing is cached. `probe=False`
    (validating configs without contacting the hub) skips the request.
    """
    if hub_offline():
        snapshot = cached_hub_snapshot(repo_id)
        if snapshot is None:
            raise ModelLoadError(f"hub id {repo_id} is not in the local cache and HF_HUB_OFFLINE is set; download it first or give a local model folder")
        return snapshot
    if not probe or hub_reachable():
        return repo_id
    snapshot = cached_hub_snapshot(repo_id)
    if snapshot is not None:
        return snapshot  # the hub is down, the cached copy is what from_pretrained would fall back to
    raise HubUnreachableError(
        f"hub id {repo_id}: the hub at {hub_endpoint()} cannot be reached (no answer within {HUB_PROBE_TIMEOUT_S:g} s) "
        "and the model is not in the local cache; give a local model folder instead (or set HF_ENDPOINT / HF_HUB_OFFLINE)"
    )


# ------------------------------------------------------------------ roles
def check_policy_path(name: str, probe_hub: bool = True) -> str:
    """`name` if it can be loaded as a causal LM (policy, reference, init model).

    Embedded names are checked without being built; a local folder must hold a
    causal LM with complete weights (returned as the expanded path); a hub id must
    be cached or the hub reachable (see `hub_source`). Raises ModelLoadError.
    """
    return str(check_model_path(name, "policy", probe_hub=probe_hub))


def check_reward_model_path(name: str | os.PathLike) -> Path:
    """The folder of a one-output `*ForSequenceClassification` model with complete
    weights. Reward models are read from local folders only. Raises ModelLoadError."""
    return Path(check_model_path(name, "reward_model"))


def check_reward_init_path(name: str, probe_hub: bool = True) -> str:
    """`name` if reward training can start from it: a causal LM or a reward model."""
    return str(check_model_path(name, "reward_init", probe_hub=probe_hub))


def check_config_models(models: Iterable[tuple[str, str | os.PathLike | None, ModelRole]], probe_hub: bool = True) -> None:
    """Check every model a config names, each for its role, before a stage writes anything.

    `models` are (config key, name, role) triples; an empty name (an optional model
    left unset) is skipped. The first bad one raises its ModelLoadError (or
    HubUnreachableError) with the key in front of the one line, e.g.
    `policy: runs/x/rm_safety/model is a reward model (...), not a causal LM; ...`.
    """
    for key, name, role in models:
        if name is None or str(name) == "":
            continue
        try:
            check_model_path(name, role, probe_hub=probe_hub)
        except ModelLoadError as exc:
            raise type(exc)(f"{key}: {exc}") from None


def check_model_path(name: str | os.PathLike, role: ModelRole, probe_hub: bool = True) -> str | Path:
    """Check `name` for `role`; returns the name (embedded, hub id) or the local folder."""
    text = str(name)
    if text.startswith("embedded:"):
        _check_embedded(text)
        if role == "reward_model":
            raise ModelLoadError(f"{text} is a causal LM, not a reward model (a *ForSequenceClassification model with one output); train one with `rlhf reward train`")
        return text
    folder = Path(text).expanduser()
    if not folder.exists():
        if looks_like_path(text):
            raise ModelLoadError(f"no such folder: {text}")
        if role == "reward_model":
            raise ModelLoadError(
                f"reward model {text} is not a local folder; reward models are read from local folders "
                f"(download it with `hf download {text} --local-dir DIR` and give DIR)"
            )
        source = hub_source(text, probe=probe_hub)
        if isinstance(source, Path) and role == "policy":  # cached: its kind can be told without the hub
            _check_policy_kind(_config_of(source), f"hub id {text}", None)
        return text
    config = open_model_folder(folder)
    if role == "policy":
        _check_policy_kind(config, str(folder), folder)
    elif role == "reward_model":
        _check_reward_model_kind(config, str(folder), folder)
    else:
        architectures = _architectures(config)
        if architectures and not (_is_causal_lm(architectures) or _is_sequence_classifier(architectures)):
            raise ModelLoadError(f"{folder} holds {', '.join(architectures)}, not a causal LM or a reward model to start reward training from")
    check_weights(folder)
    return folder
