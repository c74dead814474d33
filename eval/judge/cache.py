"""The judgment cache shared by runs: one SQLite file of sealed records. Another run that would send the same request
to the same judge, and read its reply by the same rules, reuses what is here.

A record's key hashes everything that can change a judgment: the judge endpoint's identity (provider, normalised
address without credentials, Azure deployment and API version: `client.endpoint_identity`), the exact request body
(model, messages, every parameter sent) and the rules its reply is read by (`JudgeRequest.rules`: parser, asks,
compatibility profile). A record carries its key, the endpoint and the judgment, sealed by a sha256 of that
content. Reading a record checks the seal, the schema, the fields and that the key is the one its content gives;
a record that fails is a miss (counted by reason, one warning line per run: `miss_warning`), and the fresh
judgment replaces it. The checks catch damage, edits by hand and records of other versions; they do not stop
someone who can write the file from sealing a judgment of their own (README, "A shared judge cache").

Writes never hold up the event loop: `put` hands the judgment to a writer thread that commits what has gathered in
one transaction (every `FLUSH_S` seconds or `FLUSH_ROWS` judgments, and at `close`). The run store, not this file,
is the record of a run: a judgment is committed to the store before it is offered here, so a crash can only lose
cache entries, and the pipeline copies them from the store at its next start (see `pipeline.Runner._shared_cache`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import redact
from ..errors import UserError
from ..records import Judgment, content_key
from ..sources import cache_root
from ..statuses import may_share

SCHEMA = "llmjp-eval/judge-cache/v2"
TABLE = "entries"
OLD_TABLE = "judgments"  # version 1 (keyed by judgment alone, unsealed): never read; `cache prune` drops it
FLUSH_S = 1.0
FLUSH_ROWS = 256
DEFAULT_NAME = "judge-cache.sqlite"


def default_path() -> Path:
    return cache_root() / DEFAULT_NAME


def cache_key(endpoint: dict[str, Any], body: dict[str, Any], rules: str) -> str:
    return content_key(SCHEMA, endpoint, body, rules)


def request_body(judgment: Judgment) -> dict[str, Any]:
    """The body of the request a judgment answers (what `JudgeClient.request_body` sent)."""
    return {"model": judgment.judge_model, "messages": judgment.messages, **judgment.params}


class Unverified(Exception):
    """A record that is not used; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


REASONS = ("unreadable", "altered", "another version", "invalid")


def tally(reasons: Counter[str]) -> str:
    """"2 unreadable, 1 altered": the most frequent first, ties in the order of REASONS."""
    return ", ".join(f"{reasons[r]} {r}" for r in sorted(reasons, key=lambda r: (-reasons[r], REASONS.index(r))))


def seal(key: str, endpoint: dict[str, Any], judgment: dict[str, Any]) -> str:
    content = {"key": key, "endpoint": endpoint, "judgment": judgment}
    return json.dumps({"schema": SCHEMA, **content, "sha256": _checksum(content)}, ensure_ascii=False)


