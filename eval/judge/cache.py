"""The judgment cache shared by runs: one SQLite file keyed by judgment key (judge model, parameters, seed,
round and the exact messages). Another run judging the same answers with the same judge reuses what is here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from .. import redact
from ..errors import UserError
from ..records import Judgment
from ..statuses import may_share
from ..sources import cache_root



class JudgeCache:
    def __init__(self, mode: str, path: str | None):
        self.mode = mode
        self.db = None
        if mode == "off":
            return
        self.file = Path(path).expanduser() if path else cache_root() / "judge-cache.sqlite"
        if self.file.is_dir():
            raise UserError(f"judge.cache_path: {self.file} is a directory; give a file path (e.g. {self.file / 'judge-cache.sqlite'}) "
                            "or set judge.cache: off")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.file, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise self._error("cannot open", e) from None
        self.lock = threading.Lock()

    def _error(self, doing: str, error: Exception) -> UserError:
        reason = getattr(error, "strerror", None) or str(error)
        return UserError(f"judge cache {self.file}: {doing} ({reason}); free disk space or fix the path (judge.cache_path), "
                         "or set judge.cache: off — everything stored in the run so far is kept")

    def get(self, key: str) -> Judgment | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT record FROM judgments WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise self._error("cannot read", e) from None
        if row is None:
            return None
        judgment = Judgment.from_dict(json.loads(row[0]))
        return judgment if may_share(judgment) else None  # an entry written by an older version under older rules

    def put(self, judgment: Judgment) -> None:
        if self.db is None or self.mode != "read_write" or not may_share(judgment):
            return
        with self.lock:
            try:
                self.db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?)",
                                (judgment.key, redact.text(json.dumps(judgment.to_dict(), ensure_ascii=False))))
            except sqlite3.Error as e:
                raise self._error("cannot write", e) from None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
