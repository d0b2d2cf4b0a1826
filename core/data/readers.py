"""Raw records from a data source, each with the place it came from.

`load_records` reads a local file (JSON lines, optionally gzipped; a JSON list;
Parquet; CSV/TSV), a local folder holding `<split>.<ext>`, or a Hugging Face hub
dataset `owner/name` (or `owner/name/data_dir`). A hub dataset takes a `data_dir`
(HH-RLHF's `harmless-base`) and a `subset` (the hub config name, `load_dataset`'s
`name`); a folder takes `data_dir` when it holds that subfolder (a local copy of
the hub repository), and a file ignores both. A hub dataset that cannot be had
fails within seconds with one line naming it (`hub_dataset_access`): with
HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set it must be in the local cache; otherwise
the hub must answer one request (`core.model_paths.hub_reachable`) or the cached
copy is read. Every record carries a
`Location`, a string such as `data.jsonl:7` that also knows its path and line,
so that later checks can raise a `DataError` naming file, line and field.

Line numbers are real for JSON lines, JSON lists and CSV (the line where the
record starts); Parquet and hub rows have no lines and are numbered `row N`.

A line of a JSON-lines file that is not a JSON object (broken JSON, bad UTF-8, a
bare list) stops the read with a `DataError`, unless the caller passes a
`bad_lines` list: then the error is appended to it and the read goes on (the
loaders' `on_bad="skip"`). Every other file-level problem always raises.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from core.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
JSON_SUFFIXES = (".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv", ".tsv")
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES

# owner/name or owner/name/data_dir, as on the hub; anything with a data-file suffix is a path.
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class Location(str):
    """Where a record came from: `str()` is `file:line` (or `file:row N`)."""

    path: str
    line: int | None
    row: int | None

    def __new__(cls, path: object, line: int | None = None, row: int | None = None) -> Location:
        if line is not None:
            text = f"{path}:{line}"
        elif row is not None:
            text = f"{path}:row {row}"
        else:
            text = str(path)
        self = super().__new__(cls, text)
        self.path, self.line, self.row = str(path), line, row
        return self

    def error(self, message: str, field: str | None = None) -> DataError:
        """A `DataError` at this place: `file, line N, field 'x': message` (or `file, row N, ...`)."""
        where = self.path if self.row is None else f"{self.path}, row {self.row}"
        return DataError(message, path=where, line=self.line, field=field)


Records = list[tuple[Location, dict]]


# ---------------------------------------------------------------- 1. dispatch
def load_records(
    source: str | Path,
    split: str = "train",
    bad_lines: list[DataError] | None = None,
    data_dir: str | None = None,
    subset: str | None = None,
) -> Records:
    """All records of `source` as `(location, dict)`; file-level problems raise `DataError`
    (unreadable JSON lines go to `bad_lines` instead when it is given).

    `data_dir` and `subset` are for a hub dataset (`load_dataset`'s `data_dir` and
    `name`); a folder holding `data_dir` reads `<folder>/<data_dir>/<split>.<ext>`
    (a local copy of the hub repository); a file ignores both, so that a local file
    can stand in for a hub source without editing its other keys."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if data_dir and (path / data_dir).is_dir():
            path = path / data_dir
        return load_records(split_file_in(path, split), split, bad_lines)
    if path.is_file():
        return read_file(path, bad_lines)
    if looks_like_hub_name(text):
        return read_hub_dataset(text, split, data_dir, subset)
    raise DataError("no such file or folder, and not a hub dataset name (owner/name)", path=text)


