"""How a run ends: from its summary, the lines the user reads last and the exit code. Every report is written
before this is asked, so a non-zero code never means that something computed was lost.

Exit codes of `run` and `rejudge` (README, "Exit codes"):
  0  complete: every planned slot has an answer that did not fail and a final judgment of that answer
  3  reported, but the numbers do not measure the model: a task's answers mostly had no final answer
  4  reported, but incomplete: answers failed or were not generated, or judgments failed or are missing (per task
     in the last lines); the same command again retries them
A user error is 2, an interrupted run 128 + the signal (cli.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPLETE = 0
NO_ANSWERS = 3
INCOMPLETE = 4


@dataclass
class Outcome:
    code: int = COMPLETE
    lines: list[str] = field(default_factory=list)


def outcome(summary: dict[str, Any], retry_command: str | None = None) -> Outcome:
    """The exit code and what to say about it; `retry_command` is the command that resumes the run."""
    from .summary import counted, unfinished

    result = Outcome()
    incomplete = []
    for entry in summary["tasks"].values():
        left = ", ".join(counted(n, what) for what, n in unfinished(entry["counts"]).items() if n)
        if left:
            incomplete.append(f"{entry['column']}: {left}")
    if incomplete:
        result.code = INCOMPLETE
        result.lines += ["INCOMPLETE: " + "; ".join(incomplete) + "."]
        if retry_command:
            result.lines.append(f"Run the same command again to retry them: {retry_command}")
    return result
