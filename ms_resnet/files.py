"""Every file ms_resnet writes or reads goes through here.

Writes cannot half-happen: the new files are written into a private staging folder beside their
targets (MindSpore's own temporary names land there too), flushed to disk, then renamed over the
targets together. A failure removes everything staged and says exactly which files were kept as
they were. Free space is checked first, against an estimate of what the files need.

Reads of YAML and JSON turn a missing file, bytes that are not UTF-8 and a syntax error into one
line that names the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ms_resnet.errors import UserError

# Space kept free beyond the estimate: file-system metadata and what else writes there.
SPACE_MARGIN = 1 << 20


@dataclass
class NewFile:
    """A file to write: `write(path)` writes it at the path it is given; `size` is an estimate
    of its bytes (0: small, not checked)."""

    target: Path
    write: Callable[[Path], None]
    size: int = 0


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _what_was_kept(files: Sequence[NewFile]) -> str:
    kept = [f.target.name for f in files if f.target.exists()]
    absent = [f.target.name for f in files if not f.target.exists()]
    parts = []
    if kept:
        parts.append(f"{', '.join(kept)} unchanged")
    if absent:
        parts.append(f"no {', '.join(absent)} written")
    return "; ".join(parts)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_files(files: Sequence[NewFile], context: str = "") -> None:
    """Write `files` (all in one folder) all or nothing; raise UserError naming what was kept.

    `context` (e.g. "epoch 3's") prefixes the file names in the message."""
    folder = files[0].target.parent
    names = ", ".join(f.target.name for f in files)
    label = f"{context} {names}".strip()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        need = sum(f.size for f in files)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise UserError(f"cannot write {label} in {folder}: {_reason(exc)}") from None
    if need and free < need + SPACE_MARGIN:
        raise UserError(f"cannot write {label} in {folder}: needs about "
                        f"{_megabytes(need + SPACE_MARGIN)}, {_megabytes(free)} free; "
                        f"{_what_was_kept(files)}; free some space and try again")
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        for new in files:
            new.write(staging / new.target.name)
            _fsync(staging / new.target.name)
        for new in files:
            os.replace(staging / new.target.name, new.target)
    except (OSError, RuntimeError, ValueError) as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC or "space" in _reason(exc).lower()
        hint = "; free some space and try again" if full else ""
        raise UserError(f"cannot write {label} in {folder}: {_reason(exc)}; "
                        f"{_what_was_kept(files)}{hint}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    write_files([NewFile(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))])


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


def check_writable(folder: Path, what: str) -> None:
    """Fail now, not after the work, if `folder` cannot be created or written; creates nothing
    that was not there."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder}: {existing} is not writable")


def read_text(path: Path, what: str = "") -> str:
    """The UTF-8 text of `path`; one line naming it if it is missing or not UTF-8."""
    label = f"{what} {path}".strip()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{label}: file not found") from None
    except OSError as exc:
        raise UserError(f"{label}: cannot be read ({_reason(exc)})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{label}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line});"
                        " save it as UTF-8") from None


def read_yaml(path: Path, what: str = "") -> Any:
    import yaml

    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{f'{what} {path}'.strip()}: not valid YAML ({where}{problem})") from None


def read_json(path: Path, what: str = "") -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{f'{what} {path}'.strip()}: not valid JSON (line {exc.lineno}, column "
                        f"{exc.colno}: {exc.msg}); the file is damaged or was cut short") from None


LOCK_NAME = ".lock"


@contextmanager
def folder_lock(folder: Path, what: str = "ckpt_dir") -> Iterator[None]:
    """Hold `folder` for one run: a second run into it gets one line naming the holder's PID;
    files staged by an earlier run that was killed while writing are removed.

    An fcntl lock on `folder`/.lock, so it dies with its process and a killed run never leaves
    it stale; the file is removed on release. A folder that this created and that is still
    empty then (the run stopped before writing anything) is removed too.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; runs are not serialised there
        yield
        return
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot write there ({_reason(exc)})") from None
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"{what} {folder}: cannot write there ({_reason(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{what} {folder}: another run (PID {holder}) is writing there; wait "
                            f"for it to end, or choose another {what}") from None
        # The previous holder removes the file as it lets go: lock the file that is there now.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    for stale in folder.glob(".staging-*"):  # staged by a run that was killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)
        if created:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
