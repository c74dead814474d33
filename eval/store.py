"""The run store: one SQLite file (WAL) per run directory, written through after every record.

`generations` holds one record per slot (round, task, item, turn), `judgments` one per judge call of a slot (the slot
and the call's name: `records.CallSlot`). Writing a record with a new key to a taken place moves the old one to
`superseded`, so nothing computed is ever lost. `plan` lists the slots of the latest invocation; reports read plan +
records only, so `report RUN_DIR` needs nothing else.

Records looked up by slot are kept in memory (the resume checks ask for the same slots many times); every write goes
through this object (the run lock allows one writer), which keeps the copy equal to what a read would return.

A store written before a slot could have several judgments has no `call` column: opening it for writing adds the
column (every judgment it holds is its slot's `SINGLE_CALL`, which is also the column's default, so an older version
of the harness can still write the store); opening it read-only shows its table through a view with that column.
Records are not rewritten: keys, statuses and reports stay what they were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pydantic import ValidationError

from . import redact
from .errors import UserError
from .failpoints import checkpoint
from .records import CALL_SLOT_COLUMNS, SINGLE_CALL, SLOT_COLUMNS, CallSlot, Generation, Judgment, Planned, Slot
from .run_meta import CONFIG, MetaKey

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
Row = TypeVar("Row", bound="DataclassInstance")

SLOT = ", ".join(SLOT_COLUMNS)
CALL_SLOT = ", ".join(CALL_SLOT_COLUMNS)
SQL_TYPES = {"int": "INT", "str": "TEXT"}  # of the slot's fields (annotations are strings here)
SLOT_DEFINITION = ", ".join(f"{f.name} {SQL_TYPES[str(f.type)]}" for f in dataclasses.fields(Slot))
AT_SLOT = " AND ".join(f"{column} = ?" for column in SLOT_COLUMNS)
AT_CALL_SLOT = " AND ".join(f"{column} = ?" for column in CALL_SLOT_COLUMNS)
BY_TASK = "ORDER BY task, round, item_id, turn"  # the order of reports' rows and dumps (judgments: then by call)
BY_ROUND = f"ORDER BY {SLOT}"  # the fingerprint's (unchanged, so stored fingerprints stay valid)
JUDGMENT_FIELDS = "key, generation_key, status, record, created"  # the columns after a judgment's place
# `call` has a default, so an older version of the harness writes its one judgment per slot here as before
JUDGMENTS_TABLE = (f"judgments ({SLOT_DEFINITION}, call TEXT NOT NULL DEFAULT '{SINGLE_CALL}', key TEXT NOT NULL, "
                   "generation_key TEXT NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL, "
                   f"PRIMARY KEY ({CALL_SLOT}))")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plan ({SLOT_DEFINITION}, category TEXT, PRIMARY KEY ({SLOT}));
CREATE TABLE IF NOT EXISTS generations ({SLOT_DEFINITION}, key TEXT NOT NULL,
    status TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY ({SLOT}));
CREATE TABLE IF NOT EXISTS {JUDGMENTS_TABLE};
CREATE TABLE IF NOT EXISTS superseded (kind TEXT, key TEXT, record TEXT, replaced REAL);
CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, input_file_id TEXT, keys TEXT NOT NULL,
    status TEXT NOT NULL, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT, kind TEXT, data TEXT, t REAL);
"""

