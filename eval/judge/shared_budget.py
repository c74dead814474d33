"""One judge budget for several runs: the account's limits kept in one SQLite file (`judge.shared_budget`) that every
run naming it reads and writes in short `BEGIN IMMEDIATE` transactions, so that requests and tokens per minute,
judgments in flight and the cost cap apply to the sum of their judge calls, whichever process makes them. `card`
gives every row the same file; runs started by hand share a budget by naming the same file.

- Rates: the grants of the last window of each limit are rows of `grants`, the time of the next paced grant a row of
  `pacing`. An acquire loads them into the limiter's own `limits.Allowance` objects, asks them, and writes its grant
  back in the same transaction, so the rule is the single-process limiter's: never more than the limit in any window
  of a minute plus the margin, spread evenly. The clock is the wall clock, which every process of the machine shares
  and which outlives a restart; a grant dated more than a window ahead (the clock was set back) is dropped.
- Concurrency: a row of `leases` per judgment in flight (the process id and its start time); a lease whose process
  is gone (a killed run) is dropped by the next run that would have to wait for it.
- Cost: each run's spend in `spend` (its run directory → USD: what its store holds when it starts, then each call's
  cost); the budget is spent when their sum reaches `budget_usd`.

Each run holds the shared totals to its own config's limits, so runs that share a file should be given the same
(`card` does). SQLite's locks need a local file system: over NFS they are not reliable (README: a budget across
machines).
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psutil

from ..config import JudgeConfig
from ..errors import UserError
from . import limits

SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (kind TEXT NOT NULL, leaves_at REAL NOT NULL, units REAL NOT NULL);
CREATE INDEX IF NOT EXISTS grants_by_kind ON grants (kind, leaves_at);
CREATE TABLE IF NOT EXISTS pacing (kind TEXT PRIMARY KEY, next_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, started REAL NOT NULL,
    taken REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spend (run TEXT PRIMARY KEY, usd REAL NOT NULL);
"""
OPEN_TIMEOUT_S = 60.0
LEASE_POLL_S = (0.02, 0.5)  # first and longest wait between tries for a lease


def _started(pid: int) -> float:
    """When the process `pid` started: with its id, this tells it from a later process given the same id."""
    return round(psutil.Process(pid).create_time(), 2)


def _alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return round(process.create_time(), 2) == started and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # another user's process: it may well be the one
        return True


