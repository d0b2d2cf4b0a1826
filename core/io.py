"""File primitives shared by every stage: atomic writes, JSONL, content hashes.

Every write goes to a temporary file in the destination folder and is then
renamed over the target (`os.replace` is atomic on POSIX), so a killed process
never leaves a half-written file that a later stage would read as whole.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from core.errors import DataError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _temp_prefix(path: Path) -> str:
    """Temporary siblings are named `.NAME.HOST.PID.*.tmp`: whose they are is in the name."""
    return f".{path.name}.{socket.gethostname()}.{os.getpid()}."


def _remove_orphaned_temps(path: Path) -> None:
    """Delete temporary siblings of `path` left by writers on this host that were killed.

    A SIGKILL between `mkstemp` and `os.replace` leaves the temporary file behind; it is
    never read (hidden, and `file_hash` skips it), but it would pile up. Only files of
    processes that no longer exist are removed, so a concurrent writer is never disturbed.
    """
    host = socket.gethostname()
    stem = f".{path.name}.{host}."
    for tmp in path.parent.glob(f"{glob.escape(stem)}*.tmp"):
        pid = tmp.name[len(stem):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should read like any new file
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines, atomically. Returns the number of rows written."""
    count = 0
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            count += 1
    return count


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, object)` for each non-blank line; errors name file and line.

    A name ending in `.gz` is read through gzip (public dumps such as HH-RLHF ship so).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path=path, line=number) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON ({exc.msg}, column {exc.colno})", path=path, line=number) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=number)
            yield number, obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted).

    Hidden temporary files (names starting with '.') are left out, so an
    interrupted atomic write in a folder does not change the folder's hash.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
        root = path.parent
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        root = path
    else:
        raise FileNotFoundError(f"cannot hash {path}: no such file or folder")
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        digest.update(b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
