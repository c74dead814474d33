"""The rows of a card as processes on this machine: a worker per GPU — each row's process pinned to its GPUs through
CUDA_VISIBLE_DEVICES, one row per GPU at a time, a row that needs several taking several — and the rows that need
no GPU (an API or a server generates) beside them. Progress: every row's stage on one screen, read from its store
(read-only); each row's output goes to `DIR/logs/<row>.log`, its start and end to `DIR/logs/schedule.jsonl`.

A row's process is a session of its own, so a Ctrl-C reaches the card alone: the card asks every row to stop
(SIGTERM: each keeps what it stored) and waits for them; a second signal ends the card at once. A row's process is
told to stop when the card dies in any way (Linux: the parent-death signal), so a card killed with -9 leaves no row
running on; the same command resumes every row where its store stands.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .card import Row
from .errors import UserError
from .records import SLOT_COLUMNS
from .statuses import TRANSIENT_GENERATION, TRANSIENT_JUDGMENT

TICK_S = 0.5
SCREEN_S = 1.0  # a terminal's screen is redrawn at most this often
LOG_S = 30.0  # in a log, the whole screen is written at most this often (and whenever a row starts or ends)
_PR_SET_PDEATHSIG = 1


@dataclass
class Job:
    row: Row
    command: list[str]
    run_dir: Path
    log: Path
    devices: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    started: float | None = None
    ended: float | None = None
    code: int | None = None
    waiting: str = "queued"  # why it has not started

    @property
    def running(self) -> bool:
        return self.process is not None and self.code is None


def visible_devices(gpus: str | None) -> list[str]:
    """The GPUs rows may use, as CUDA_VISIBLE_DEVICES names them: `--gpus`, else the visible ones."""
    if gpus is not None:
        ids = [g.strip() for g in gpus.split(",")]
        if not all(ids) or len(set(ids)) < len(ids):
            raise UserError(f"--gpus {gpus!r}: give distinct device ids separated by commas, e.g. --gpus 0,1")
        return ids
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def lock_holder(run_dir: Path) -> str | None:
    """The process holding the row's run lock (a run still going, or one still stopping), or None."""
    path = run_dir / "run.lock"
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return f.read().strip() or "another process"
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def stage(run_dir: Path) -> str:
    """What the row's store says it has done (read-only; the run writes it meanwhile)."""
    path = run_dir / "run.sqlite"
    if not path.is_file():
        return "starting"
    slots = "JOIN plan p ON " + " AND ".join(f"r.{column} = p.{column}" for column in SLOT_COLUMNS)
    failed_answers = ", ".join(f"'{s}'" for s in TRANSIENT_GENERATION)
    failed_judgments = ", ".join(f"'{s}'" for s in TRANSIENT_JUDGMENT)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            planned = db.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
            answered = db.execute(f"SELECT COUNT(*) FROM generations r {slots} WHERE r.status NOT IN ({failed_answers})").fetchone()[0]
            judged = db.execute(f"SELECT COUNT(*) FROM judgments r {slots} WHERE r.status NOT IN ({failed_judgments})").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not yet made, or busy for longer than a glance
        return "starting"
    if not planned:
        return "starting"
    return f"answers {answered}/{planned} · judgments {judged}/{planned}"


def ended_text(code: int, log: Path) -> str:
    if code == 0:
        return "done"
    if code == 3:
        return "not measured (exit 3)"
    if code == 4:
        return "incomplete (exit 4)"
    if code < 0 or code >= 128:
        number = -code if code < 0 else code - 128
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        return f"stopped ({name})"
    return f"failed (exit {code}): {last_line(log)}"


def last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