_TABLES = {"generation": "generations", "judgment": "judgments"}
_PLACE = {"generation": SLOT_COLUMNS, "judgment": CALL_SLOT_COLUMNS}  # the columns a record's place is stored in
_ORDER = {"generation": BY_TASK, "judgment": f"{BY_TASK}, call"}
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
        self._with_calls(read_only)
        self.lock = threading.Lock()
        self.generations: dict[Slot, Generation | None] = {}
        self.judged: dict[Slot, dict[str, Judgment]] = {}  # a slot's judgments by call, once read

    def _with_calls(self, read_only: bool) -> None:
        """The judgments table of a store written before slots had several judgments, given its `call` column."""
        columns = [row[1] for row in self.db.execute("PRAGMA main.table_info(judgments)")]
        if not columns or "call" in columns:
            return
        if read_only:  # shown through a view, as the judgments table
            self.db.execute(f"CREATE TEMP VIEW judgments AS SELECT {SLOT}, '{SINGLE_CALL}' AS call, {JUDGMENT_FIELDS} "
                            "FROM main.judgments")
            return
        self.db.execute("BEGIN IMMEDIATE")  # SQLite cannot add a column to a primary key: the table is made again
        try:
            self.db.execute("ALTER TABLE judgments RENAME TO judgments_without_calls")
            self.db.execute(f"CREATE TABLE {JUDGMENTS_TABLE}")
            self.db.execute(f"INSERT INTO judgments ({SLOT}, {JUDGMENT_FIELDS}) SELECT {SLOT}, {JUDGMENT_FIELDS} "
                            "FROM judgments_without_calls")
            self.db.execute("DROP TABLE judgments_without_calls")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

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

    def generation(self, slot: Slot) -> Generation | None:
        with self.lock:  # a write from the other thread cannot slip between the read and the copy
            if slot not in self.generations:
                row = self.db.execute(f"SELECT record FROM generations WHERE {AT_SLOT}", dataclasses.astuple(slot)).fetchone()
                self.generations[slot] = Generation.from_dict(json.loads(row[0])) if row else None
            return self.generations[slot]

    def judgments(self, slot: Slot) -> dict[str, Judgment]:
        """The stored judgments of a slot, by call (the objects are shared, so change a copy: `dataclasses.replace`)."""
        with self.lock:
            if slot not in self.judged:
                rows = self.db.execute(f"SELECT call, record FROM judgments WHERE {AT_SLOT} ORDER BY call",
                                       dataclasses.astuple(slot))
                self.judged[slot] = {call: _judgment(call, record) for call, record in rows}
            return dict(self.judged[slot])

    def judgment(self, slot: Slot, call: str = SINGLE_CALL) -> Judgment | None:
        return self.judgments(slot).get(call)

    def put_generation(self, gen: Generation, superseded_judgments: Iterable[Slot] = ()) -> None:
        """Store an answer; the judgments of `superseded_judgments` (every call of those slots: those it replaces) move
        to `superseded` in the same transaction, so the store never holds a judgment of an answer that is no longer
        there."""
        superseded_judgments = list(superseded_judgments)
        text = self._text(gen)
        with self._transaction() as db:
            self._supersede(db, "generation", AT_SLOT, dataclasses.astuple(gen.slot), gen.key)
            for slot in superseded_judgments:
                self._supersede(db, "judgment", AT_SLOT, dataclasses.astuple(slot))
            db.execute(f"INSERT OR REPLACE INTO generations ({SLOT}, key, status, record, created) "
                       f"VALUES ({', '.join('?' * (len(SLOT_COLUMNS) + 4))})",
                       (*dataclasses.astuple(gen.slot), gen.key, gen.status, text, time.time()))
            self.generations.pop(gen.slot, None)
            for slot in superseded_judgments:
                self.judged[slot] = {}
        with self.lock:
            self.generations[gen.slot] = Generation.from_dict(json.loads(text))  # what a read returns (redacted)

    def put_judgment(self, judgment: Judgment) -> None:
        """Store the judgment of one call of a slot, in place of the one stored for that call."""
        text = self._text(judgment)
        place = dataclasses.astuple(judgment.place)
        with self._transaction() as db:
            self._supersede(db, "judgment", AT_CALL_SLOT, place, judgment.key)
            db.execute(f"INSERT OR REPLACE INTO judgments ({CALL_SLOT}, {JUDGMENT_FIELDS}) "
                       f"VALUES ({', '.join('?' * (len(CALL_SLOT_COLUMNS) + 5))})",
                       (*place, judgment.key, judgment.generation_key, judgment.status, text, time.time()))
            known = self.judged.pop(judgment.slot, None)
        if known is not None:
            with self.lock:
                self.judged[judgment.slot] = {**known, judgment.call: _judgment(judgment.call, text)}

    def drop_judgments(self, slot: Slot, calls: Iterable[str]) -> None:
        """Move the judgments of these calls of a slot to `superseded` (calls its task no longer makes)."""
        with self._transaction() as db:
            for call in calls:
                self._supersede(db, "judgment", AT_CALL_SLOT, dataclasses.astuple(CallSlot.of(slot, call)))
            self.judged.pop(slot, None)

    @staticmethod
    def _text(record: Generation | Judgment) -> str:
        """A record as it is stored: JSON, redacted (a server's error text may echo the request's credentials)."""
        data = record.to_dict()
        if data.get("error"):
            data["error"] = redact.text(data["error"], credentials=True)
        return redact.text(json.dumps(data, ensure_ascii=False))

    @staticmethod
    def _supersede(db: sqlite3.Connection, kind: str, where: str, args: tuple[Any, ...], replaced_by: str | None = None) -> None:
        """Move the records at a place (`where`: a slot, or for judgments a slot and call) to `superseded`, unless it
        has the key `replaced_by` of the record written in its place next; with no record to follow (`replaced_by`
        None) the place is left empty."""
        table = _TABLES[kind]
        now = time.time()
        for key, record in db.execute(f"SELECT key, record FROM {table} WHERE {where}", args).fetchall():
            if key != replaced_by:
                db.execute("INSERT INTO superseded VALUES (?, ?, ?, ?)", (kind, key, record, now))
        if replaced_by is None:
            db.execute(f"DELETE FROM {table} WHERE {where}", args)

    @overload
    def records(self, kind: Literal["generation"]) -> Iterator[Generation]: ...
    @overload
    def records(self, kind: Literal["judgment"]) -> Iterator[Judgment]: ...

    def records(self, kind: RecordKind) -> Iterator[Generation] | Iterator[Judgment]:
        """Every current record of a kind, one at a time (reports stream them instead of holding them all)."""
        if kind == "judgment":
            cursor = self.db.execute(f"SELECT call, record FROM judgments {_ORDER[kind]}")
            return (_judgment(call, record) for call, record in cursor)
        cursor = self.db.execute(f"SELECT record FROM generations {_ORDER[kind]}")
        return (Generation.from_dict(json.loads(record)) for (record,) in cursor)

    def fields(self, kind: RecordKind, row: type[Row], where: str = "") -> list[Row]:
        """Some fields of every current record, as `row`s (a dataclass whose fields are the record fields to read; a
        `SlotRow` reads the slot too, a `CallSlot` the judgment's call), without loading the rest (answers, judge
        messages)."""
        names = [f.name for f in dataclasses.fields(row)]
        columns = ", ".join(n if n in _PLACE[kind] else f"json_extract(record, '$.{n}')" for n in names)
        rows = self.db.execute(f"SELECT {columns} FROM {_TABLES[kind]} {where} {_ORDER[kind]}")
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
                   f"SELECT {SLOT}, key, generation_key, status, created FROM judgments {BY_ROUND}, call",
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


def _judgment(call: str, record: str) -> Judgment:
    """A stored judgment; its call is its row's (a record stored before slots had several calls does not say)."""
    return Judgment.from_dict({**json.loads(record), "call": call})


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
