"""The judgment cache shared by runs: one SQLite file keyed by judgment key (judge model, parameters, seed,
round and the exact messages). Another run judging the same answers with the same judge reuses what is here.

Writes never hold up the event loop: `put` hands the judgment to a writer thread that commits what has gathered in
one transaction (every `FLUSH_S` seconds or `FLUSH_ROWS` judgments, and at `close`). The run store, not this file,
is the record of a run: a judgment is committed to the store before it is offered here, so a crash can only lose
cache entries, and the pipeline copies them from the store at its next start (see `pipeline.Runner._shared_cache`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

from .. import redact
from ..errors import UserError
from ..records import Judgment
from ..sources import cache_root
from ..statuses import may_share

FLUSH_S = 1.0
FLUSH_ROWS = 256


class JudgeCache:
    def __init__(self, mode: str, path: str | None):
        self.mode = mode
        self.db: sqlite3.Connection | None = None
        self.pending: dict[str, Judgment] = {}  # offered and not yet committed (visible to `get`)
        self.lock = threading.Condition()
        self.writer: threading.Thread | None = None
        self.closing = False
        self.failure: UserError | None = None
        if mode == "off":
            return
        self.file = Path(path).expanduser() if path else cache_root() / "judge-cache.sqlite"
        if self.file.is_dir():
            raise UserError(f"judge.cache_path: {self.file} is a directory; give a file path (e.g. {self.file / 'judge-cache.sqlite'}) "
                            "or set judge.cache: off")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._connect()
            self.db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise self._error("cannot open", e) from None

    @property
    def writable(self) -> bool:
        return self.db is not None and self.mode == "read_write"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.file, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a commit is not an fsync; a lost entry is judged again, never wrong
        return db

    def _error(self, doing: str, error: Exception) -> UserError:
        reason = getattr(error, "strerror", None) or str(error)
        return UserError(f"judge cache {self.file}: {doing} ({reason}); free disk space or fix the path (judge.cache_path), "
                         "or set judge.cache: off — everything stored in the run so far is kept")

    def get(self, key: str) -> Judgment | None:
        if self.db is None:
            return None
        with self.lock:
            judgment = self.pending.get(key)
        if judgment is None:
            try:
                row = self.db.execute("SELECT record FROM judgments WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as e:
                raise self._error("cannot read", e) from None
            if row is None:
                return None
            judgment = Judgment.from_dict(json.loads(row[0]))
        return judgment if may_share(judgment) else None  # an entry written by an older version under older rules

    def put(self, judgment: Judgment) -> None:
        self.put_all([judgment])

    def put_all(self, judgments: Iterable[Judgment]) -> None:
        """Offer judgments to the cache; those another run may reuse are written by the writer thread."""
        if not self.writable:
            return
        offered = {j.key: j for j in judgments if may_share(j)}
        with self.lock:
            if self.failure is not None:
                raise self.failure
            self.pending.update(offered)
            if self.writer is None:
                self.writer = threading.Thread(target=self._write_loop, name="judge-cache-writer", daemon=True)
                self.writer.start()
            if len(self.pending) >= FLUSH_ROWS:
                self.lock.notify()

    def _write_loop(self) -> None:
        db = self._connect()
        try:
            while True:
                with self.lock:
                    if not self.closing and len(self.pending) < FLUSH_ROWS:
                        self.lock.wait(FLUSH_S)
                    batch = dict(self.pending)
                    done = self.closing
                if batch:
                    rows = [(key, redact.text(json.dumps(j.to_dict(), ensure_ascii=False))) for key, j in batch.items()]
                    try:
                        db.execute("BEGIN")
                        db.executemany("INSERT OR REPLACE INTO judgments VALUES (?, ?)", rows)
                        db.execute("COMMIT")
                    except sqlite3.Error as e:  # closing the connection rolls the transaction back
                        with self.lock:
                            self.failure = self._error("cannot write", e)
                        return
                    with self.lock:
                        for key, judgment in batch.items():
                            if self.pending.get(key) is judgment:
                                del self.pending[key]
                if done and not batch:
                    return
        finally:
            db.close()

    def close(self) -> None:
        """Write what is pending, then close; raises if the cache could not be written."""
        with self.lock:
            self.closing = True
            self.lock.notify()
        if self.writer is not None:
            self.writer.join()
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.failure is not None:
            raise self.failure
