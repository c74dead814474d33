"""Progress bars: live on a terminal, at most one line every 30 s in a log file (batch jobs)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(desc: str, unit: str, total: int | None = 0, position: int = 0) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, position=position, leave=True, dynamic_ncols=True,
                mininterval=0.1 if interactive else 30.0, maxinterval=10.0 if interactive else 60.0)