class SharedBudget:
    """The judge budget of every run that names `path`, as seen by one run (`run`: its directory)."""

    def __init__(self, path: Path, cfg: JudgeConfig, run: str, clock: Callable[[], float] = time.time):
        self.path, self.run, self.clock = path, run, clock
        self.limits = {kind: limit for kind, limit in (("requests", cfg.requests_per_minute),
                                                       ("tokens", cfg.tokens_per_minute)) if limit}
        self.window = limits.MINUTE_S + limits.MARGIN_S
        self.concurrency = cfg.concurrency
        self.pid, self.started = os.getpid(), _started(os.getpid())
        self.lock = threading.Lock()  # the connection serves the event loop and the threads it hands work to
        self.queue = asyncio.Lock()  # this run's callers wait for a grant in the order they came
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=OPEN_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._create()
        except (sqlite3.Error, OSError) as e:
            raise UserError(f"judge.shared_budget: cannot use {path} as the shared judge budget ({e}); give a file "
                            "on a local disk that only runs of this harness use") from None

    def _create(self) -> None:
        """WAL mode and the tables, safe when several runs open a new file at once: SQLite answers "locked" at once,
        without waiting, to a connection that would otherwise deadlock (switching the journal mode, or a statement
        that reads and then writes), so those steps are tried again; the tables are made in one IMMEDIATE
        transaction, which waits its turn."""
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                with self._transaction() as db:
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        db.execute(statement)
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @classmethod
    def open(cls, cfg: JudgeConfig, run_dir: Path) -> SharedBudget | None:
        """The budget the config names, or None: the run keeps its limits to itself."""
        if cfg.shared_budget is None:
            return None
        return cls(Path(cfg.shared_budget).expanduser(), cfg, str(run_dir.resolve()))

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def __enter__(self) -> SharedBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # ---------------------------------------------------------------- requests and tokens per minute

    async def acquire(self, tokens: int) -> None:
        """Wait until every configured limit can pay for a request of `tokens` (as `limits.RateLimiter.acquire`)."""
        costs = [(kind, units) for kind, units in (("requests", 1), ("tokens", tokens)) if kind in self.limits]
        if not costs:
            return
        async with self.queue:
            while (wait := await asyncio.to_thread(self._grant, costs)) > 0:
                await asyncio.sleep(wait)

    def _grant(self, costs: Sequence[tuple[str, float]]) -> float:
        """Grant `costs` now and return 0, or the seconds to wait before asking again."""
        now = self.clock()
        with self._transaction() as db:
            db.execute("DELETE FROM grants WHERE leaves_at <= ? OR leaves_at > ?", (now, now + self.window))
            allowances = {kind: self._allowance(db, kind, now) for kind, _ in costs}
            wait = max(allowances[kind].wait(units, now) for kind, units in costs)
            if wait > 0:
                return wait
            for kind, units in costs:
                allowance = allowances[kind]
                allowance.grant(units, now)
                db.execute("INSERT INTO grants VALUES (?, ?, ?)", (kind, *allowance.granted[-1]))
                db.execute("INSERT OR REPLACE INTO pacing VALUES (?, ?)", (kind, allowance.next_at))
        return 0.0

    def _allowance(self, db: sqlite3.Connection, kind: str, now: float) -> limits.Allowance:
        allowance = limits.Allowance(self.limits[kind], self.window)
        for leaves_at, units in db.execute("SELECT leaves_at, units FROM grants WHERE kind = ? ORDER BY leaves_at", (kind,)):
            allowance.granted.append((leaves_at, units))
            allowance.in_window += units
        paced = db.execute("SELECT next_at FROM pacing WHERE kind = ?", (kind,)).fetchone()
        allowance.next_at = min(paced[0], now + self.window) if paced else -math.inf
        return allowance

    # ---------------------------------------------------------------- judgments in flight

    @asynccontextmanager
    async def in_flight(self) -> AsyncIterator[None]:
        """Hold one of the `concurrency` leases shared by every run while a judgment is being made."""
        pause = LEASE_POLL_S[0]
        while (lease := await asyncio.to_thread(self._lease)) is None:
            await asyncio.sleep(pause)
            pause = min(LEASE_POLL_S[1], pause * 2)
        try:
            yield
        finally:  # synchronous: a cancelled judgment must give its lease back before the task ends
            with self._transaction() as db:
                db.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _lease(self) -> int | None:
        with self._transaction() as db:
            if self._leases(db) >= self.concurrency:
                for pid, started in db.execute("SELECT DISTINCT pid, started FROM leases").fetchall():
                    if not _alive(pid, started):
                        db.execute("DELETE FROM leases WHERE pid = ? AND started = ?", (pid, started))
                if self._leases(db) >= self.concurrency:
                    return None
            return db.execute("INSERT INTO leases (pid, started, taken) VALUES (?, ?, ?)",
                              (self.pid, self.started, self.clock())).lastrowid

    @staticmethod
    def _leases(db: sqlite3.Connection) -> int:
        return db.execute("SELECT COUNT(*) FROM leases").fetchone()[0]

    # ---------------------------------------------------------------- cost

    def set_spent(self, usd: float) -> None:
        """This run's spend so far (what its store holds when it starts)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO spend VALUES (?, ?)", (self.run, usd))

    def add_spent(self, usd: float) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO spend VALUES (?, ?) ON CONFLICT (run) DO UPDATE SET usd = usd + excluded.usd",
                       (self.run, usd))

    def spent(self) -> float:
        """What every run sharing the budget has spent."""
        with self.lock:
            return self.db.execute("SELECT COALESCE(SUM(usd), 0) FROM spend").fetchone()[0]
