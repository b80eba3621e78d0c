"""File I/O that survives faults (pure Python; used by every package, never imports JAX).

Writes: a results file is either its old content or its new content, never half of each: write a
temp file in the same directory, fsync it, then `os.replace` it over the target. A full disk (or
quota) becomes `DiskFullError`, one line naming the file, exit code 1.

Reads: every bookkeeping file (results.jsonl, plan.json, result.json, failed.json, leases,
metrics.jsonl, config/grid TOML) goes through the tolerant readers below, so a damaged file never
gives a traceback:
- `read_jsonl`: an append-only file keeps every intact record; each damaged line (torn by a
  kill, not UTF-8, not a JSON object) is reported once on stderr and skipped.
- `read_json(path, fix=..., default=...)`: a damaged file is either replaced by `default` with a
  warning (leases: expired; failure markers: no previous attempt) or a `UserError` naming the file
  and the fix.
- `read_text`: UTF-8 text or a `UserError` (a grid, config or table that is not text).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling.errors import DiskFullError, UserError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_RAISE = object()
_warned: set[str] = set()


# ----------------------------------------------------------------------------- writes


# errors of a path the user chose (permissions, a read-only mount, a file where a directory
# goes): bad input, said in one line with exit 2 (`scaling.cli`), not a traceback
PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


def path_problem(exc: BaseException) -> str | None:
    """One line for an OSError about a path the user chose (`PATH_ERRNOS`), else None."""
    if not isinstance(exc, OSError) or exc.errno not in PATH_ERRNOS or not exc.filename:
        return None
    return (
        f"cannot use {exc.filename}: {exc.strerror}; check its permissions, or choose another "
        "path (e.g. --out)"
    )


def check_writable_dir(path: Path, flag: str = "--out") -> Path:
    """Make `path` (a directory for outputs) and check this process can write in it, before any
    compute is spent on results that could not be saved; UserError naming it otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-check-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if is_disk_full(e):
            raise
        raise UserError(
            f"{flag} {path}: cannot write there ({e.strerror or e}); give a directory you can "
            f"write with {flag}"
        ) from None
    return path


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc` (or anything in its cause/context chain) means 'no space left'.

    Orbax/TensorStore report it as a ValueError whose text holds RESOURCE_EXHAUSTED or the
    strerror, so the text is checked as well as the errno."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        text = str(exc)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        if "RESOURCE_EXHAUSTED" in text and ("rror writing" in text or "write" in text):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full disk inside the block into `DiskFullError(path)` (one clear line, exit 1)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise DiskFullError(path) from None
        raise


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace `path` with `data` atomically (temp file in the same directory + os.replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the duration of the block."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def save_figure(fig, path: Path, **savefig_kw) -> Path:
    """Render a matplotlib ``fig`` in memory (format from the suffix), then replace ``path``
    atomically: a crash or a full disk mid-save left a truncated figure under report.md's link."""
    buf = io.BytesIO()
    with writing(path):
        fig.savefig(buf, format=Path(path).suffix.lstrip("."), **savefig_kw)
    atomic_write(path, buf.getvalue())
    return Path(path)


# ----------------------------------------------------------------------------- reads


def warn(message: str) -> None:
    """Print `warning: message` on stderr, once per message per process."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _read_bytes(path: Path, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a file; {fix}") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); {fix}") from None


def read_text(path: str | Path, fix: str = "save it as UTF-8 text") -> str:
    """The file as UTF-8 text, or a UserError naming the file, the first bad byte and `fix`."""
    path = Path(path)
    data = _read_bytes(path, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); {fix}"
        ) from None


def read_json(path: str | Path, *, fix: str, default: Any = _RAISE) -> Any:
    """Parse a JSON file. Damaged (not UTF-8, not JSON, cut short): with `default`, warn (naming
    the file and `fix`) and return it; without, raise a UserError naming the file and `fix`."""
    path = Path(path)
    try:
        return json.loads(_read_bytes(path, fix).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, UserError) as e:
        reason = e.args[0] if isinstance(e, UserError) else _reason(e)
        if default is _RAISE:
            raise UserError(f"{path} is damaged ({reason}); {fix}") from None
        warn(f"{path} is damaged ({reason}); {fix}")
        return default


def _reason(e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"byte 0x{e.object[e.start]:02x} at offset {e.start} is not UTF-8"
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    return str(e)


def split_jsonl(data: bytes, required: tuple[str, ...] = ()) -> tuple[list[dict], list[str]]:
    """(intact records, problems) of JSON-lines bytes. A record is intact when its line is
    UTF-8, parses to a JSON object and holds the `required` keys."""
    records: list[dict] = []
    problems: list[str] = []
    lines = data.split(b"\n")
    torn = bool(data) and not data.endswith(b"\n")
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            last = torn and i == len(lines)
            problems.append(f"line {i} {'is cut short' if last else 'is damaged'} ({_reason(e)})")
            continue
        if not isinstance(rec, dict) or any(k not in rec for k in required):
            problems.append(f"line {i} is not a record with {', '.join(required) or 'fields'}")
            continue
        records.append(rec)
    return records, problems


def read_jsonl(path: str | Path, *, required: tuple[str, ...] = (), quiet: bool = False) -> list:
    """Every intact record of an append-only JSON-lines file ([] when absent); each damaged
    line is reported once (unless `quiet`) and skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records, problems = split_jsonl(_read_bytes(path, "check the file"), required)
    if problems and not quiet:
        warn(
            f"{path}: {len(problems)} damaged line(s) skipped ({'; '.join(problems[:3])}); "
            f"{len(records)} intact record(s) kept"
        )
    return records