def describe_source(
    source: str | Path, data_dir: str | None = None, subset: str | None = None
) -> str:
    """How a source is named in reports and guessed from (HH-RLHF's category): a hub
    dataset or a folder with its data_dir, a hub dataset with its subset."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir() and data_dir and (path / data_dir).is_dir():
        return str(Path(text) / data_dir)
    if not looks_like_hub_name(text) or path.exists():
        return text
    repo, data_dir = hub_parts(text, data_dir)
    return hub_label(repo, data_dir, subset)


def looks_like_hub_name(text: str) -> bool:
    return bool(HUB_NAME.match(text)) and not text.lower().endswith(SUPPORTED_SUFFIXES)


def split_file_in(folder: Path, split: str) -> Path:
    """`folder/<split>.<ext>`: a local copy of a hub dataset keeps one file per split."""
    found = [
        folder / f"{split}{suffix}"
        for suffix in SUPPORTED_SUFFIXES
        if (folder / f"{split}{suffix}").is_file()
    ]
    if len(found) != 1:
        wanted = f"one file named {split}{{{','.join(SUPPORTED_SUFFIXES)}}}"
        raise DataError(f"is a folder; expected {wanted} in it, found {len(found)}", path=folder)
    return found[0]


def read_file(path: Path, bad_lines: list[DataError] | None = None) -> Records:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return read_json_lines(path, bad_lines)
    if name.endswith(JSON_SUFFIXES):
        return read_json(path, bad_lines)
    if name.endswith(PARQUET_SUFFIXES):
        return read_parquet(path)
    if name.endswith(CSV_SUFFIXES):
        return read_csv(path, delimiter="\t" if name.endswith(".tsv") else ",")
    raise DataError(
        f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})", path=path
    )


# ---------------------------------------------------------------- 2. text files
def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if `.gz` (a corrupt archive is a `DataError`)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read the file ({type(exc).__name__}: {exc})", path=path) from None


def parse_json_line(raw: str, path: Path, number: int) -> dict | None:
    """One line of a JSON-lines file: its object, None for a blank line, else `DataError`."""
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON ({exc.msg}, column {exc.colno})", path=path, line=number
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=number)
    return obj


def read_json_lines(path: Path, bad_lines: list[DataError] | None = None) -> Records:
    """Every non-blank line of a JSON-lines file (gzipped or not), decoded line by line so
    that a bad line names its own number; with `bad_lines`, bad lines are collected there."""
    records: Records = []
    for number, raw in enumerate(read_bytes(path).split(b"\n"), start=1):
        try:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path=path, line=number
                ) from None
            obj = parse_json_line(
                line.removeprefix("\ufeff") if number == 1 else line, path, number
            )
        except DataError as error:
            if bad_lines is None:
                raise
            bad_lines.append(error)
            continue
        if obj is not None:
            records.append((Location(path, line=number), obj))
    return records


def read_text(path: Path) -> str:
    """The file as text (gunzipped if `.gz`); bad UTF-8 is reported with its line."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path=path, line=line
        ) from None


def read_json(path: Path, bad_lines: list[DataError] | None = None) -> Records:
    """A JSON list of objects; a `.json` file that holds JSON lines is read as such."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        return list(iter_json_array(path, text))
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return read_json_lines(path, bad_lines)
    if isinstance(whole, dict) and "\n" not in text.strip():  # JSON lines holding one record
        return [(Location(path, line=1), whole)]
    got = "one object" if isinstance(whole, dict) else f"a {type(whole).__name__}"
    raise DataError(
        f"expected a JSON list of objects (or JSON lines), got {got}", path=path, line=1
    )


def iter_json_array(path: Path, text: str):
    """Yield `(location, object)` for each element of a top-level JSON list, with its line."""
    decoder = json.JSONDecoder()
    position, line, end = text.index("[") + 1, 1 + text.count("\n", 0, text.index("[")), len(text)

    def skip_space(start: int) -> int:
        while start < end and text[start] in " \t\r\n":
            start += 1
        return start

    def advance(to: int) -> None:
        nonlocal position, line
        line += text.count("\n", position, to)
        position = to

    advance(skip_space(position))
    if position < end and text[position] == "]":
        return
    while True:
        try:
            obj, after = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"malformed JSON ({exc.msg}, column {exc.colno})", path=path, line=exc.lineno
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object, got {type(obj).__name__}", path=path, line=line
            )
        yield Location(path, line=line), obj
        advance(skip_space(after))
        if position < end and text[position] == ",":
            advance(skip_space(position + 1))
            continue
        if position < end and text[position] == "]":
            break
        raise DataError(
            "malformed JSON (expected ',' or ']' after a list element)", path=path, line=line
        )
    if skip_space(position + 1) != end:
        raise DataError("malformed JSON (text after the closing ']')", path=path, line=line)


def read_csv(path: Path, delimiter: str = ",") -> Records:
    """Rows of a CSV/TSV file with a header; cells are text, see `csv_cell`."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    records: Records = []
    previous_end = reader.line_num
    try:
        for cells in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise DataError(
                    f"{len(cells)} cells, but the header has {len(header)} columns",
                    path=path,
                    line=start,
                )
            records.append(
                (
                    Location(path, line=start),
                    {key: csv_cell(cell) for key, cell in zip(header, cells, strict=True)},
                )
            )
    except csv.Error as exc:
        raise DataError(f"malformed CSV ({exc})", path=path, line=reader.line_num) from None
    return records


def csv_cell(cell: str) -> Any:
    """CSV has only text: an empty cell is null, `true`/`false` are booleans, and a cell
    holding a JSON object or a list of objects (a message list) is parsed; the rest stays text."""
    if cell == "":
        return None
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if cell.lstrip()[:1] in ("[", "{"):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return cell
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            return value
    return cell


# ---------------------------------------------------------------- 3. columnar and hub
def read_parquet(path: Path) -> Records:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"cannot read Parquet ({exc})", path=path) from None
    return [(Location(path, row=index), row) for index, row in enumerate(rows, start=1)]