def _checksum(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def unseal(key: str, text: Any) -> Judgment:
    """The judgment a record holds, or `Unverified` saying why it cannot be used."""
    try:
        envelope = json.loads(text)
    except (TypeError, ValueError):
        raise Unverified("unreadable", "not JSON (truncated or damaged)") from None
    if not isinstance(envelope, dict) or envelope.get("schema") != SCHEMA:
        found = envelope.get("schema") if isinstance(envelope, dict) else None
        raise Unverified("another version", f"schema {found!r}, not {SCHEMA}")
    content = {name: envelope.get(name) for name in ("key", "endpoint", "judgment")}
    if envelope.get("sha256") != _checksum(content):
        raise Unverified("altered", "its content does not match its sha256")
    judgment = _judgment(content["judgment"])
    assert judgment.parse_rules is not None  # `_judgment` checked it is text
    endpoint = content["endpoint"]
    if (content["key"] != key or not isinstance(endpoint, dict)
            or cache_key(endpoint, request_body(judgment), judgment.parse_rules) != key):
        raise Unverified("altered", "its key is not the one its endpoint, request and rules give")
    if not may_share(judgment):
        raise Unverified("invalid", f"status {judgment.status!r} is never shared")
    return judgment


def _judgment(data: Any) -> Judgment:
    try:
        judgment = Judgment.from_dict(data)
    except (TypeError, AttributeError):
        raise Unverified("invalid", "not a judgment record of this version") from None
    checks = {"scores": isinstance(judgment.scores, dict) and all(
                  isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in judgment.scores.values()),
              "status": isinstance(judgment.status, str), "messages": isinstance(judgment.messages, list),
              "params": isinstance(judgment.params, dict), "judge_model": isinstance(judgment.judge_model, str),
              "parse_rules": isinstance(judgment.parse_rules, str)}
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise Unverified("invalid", f"{', '.join(wrong)} of the wrong type")
    return judgment


class JudgeCache:
    def __init__(self, mode: str, path: str | None, endpoint: dict[str, Any]):
        self.mode = mode
        self.endpoint = endpoint
        self.db: sqlite3.Connection | None = None
        self.pending: dict[str, tuple[Judgment, str]] = {}  # offered, not yet committed (visible to `get`): record text
        self.lock = threading.Condition()
        self.writer: threading.Thread | None = None
        self.closing = False
        self.failure: UserError | None = None
        self.misses: Counter[str] = Counter()  # records found and not used, by reason
        if mode == "off":
            return
        self.file = Path(path).expanduser() if path else default_path()
        if self.file.is_dir():
            raise UserError(f"judge.cache_path: {self.file} is a directory; give a file path (e.g. {self.file / DEFAULT_NAME}) "
                            "or set judge.cache: off")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._connect()
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL)")
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

    def key_of(self, body: dict[str, Any], rules: str) -> str:
        """What a request is cached under: two requests with one key get one judgment."""
        return cache_key(self.endpoint, body, rules)

    def get(self, body: dict[str, Any], rules: str) -> Judgment | None:
        """The judgment of the request `body` read by `rules` at this cache's endpoint, if a record verifies."""
        if self.db is None:
            return None
        key = self.key_of(body, rules)
        with self.lock:
            if key in self.pending:
                return self.pending[key][0]
        try:
            row = self.db.execute(f"SELECT record FROM {TABLE} WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError as e:  # locked, or the disk: the cache cannot be used as it is
            raise self._error("cannot read", e) from None
        except sqlite3.DatabaseError:  # a damaged page: this record is lost, the rest may not be
            self.misses["unreadable"] += 1
            return None
        if row is None:
            return None
        try:
            return unseal(key, row[0])
        except Unverified as e:
            self.misses[e.reason] += 1
            return None

    def miss_warning(self) -> str | None:
        """One line on the records found and not used in this run, if any."""
        if not self.misses:
            return None
        count = sum(self.misses.values())
        return (f"judge cache {self.file}: {count} record{'s' * (count != 1)} did not verify ({tally(self.misses)}) and "
                f"{'were' if count != 1 else 'was'} judged again; `python -m eval cache verify {self.file}` lists "
                "them, `cache prune` removes them")

    def put(self, judgment: Judgment) -> None:
        self.put_all([judgment])

    def put_all(self, judgments: Iterable[Judgment]) -> None:
        """Offer judgments to the cache; those another run may reuse are written by the writer thread. A judgment
        whose text held a known secret is not shared (its record would be stored redacted, and so not verify)."""
        if not self.writable:
            return
        offered = {}
        for judgment in judgments:
            if not may_share(judgment) or judgment.parse_rules is None:  # parse_rules: none in older records
                continue
            data = judgment.to_dict()
            if redact.data(data) != data:
                continue
            key = cache_key(self.endpoint, request_body(judgment), judgment.parse_rules)
            offered[key] = (judgment, seal(key, self.endpoint, data))
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
                    now = time.time()
                    try:
                        db.execute("BEGIN")
                        db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?)",
                                       [(key, text, now) for key, (_, text) in batch.items()])
                        db.execute("COMMIT")
                    except sqlite3.Error as e:  # closing the connection rolls the transaction back
                        with self.lock:
                            self.failure = self._error("cannot write", e)
                        return
                    with self.lock:
                        for key, entry in batch.items():
                            if self.pending.get(key) is entry:
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


# ---------------------------------------------------------------- `python -m eval cache verify | stats | prune`

@dataclass
class Inspection:
    records: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (key, reason, detail)
    old_records: int = 0
    integrity: list[str] = field(default_factory=list)  # SQLite's findings; ["ok"] for a sound file
    judges: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, judge model) of verified records
    statuses: Counter[str] = field(default_factory=Counter)
    oldest: float | None = None
    newest: float | None = None

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason, _ in self.failures)


