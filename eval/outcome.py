"""How a run ends: from its summary, the lines the user reads last and the exit code. Every report is written
before this is asked, so a non-zero code never means that something computed was lost.

Exit codes of `run` and `rejudge` (README, "Exit codes"):
  0  complete: every planned slot has an answer that did not fail and a final judgment of that answer
  3  reported, but the numbers do not measure the model: a task's answers mostly had no final answer
  4  reported, but incomplete: answers failed or were not generated, or judgments failed or are missing (per task
     in the last lines); the same command again retries them
A user error is 2, an interrupted run 128 + the signal (cli.py).

`card` ends with the strongest of its rows' outcomes (`card_outcome`): 3 when a row's numbers do not measure its
model, else 4 when a row is incomplete or its run ended without its report (a user error, a crash, a signal), else 0.
Every row that has a store is in the card's table either way, its status beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPLETE = 0
NO_ANSWERS = 3
INCOMPLETE = 4

# Shares of a task's answers without a final answer (no_final, empty, or None for the judge): above the first the
# summary, the tables and the page warn; above the second the run ends with NO_ANSWERS.
NO_ANSWER_WARN = 0.05
NO_ANSWER_FAIL = 0.5


@dataclass
class Outcome:
    code: int = COMPLETE
    lines: list[str] = field(default_factory=list)


def outcome(summary: dict[str, Any], retry_command: str | None = None) -> Outcome:
    """The exit code and what to say about it; `retry_command` is the command that resumes the run."""
    from .summary import counted, unfinished

    result = Outcome()
    incomplete, unanswered = [], []
    for entry in summary["tasks"].values():
        left = ", ".join(counted(n, what) for what, n in unfinished(entry["counts"]).items() if n)
        if left:
            incomplete.append(f"{entry['column']}: {left}")
        facts = entry.get("no_answer")  # absent from a summary written before it was counted
        if facts and facts["share"] > NO_ANSWER_FAIL:
            unanswered.append(f"{entry['column']} ({facts['count']} of {facts['answers']})")
    if unanswered:  # the stronger statement: retrying judgments would not make these numbers measure the model
        result.code = NO_ANSWERS
        result.lines.append(f"NO ANSWERS: most answers had no final answer in {', '.join(unanswered)}; the numbers "
                            "do not measure the model (the warnings above say what to check).")
    if incomplete:
        result.code = result.code or INCOMPLETE
        result.lines += ["INCOMPLETE: " + "; ".join(incomplete) + "."]
        if retry_command:
            result.lines.append(f"Run the same command again to retry them: {retry_command}")
    return result


def card_outcome(rows: dict[str, Outcome], failed: dict[str, str], retry_command: str | None = None) -> Outcome:
    """How a card ends: `rows` are the outcomes of its measured rows (by run name), `failed` what each row whose run
    ended without its report said last."""
    result = Outcome()
    unanswered = [name for name, row in rows.items() if row.code == NO_ANSWERS]
    incomplete = [name for name, row in rows.items() if row.code == INCOMPLETE and name not in failed]
    if unanswered:
        result.code = NO_ANSWERS
        result.lines.append(f"NO ANSWERS: in {', '.join(unanswered)} most answers of a benchmark had no final answer; "
                            "those numbers do not measure the model (table.md says what to check).")
    if incomplete or failed:
        result.code = result.code or INCOMPLETE
        parts = [f"{', '.join(incomplete)} incomplete (table.md says what is missing)"] if incomplete else []
        parts += [f"{name} {said}" for name, said in failed.items()]
        result.lines.append("INCOMPLETE: " + "; ".join(parts) + ".")
        if retry_command:
            result.lines.append(f"Run the same command again to complete them: {retry_command}")
    return result
