"""The judgment cache shared by runs: one SQLite file keyed by judgment key (judge model, parameters, seed,
round and the exact messages). Another run judging the same answers with the same judge reuses what is here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from ..records import Judgment
from ..sources import cache_root

# Outcomes that asking again would not change; transient failures (api_error, timeout) are asked again.
CACHEABLE = {"ok", "parse_failed", "length", "content_filtered"}


class JudgeCache:
    def __init__(self, mode: str, path: str | None):
        self.mode = mode
        self.db = None
        if mode == "off":
            return
        file = Path(path).expanduser() if path else cache_root() / "judge-cache.sqlite"
        file.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(file, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
        self.lock = threading.Lock()

    def get(self, key: str) -> Judgment | None:
        if self.db is None:
            return None
        row = self.db.execute("SELECT record FROM judgments WHERE key = ?", (key,)).fetchone()
        return Judgment.from_dict(json.loads(row[0])) if row else None

    def put(self, judgment: Judgment) -> None:
        if self.db is None or self.mode != "read_write" or judgment.status not in CACHEABLE:
            return
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?)",
                            (judgment.key, json.dumps(judgment.to_dict(), ensure_ascii=False)))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
