"""Crash points for the reliability tests. With `LLMJP_EVAL_CRASH_AT=<name>:<n>` the n-th pass through checkpoint
`<name>` kills the process with SIGKILL, exactly as a preemption would; without it (always, outside the tests) a
checkpoint does nothing. Names: start, model_loaded, generation_stored, turn_done, judgment_stored, store_commit,
report_file.
"""

from __future__ import annotations

import os
import signal
import threading

_SPEC = os.environ.get("LLMJP_EVAL_CRASH_AT", "")
_NAME, _, _COUNT = _SPEC.partition(":")
_TARGET = int(_COUNT or 1) if _NAME else 0
_seen = 0
_lock = threading.Lock()


def checkpoint(name: str) -> None:
    global _seen
    if name != _NAME:
        return
    with _lock:
        _seen += 1
        if _seen == _TARGET:
            os.kill(os.getpid(), signal.SIGKILL)
