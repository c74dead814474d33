"""The run store: one SQLite file (WAL) per run directory, written through after every record.

Tables hold one record per slot (round, task, item, turn). Writing a record with a new key to a taken slot moves
the old one to `superseded`, so nothing computed is ever lost. `plan` lists the slots of the latest invocation;
reports read plan + records only, so `report RUN_DIR` needs nothing else.

A record looked up by slot is kept in memory (the resume checks ask for the same slots many times); every write goes
through this object (the run lock allows one writer), which keeps the copy equal to what a read would return.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Literal, TypeVar, overload

from pydantic import ValidationError

from . import redact
from .errors import UserError
from .failpoints import checkpoint
from .records import SLOT_COLUMNS, Generation, Judgment, Planned, Slot
from .run_meta import CONFIG, MetaKey

T = TypeVar("T")
Row = TypeVar("Row")

SLOT = ", ".join(SLOT_COLUMNS)
SQL_TYPES = {"int": "INT", "str": "TEXT"}  # of the slot's fields (annotations are strings here)
SLOT_DEFINITION = ", ".join(f"{f.name} {SQL_TYPES[str(f.type)]}" for f in dataclasses.fields(Slot))
AT_SLOT = " AND ".join(f"{column} = ?" for column in SLOT_COLUMNS)
BY_TASK = "ORDER BY task, round, item_id, turn"  # the order of reports' rows and dumps
BY_ROUND = f"ORDER BY {SLOT}"  # the fingerprint's (unchanged, so stored fingerprints stay valid)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plan ({SLOT_DEFINITION}, category TEXT, PRIMARY KEY ({SLOT}));
CREATE TABLE IF NOT EXISTS generations ({SLOT_DEFINITION}, key TEXT NOT NULL,
    status TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY ({SLOT}));
CREATE TABLE IF NOT EXISTS judgments ({SLOT_DEFINITION}, key TEXT NOT NULL,
    generation_key TEXT NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY ({SLOT}));
CREATE TABLE IF NOT EXISTS superseded (kind TEXT, key TEXT, record TEXT, replaced REAL);
CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, input_file_id TEXT, keys TEXT NOT NULL,
    status TEXT NOT NULL, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT, kind TEXT, data TEXT, t REAL);
"""

_TABLES = {"generation": "generations", "judgment": "judgments"}
_RECORDS: dict[str, type[Generation] | type[Judgment]] = {"generation": Generation, "judgment": Judgment}
_OBJECT_FIELDS = {"scores", "usage", "params", "messages"}
RecordKind = Literal["generation", "judgment"]


