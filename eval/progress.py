"""Progress of a stage: a live bar on a terminal; in a log (a batch job's redirected stderr) one plain line at most
every 30 s per stage, and a last line when the stage ends.

tqdm is kept for the terminal only: in a file it writes a line on every `refresh()`, and the judge stage's total
grows with every request it releases.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LOG_INTERVAL_S = 30.0


class Bar:
    def __init__(self, desc: str, unit: str, total: int = 0, position: int = 0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, interval_s: float = LOG_INTERVAL_S):
        self.desc, self.unit, self.total, self.done = desc, unit, total, 0
        self.stream = stream or sys.stderr
        self.clock, self.interval_s = clock, interval_s
        self.started = self.last_line = clock()
        self.live = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.live = tqdm(total=total, desc=desc, unit=unit, position=position, leave=True, dynamic_ncols=True,
                             mininterval=0.1, maxinterval=10.0, file=self.stream)

    def add_total(self, n: int = 1) -> None:
        """More work became known (the judge stage learns its requests as answers arrive)."""
        self.total += n
        if self.live is not None:
            self.live.total = self.total
        self._tick()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.live is not None:
            self.live.update(n)
        self._tick()

    def set_done(self, done: int) -> None:
        """The count as someone else reports it (a batch's completed requests)."""
        self.update(done - self.done)

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
        elif self.done or self.total:
            self._line()

    def _tick(self) -> None:
        if self.live is None and self.clock() - self.last_line >= self.interval_s:
            self._line()

    def _line(self) -> None:
        now = self.clock()
        elapsed = now - self.started
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        rate = f", {self.done / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        self.stream.write(f"{self.desc}: {self.done}/{self.total} {self.unit}{share}{rate}, {_clock(elapsed)} elapsed\n")
        self.stream.flush()
        self.last_line = now


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"