def _open_existing(path: Path, writable: bool) -> sqlite3.Connection:
    if not path.is_file():
        raise UserError(f"{path}: no judge cache there (the default is {default_path()}; judge.cache_path names another)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode={'rw' if writable else 'ro'}", uri=True, isolation_level=None,
                             timeout=30)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise UserError(f"{path}: not a judge cache ({e})") from None
    return db


def inspect(path: Path) -> Inspection:
    """Every record of the cache read as a run would read it."""
    db = _open_existing(path, writable=False)
    result = Inspection()
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        try:
            result.integrity = [row[0] for row in db.execute("PRAGMA quick_check(20)")]
        except sqlite3.DatabaseError as e:
            result.integrity = [str(e)]
        if OLD_TABLE in tables:
            result.old_records = db.execute(f"SELECT count(*) FROM {OLD_TABLE}").fetchone()[0]
        if TABLE not in tables:
            return result
        for key, text, created in db.execute(f"SELECT key, record, created FROM {TABLE}"):
            result.records += 1
            try:
                judgment = unseal(key, text)
            except Unverified as e:
                result.failures.append((key, e.reason, e.detail))
                continue
            endpoint = json.loads(text)["endpoint"]
            where = endpoint.get("base_url") or endpoint.get("endpoint") or endpoint.get("provider")
            result.judges[(f"{endpoint.get('provider')} {where}".strip(), judgment.judge_model)] += 1
            result.statuses[judgment.status] += 1
            result.oldest = created if result.oldest is None else min(result.oldest, created)
            result.newest = created if result.newest is None else max(result.newest, created)
    except sqlite3.DatabaseError as e:
        result.integrity = [*(p for p in result.integrity if p != "ok"), f"reading stopped: {e}"]
    finally:
        db.close()
    return result


def prune(path: Path, older_than_days: float | None = None) -> tuple[int, int, int]:
    """Remove the records that do not verify, the older version's table and, with `older_than_days`, verified
    records written before then; returns (failed, old, aged) counts removed."""
    found = inspect(path)
    cutoff = time.time() - older_than_days * 86_400 if older_than_days is not None else None
    db = _open_existing(path, writable=True)
    try:
        db.execute("BEGIN IMMEDIATE")
        aged = 0
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone():
            db.executemany(f"DELETE FROM {TABLE} WHERE key = ?", [(key,) for key, _, _ in found.failures])
            if cutoff is not None:
                aged = db.execute(f"DELETE FROM {TABLE} WHERE created < ?", (cutoff,)).rowcount
        if found.old_records:
            db.execute(f"DROP TABLE {OLD_TABLE}")
        db.execute("COMMIT")
        db.execute("VACUUM")
    except sqlite3.DatabaseError as e:
        raise UserError(f"{path}: cannot prune ({e}); if the file is damaged, delete it (the cache only saves calls)") from None
    finally:
        db.close()
    return len(found.failures), found.old_records, aged


def cache_command(action: str, path: Path, older_than_days: float | None = None) -> int:
    path = path.expanduser()
    if action == "prune":
        failed, old, aged = prune(path, older_than_days)
        print(f"{path}: removed {failed} records that did not verify, {old} records of an older version"
              + (f" and {aged} records older than {older_than_days:g} days" if older_than_days is not None else ""))
        return 0
    found = inspect(path)
    ok = found.records - len(found.failures)
    print(f"{path}: {found.records} records, {ok} verified"
          + (f", {len(found.failures)} did not ({tally(found.reasons())})" if found.failures else "")
          + (f"; {found.old_records} records of an older version (never read)" if found.old_records else ""))
    if found.integrity != ["ok"]:
        print(f"SQLite integrity check: {'; '.join(found.integrity)[:500]}")
    if action == "stats":
        print(f"file size {path.stat().st_size / 1e6:.1f} MB" + (
            f"; written {time.strftime('%Y-%m-%d', time.localtime(found.oldest))} to "
            f"{time.strftime('%Y-%m-%d', time.localtime(found.newest))}" if found.oldest is not None else ""))
        for (where, model), n in found.judges.most_common():
            print(f"  {n:>8}  {model} at {where}")
        if found.statuses:
            print("  statuses: " + ", ".join(f"{status} {n}" for status, n in found.statuses.most_common()))
        return 0
    for key, reason, detail in found.failures[:20]:
        print(f"  {key}  {reason}: {detail}")
    if len(found.failures) > 20:
        print(f"  … and {len(found.failures) - 20} more")
    if found.failures or found.integrity != ["ok"]:
        print(f"a run reads these as misses and judges them again; `python -m eval cache prune {path}` removes them")
        return 1
    return 0