class Store:
    def __init__(self, path: Path, read_only: bool = False):
        """`read_only`: for commands that only read a run; they work on a folder this process cannot write (an
        archive, a read-only mount), where SQLite cannot make the WAL's shared-memory file (see `_open_read_only`)."""
        self.path = Path(path)
        try:
            if read_only:
                self.db = _open_read_only(self.path)
            else:
                self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: cannot open the run store ({e}); is the file a run.sqlite of this harness?") from None
        try:  # a valid header over damaged pages opens fine and fails at some later read: find out now
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems != ["ok"]:
            self.db.close()
            found = " ".join(" ".join(problems).split())[:200]
            raise UserError(f"{self.path}: the run store is damaged ({found}); move it aside (`sqlite3 {self.path.name} "
                            ".recover` may save its records) and run again, or choose another --out")
        self.lock = threading.Lock()
        self.by_slot: dict[str, dict[Slot, Generation | Judgment | None]] = {kind: {} for kind in _TABLES}

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                checkpoint("store_commit")
                self.db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if "disk" in str(e).lower() or "full" in str(e).lower():
                    raise UserError(f"{self.path}: cannot write the run store ({e}); free disk space and run again "
                                    "— everything stored so far is kept") from None
                raise

    def _write(self, sql: str, args: Iterable[Any] = ()) -> None:
        with self._transaction() as db:
            db.execute(sql, tuple(args))

    # ------------------------------------------------------------ meta and plan

    def meta(self, key: MetaKey[T]) -> T | None:
        """The stored value of `key` (None: never stored); a value this version cannot read is a `UserError`."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key.name,)).fetchone()
        if row is None:
            return None
        try:
            return key.adapter.validate_json(row[0])
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in (key.name, *first["loc"]))
            raise UserError(f"{self.path}: the stored {where} is not readable by this version ({first['msg']}); "
                            "report the run with the version that made it") from None

    def set_meta(self, key: MetaKey[T], value: T) -> None:
        data = key.dump(key.adapter.validate_python(value))
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key.name, redact.text(json.dumps(data, ensure_ascii=False))))

    def set_plan(self, slots: Iterable[tuple[Slot, str | None]]) -> None:
        rows = [(*dataclasses.astuple(s), category) for s, category in slots]
        with self._transaction() as db:
            db.execute("DELETE FROM plan")
            db.executemany(f"INSERT INTO plan ({SLOT}, category) VALUES ({', '.join('?' * (len(SLOT_COLUMNS) + 1))})", rows)

    def plan(self) -> list[Planned]:
        cur = self.db.execute(f"SELECT {SLOT}, category FROM plan {BY_TASK}")
        return [Planned(*row) for row in cur]

    # ------------------------------------------------------------ records

    def _get(self, kind: str, slot: Slot) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT record FROM {_TABLES[kind]} WHERE {AT_SLOT}", dataclasses.astuple(slot)).fetchone()
        return json.loads(row[0]) if row else None

    def _record(self, kind: str, slot: Slot) -> Generation | Judgment | None:
        with self.lock:  # a write from the other thread cannot slip between the read and the copy
            known = self.by_slot[kind]
            if slot not in known:
                data = self._get(kind, slot)
                known[slot] = _RECORDS[kind].from_dict(data) if data else None
            return known[slot]

    def _put(self, kind: str, record: Generation | Judgment, superseded_judgments: Iterable[Slot] = ()) -> None:
        data = record.to_dict()
        if data.get("error"):  # a server's error text may echo the request's credentials
            data["error"] = redact.text(data["error"], credentials=True)
        s = record.slot
        extra = (record.generation_key,) if isinstance(record, Judgment) else ()
        columns = f"({SLOT}, key, generation_key, status, record, created)" if extra else \
            f"({SLOT}, key, status, record, created)"
        marks = ", ".join("?" * (len(SLOT_COLUMNS) + len(extra) + 4))
        text = redact.text(json.dumps(data, ensure_ascii=False))
        superseded_judgments = list(superseded_judgments)
        with self._transaction() as db:
            self._supersede(db, kind, s, record.key)
            for slot in superseded_judgments:
                self._supersede(db, "judgment", slot)
            db.execute(
                f"INSERT OR REPLACE INTO {_TABLES[kind]} {columns} VALUES ({marks})",
                (*dataclasses.astuple(s), record.key, *extra, record.status, text, time.time()),
            )
            self.by_slot[kind].pop(s, None)
            for slot in superseded_judgments:
                self.by_slot["judgment"][slot] = None
        self.by_slot[kind][s] = _RECORDS[kind].from_dict(json.loads(text))  # what a read returns (redacted)

    @staticmethod
    def _supersede(db: sqlite3.Connection, kind: str, slot: Slot, replaced_by: str | None = None) -> None:
        """Move the slot's record to `superseded`, unless it has the key `replaced_by` of the record written in its
        place next; with no record to follow (`replaced_by` None) the slot is left empty."""
        where = f"WHERE {AT_SLOT}"
        args = dataclasses.astuple(slot)
        old = db.execute(f"SELECT key, record FROM {_TABLES[kind]} {where}", args).fetchone()
        if old and old[0] != replaced_by:
            db.execute("INSERT INTO superseded VALUES (?, ?, ?, ?)", (kind, old[0], old[1], time.time()))
            if replaced_by is None:
                db.execute(f"DELETE FROM {_TABLES[kind]} {where}", args)

    def generation(self, slot: Slot) -> Generation | None:
        return self._record("generation", slot)  # type: ignore[return-value]

    def put_generation(self, gen: Generation, superseded_judgments: Iterable[Slot] = ()) -> None:
        """Store an answer; the judgments of `superseded_judgments` (those it replaces) move to `superseded` in the
        same transaction, so the store never holds a judgment of an answer that is no longer there."""
        self._put("generation", gen, superseded_judgments)

    def judgment(self, slot: Slot) -> Judgment | None:
        """The stored judgment of a slot; the object is shared, so change a copy (`dataclasses.replace`)."""
        return self._record("judgment", slot)  # type: ignore[return-value]

    def put_judgment(self, judgment: Judgment) -> None:
        self._put("judgment", judgment)

    @overload
    def records(self, kind: Literal["generation"]) -> Iterator[Generation]: ...
    @overload
    def records(self, kind: Literal["judgment"]) -> Iterator[Judgment]: ...

    def records(self, kind: RecordKind) -> Iterator[Generation] | Iterator[Judgment]:
        """Every current record of a kind, one at a time (reports stream them instead of holding them all)."""
        record_type = _RECORDS[kind]
        cursor = self.db.execute(f"SELECT record FROM {_TABLES[kind]} {BY_TASK}")
        return (record_type.from_dict(json.loads(record)) for (record,) in cursor)

    def fields(self, kind: RecordKind, row: type[Row], where: str = "") -> list[Row]:
        """Some fields of every current record, as `row`s (a dataclass whose fields are the record fields to read; a
        `SlotRow` reads the slot too), without loading the rest (answers, judge messages)."""
        names = [f.name for f in dataclasses.fields(row)]  # type: ignore[arg-type]
        columns = ", ".join(f"json_extract(record, '$.{n}')" for n in names)
        rows = self.db.execute(f"SELECT {columns} FROM {_TABLES[kind]} {where} {BY_TASK}")
        return [row(*(json.loads(v) if isinstance(v, str) and v[:1] in "{[" and n in _OBJECT_FIELDS else v
                      for n, v in zip(names, values, strict=True))) for values in rows]

    def fingerprint(self, exclude_meta: Iterable[str] = ()) -> str:
        """A hash of everything the reports are made from: meta, plan, current records (by key, status and write
        time), replaced records and batches. Equal fingerprints mean equal reports."""
        excluded = list(exclude_meta)
        digest = hashlib.sha256()
        queries = [f"SELECT key, value FROM meta WHERE key NOT IN ({', '.join('?' * len(excluded))}) ORDER BY key",
                   f"SELECT {SLOT}, category FROM plan {BY_ROUND}",
                   f"SELECT {SLOT}, key, status, created FROM generations {BY_ROUND}",
                   f"SELECT {SLOT}, key, generation_key, status, created FROM judgments {BY_ROUND}",
                   "SELECT COUNT(*), MAX(replaced) FROM superseded",
                   "SELECT batch_id, status, finished FROM batches ORDER BY batch_id"]
        for i, query in enumerate(queries):
            for row in self.db.execute(query, excluded if i == 0 else ()):
                digest.update(json.dumps(row).encode())
            digest.update(b"|")
        return digest.hexdigest()

    def counts(self) -> dict[str, int]:
        return {kind: self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for kind, table in _TABLES.items()}

    # ------------------------------------------------------------ batches and events

    def add_batch(self, batch_id: str, input_file_id: str, keys: list[str]) -> None:
        self._write("INSERT INTO batches VALUES (?, ?, ?, ?, ?, NULL)", (batch_id, input_file_id, json.dumps(keys), "created", time.time()))

    def open_batches(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT batch_id, input_file_id, keys FROM batches WHERE finished IS NULL ORDER BY created")
        return [{"batch_id": b, "input_file_id": f, "keys": json.loads(k)} for b, f, k in cur]

    def finish_batch(self, batch_id: str, status: str) -> None:
        self._write("UPDATE batches SET status = ?, finished = ? WHERE batch_id = ?", (status, time.time(), batch_id))

    def batches(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT batch_id, input_file_id, status, created, finished FROM batches ORDER BY created")
        return [dict(zip(("batch_id", "input_file_id", "status", "created", "finished"), r, strict=True)) for r in cur]

    def event(self, stage: str, kind: str, data: Any = None) -> None:
        self._write("INSERT INTO events (stage, kind, data, t) VALUES (?, ?, ?, ?)",
                    (stage, kind, redact.text(json.dumps(data, ensure_ascii=False)), time.time()))

    def events(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT stage, kind, data, t FROM events ORDER BY id")
        return [{"stage": s, "kind": k, "data": json.loads(d), "t": t} for s, k, d, t in cur]


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. A store in WAL mode needs its `-shm` file: with the `-wal` file there (a run going on,
    or killed) SQLite reads both read-only; with no `-wal` (a finished run: the last writer folded it in) in a folder
    it cannot write, SQLite cannot make `-shm`, and the file is opened as immutable — there is no WAL content to miss,
    and no writer could make one there."""
    if not path.is_file():
        raise sqlite3.DatabaseError("no such file")
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None, timeout=30)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        if Path(f"{path}-wal").exists():
            raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False, isolation_level=None)


def open_run(run_dir: Path, what: str = "a run directory") -> Store:
    """The store of a planned run in `run_dir`, read-only, or a one-line error saying what to give instead."""
    path = run_dir / "run.sqlite"
    if not path.is_file():
        raise UserError(f"{run_dir}: no run.sqlite here; give {what} (results/<name>)")
    store = Store(path, read_only=True)
    try:
        planned = store.meta(CONFIG) is not None
    except sqlite3.OperationalError:  # a SQLite file without the store's tables
        planned = False
    if not planned:
        store.close()
        raise UserError(f"{path}: the store holds no run (it was never planned)")
    return store
