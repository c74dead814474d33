"""The run directory: an exclusive lock held for the life of a run, and atomic file writes.

The lock is an `flock` on `run.lock`: the kernel drops it when the process dies, so a killed run never leaves a
stale lock behind. Every output file is written to a temporary file in the same folder and renamed into place;
JSON files are strict JSON (no NaN or Infinity: those become null).

Nothing is written through a symbolic link inside a run directory (the directory itself may be one): a `run.lock`
or `plots` that is a link is refused with one line (`RunLock`, `check_links`); a report file that is a link is
replaced by the new file, as a rename replaces a link and never writes to its target; start-up removes leftover
temporaries only when they are regular files in the run directory or its real `plots/` folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from . import redact
from .errors import UserError
from .failpoints import checkpoint

TEMP_SUFFIX = ".partial"
# The report files every run writes, whatever its tasks.
REPORT_FILES = ("summary.json", "table.md", "table.csv", "generations.jsonl", "judgments.jsonl", "errors.json",
                "config.yaml", "manifest.json", "report.html")
# The files a run writes into its directory (atomically); start-up removes half-written temporaries of these only.
RUN_FILES = (*REPORT_FILES, "plots/categories.png", "plots/benchmarks.png", "plots/pairwise.png", "source_generations.jsonl",
             "answers_a.jsonl", "answers_b.jsonl")
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")  # what mkstemp makes below


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write to a temporary file in the same folder, then rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        checkpoint("report_file")
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path}: disk full while writing; free space and run `python -m eval report "
                            f"{path.parent}` — the run store is intact") from None
        raise UserError(f"{path}: cannot write ({e.strerror})") from None


def write_text(path: Path, text: str) -> None:
    atomic_write(path, redact.text(text).encode("utf-8"))


def strict_json(data: Any) -> Any:
    """`data` with every NaN or infinity replaced by None: JSON has no such numbers, and readers reject them."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(strict_json(data), ensure_ascii=False, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write(path, (redact.text(json.dumps(strict_json(r), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
                        for r in rows))


def leftover_temporaries(run_dir: Path) -> list[Path]:
    """Half-written temporaries that a killed run left of its own files: regular files in the run directory or in its
    subfolders that are real folders (not links); nothing else matches."""
    found = []
    for folder in {(run_dir / name).parent for name in RUN_FILES}:
        if folder != run_dir and (folder.is_symlink() or not folder.is_dir()):
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _TEMP_NAME.match(entry.name)
                if match and entry.is_file(follow_symlinks=False) and \
                        str((folder / match["target"]).relative_to(run_dir)) in RUN_FILES:
                    found.append(folder / entry.name)
    return found


def check_links(run_dir: Path) -> None:
    """Refuse a run directory whose subfolders for the run's files are links: the files would land outside it."""
    for folder in sorted({(run_dir / name).parent for name in RUN_FILES} - {run_dir}):
        if folder.is_symlink():
            raise UserError(f"{folder}: is a symbolic link (to {os.readlink(folder)}); a run writes only inside its own "
                            "directory — remove the link (its target is left alone) and run again")


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.run_dir}: cannot create the run directory ({e.strerror}); choose another with --out") from None
        lock = self.run_dir / "run.lock"
        try:  # never through a link: its target would be truncated and written
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"{lock}: is a symbolic link; a run never writes through one — remove it (its target "
                                "is left alone) and run again") from None
            raise UserError(f"{lock}: cannot create the run lock ({e.strerror}); choose another directory with --out") from None
        self.file = file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise UserError(f"{self.run_dir}: another run is using this directory (pid {holder}); "
                            "wait for it to finish or choose another with --out") from None
        try:
            file.seek(0)
            file.truncate()
            file.write(str(os.getpid()))
            file.flush()
            check_links(self.run_dir)
            for leftover in leftover_temporaries(self.run_dir):
                leftover.unlink(missing_ok=True)
            if not os.access(self.run_dir, os.W_OK):
                raise UserError(f"{self.run_dir}: the run directory is not writable; choose another with --out")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