class Screen:
    """Every row's line at once: redrawn in place on a terminal; in a log, written when a row starts or ends and
    otherwise at most every LOG_S seconds."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = 0
        self.last = -math.inf

    def due(self, changed: bool) -> bool:
        return changed or time.monotonic() - self.last >= (SCREEN_S if self.tty else LOG_S)

    def show(self, lines: list[str]) -> None:
        self.last = time.monotonic()
        if self.tty:
            self.stream.write(f"\x1b[{self.shown}F\x1b[J" if self.shown else "")  # back to the first line, clear below
            self.shown = len(lines)
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class Scheduler:
    def __init__(self, jobs: list[Job], devices: list[str], schedule: Path, stream: TextIO = sys.stdout):
        self.jobs, self.devices, self.schedule = jobs, devices, schedule
        self.screen = Screen(stream)
        self.started = time.monotonic()
        too_big = [j for j in jobs if devices and j.row.gpus > len(devices)]
        if too_big:
            raise UserError("; ".join(f"row {j.row.name} needs {j.row.gpus} GPUs" for j in too_big) +
                            f", but the card has {len(devices)} ({', '.join(devices)}); give more with --gpus")
        # The rows that need most GPUs start first, so that rows that need fewer cannot keep them waiting forever.
        self.order = sorted(jobs, key=lambda j: -j.row.gpus)

    def run(self) -> list[Job]:
        """Every row to its end; on Ctrl-C or SIGTERM, every row asked to stop, and waited for."""
        try:
            while any(j.code is None for j in self.jobs):
                changed = self._start_what_fits()
                changed = self._reap() or changed
                if self.screen.due(changed):
                    self.screen.show(self._lines())
                time.sleep(TICK_S)
            self.screen.show(self._lines())
        except KeyboardInterrupt:
            self._stop()
            raise
        return self.jobs

    def _busy(self) -> set[str]:
        return {d for j in self.jobs if j.running for d in j.devices}

    def _start_what_fits(self) -> bool:
        started = False
        for job in self.order:
            if job.process is not None:
                continue
            holder = lock_holder(job.run_dir)
            if holder is not None:
                job.waiting = f"waiting: pid {holder} holds {job.run_dir}"
                continue
            if job.row.gpus and self.devices:
                free = [d for d in self.devices if d not in self._busy()]
                if len(free) < job.row.gpus:
                    job.waiting = "waiting for a GPU"
                    continue
                job.devices = free[:job.row.gpus]
            elif job.row.gpus and any(j.running and j.row.gpus for j in self.jobs):  # no GPU: one such row at a time
                job.waiting = "waiting (no GPU visible: one local-engine row at a time)"
                continue
            self._start(job)
            started = True
        return started

    def _start(self, job: Job) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if job.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(job.devices)
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "ab") as log:
            pinned = f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})" if job.devices else ""
            log.write(f"\n== card {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(job.command)}{pinned}\n".encode())
            log.flush()
            job.process = subprocess.Popen(job.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           env=env, start_new_session=True, preexec_fn=_stop_with(os.getpid()))
        job.started = time.monotonic()
        self._record(job, "start", devices=job.devices, pid=job.process.pid)

    def _reap(self) -> bool:
        ended = False
        for job in self.jobs:
            if job.process is not None and job.code is None and (code := job.process.poll()) is not None:
                job.code, job.ended = code, time.monotonic()
                self._record(job, "end", code=code)
                ended = True
        return ended

    def _stop(self) -> None:
        running = [j for j in self.jobs if j.running]
        print(f"\ncard: asking {len(running)} running rows to stop; each keeps what it stored (a second Ctrl-C ends "
              "the card at once, and the rows with it)", file=sys.stderr, flush=True)
        processes = [job.process for job in running if job.process is not None]  # every running job has one
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for job, process in zip(running, processes, strict=True):
            job.code = process.wait()
            job.ended = time.monotonic()
            self._record(job, "end", code=job.code)

    def _record(self, job: Job, event: str, **data: object) -> None:
        self.schedule.parent.mkdir(parents=True, exist_ok=True)
        with open(self.schedule, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": time.time(), "row": job.row.name, "event": event, **data}) + "\n")

    def _lines(self) -> list[str]:
        width = max(len(j.row.name) for j in self.jobs)
        now = time.monotonic()
        gpus = ", ".join(self.devices) or ("none visible" if any(j.row.gpus for j in self.jobs) else "none needed")
        lines = [f"card: {len(self.jobs)} rows, GPUs {gpus} — {_clock(now - self.started)}"]
        for job in self.jobs:
            where = ("gpu " + ",".join(job.devices)) if job.devices else ("cpu" if job.row.gpus else "beside")
            if job.code is not None:
                assert job.started is not None and job.ended is not None  # an ended job was started
                text = f"{ended_text(job.code, job.log)} · {_clock(job.ended - job.started)}"
            elif job.running:
                assert job.started is not None
                text = f"{stage(job.run_dir)} · {_clock(now - job.started)}"
            else:
                text, where = job.waiting, ""
            lines.append(f"  {job.row.name.ljust(width)}  {where:<8} {text}")
        return lines


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _stop_with(parent: int):
    """Run in the row's process before it starts: a SIGTERM when the card's process dies (Linux; elsewhere a row
    outlives a killed card and finishes on its own)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name and sys.platform.startswith("linux") else None

    def arrange() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the card died before the request was made
                os.kill(os.getpid(), signal.SIGTERM)

    return arrange