def hub_parts(name: str, data_dir: str | None = None) -> tuple[str, str | None]:
    """`(owner/name, data_dir)` of `owner/name[/data_dir]` and a `data_dir` key (the two must agree)."""
    parts = name.split("/")
    repo, embedded = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)
    if embedded and data_dir and embedded != data_dir:
        raise DataError(
            f"the name holds data_dir {embedded!r} and the data_dir key says {data_dir!r}; give one",
            path=name,
        )
    return repo, data_dir or embedded


def hub_label(repo: str, data_dir: str | None, subset: str | None) -> str:
    return repo + (f"/{data_dir}" if data_dir else "") + (f" (subset {subset})" if subset else "")


def datasets_offline() -> bool:
    """HF_DATASETS_OFFLINE as `datasets` reads it (falling back to HF_HUB_OFFLINE), read now."""
    value = os.environ.get("HF_DATASETS_OFFLINE")
    if value is None:
        from core.model_paths import hub_offline

        return hub_offline()
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_dataset_cached(repo: str) -> bool:
    """Whether `datasets` has `repo` in its cache (a prepared copy, or the hub files).

    The prepared copy is where `datasets` looks when offline or when the hub does not
    answer: `<HF_DATASETS_CACHE>/<owner>___<name>/<config>/<version>/<hash>`."""
    try:
        import datasets.config
        from datasets.naming import camelcase_to_snakecase
        from huggingface_hub import constants
    except ImportError:  # no `datasets`: nothing is cached, and loading will say so
        return False
    owner, name = repo.split("/", 1)
    prepared = (
        Path(datasets.config.HF_DATASETS_CACHE).expanduser()
        / f"{owner}___{camelcase_to_snakecase(name)}"
    )
    if any(found.is_dir() for found in prepared.glob("*/*/*")):
        return True
    snapshots = (
        Path(constants.HF_HUB_CACHE).expanduser() / f"datasets--{owner}--{name}" / "snapshots"
    )
    return snapshots.is_dir() and any(snapshots.iterdir())


def hub_dataset_access(repo: str, label: str) -> bool:
    """How a hub dataset can be read, decided within seconds: False from the hub, True
    from the local cache only. Raises a one-line DataError naming it when neither can be.

    The same check as a hub model's (`core.model_paths.hub_source`): offline, the cache
    or nothing; else one request to the hub, then the cache, then a clear error
    (instead of `load_dataset`'s minute of retries)."""
    from core.model_paths import HUB_PROBE_TIMEOUT_S, hub_endpoint, hub_reachable

    if datasets_offline():
        if hub_dataset_cached(repo):
            return True
        raise DataError(
            "hub dataset not in the local cache, and HF_DATASETS_OFFLINE (or HF_HUB_OFFLINE) is set; "
            "download it first or give a local file or folder",
            path=label,
        )
    if hub_reachable():
        return False
    if hub_dataset_cached(repo):
        return True  # the hub is down: the cached copy is what load_dataset would fall back to
    raise DataError(
        f"hub dataset not in the local cache, and the hub at {hub_endpoint()} cannot be reached "
        f"(no answer within {HUB_PROBE_TIMEOUT_S:g} s); give a local file or folder instead "
        "(or set HF_ENDPOINT / HF_DATASETS_OFFLINE)",
        path=label,
    )


@contextlib.contextmanager
def offline_datasets(offline: bool):
    """`datasets` and the hub client in offline mode for the duration (they read the
    environment once, at import): a cached dataset is read without a network request."""
    if not offline:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def one_line(text: object, limit: int = 300) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= limit else words[: limit - 3] + "..."


def read_hub_dataset(
    name: str, split: str, data_dir: str | None = None, subset: str | None = None
) -> Records:
    """`owner/name[/data_dir]` through `datasets.load_dataset(owner/name, subset,
    data_dir=..., split=...)`; needs the hub or the HF cache (see `hub_dataset_access`)."""
    repo, data_dir = hub_parts(name, data_dir)
    label = hub_label(repo, data_dir, subset)
    from_cache = hub_dataset_access(repo, label)
    options = {"data_dir": data_dir, "split": split}
    if subset is not None:
        options["name"] = subset
    try:
        import datasets

        with offline_datasets(from_cache):
            dataset = datasets.load_dataset(repo, **options)
    except Exception as exc:  # missing split or config, unknown repo, network: all one line
        where = "from the local cache" if from_cache else "from the hub"
        raise DataError(
            f"cannot load hub dataset {where} (split {split!r}): {type(exc).__name__}: {one_line(exc)}",
            path=label,
        ) from None
    label = (
        repo + (f"/{data_dir}" if data_dir else "") + f"[{subset + ':' if subset else ''}{split}]"
    )
    return [(Location(label, row=index), dict(row)) for index, row in enumerate(dataset, start=1)]
