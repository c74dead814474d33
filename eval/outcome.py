"""How a run ends: from its summary, the lines the user reads last and the exit code. Every report is written
before this is asked, so a non-zero code never means that something computed was lost.

Exit codes of `run`, `rejudge` and `pairwise` (README, "Exit codes"):
  0  complete: every planned slot has an answer that did not fail and a final judgment of that answer
  3  reported, but the numbers do not measure the model: a task's answers mostly had no final answer, or no
     judgment of a task gave a score and its failures are final (parse_failed, length, content_filtered)
  4  reported, but incomplete: answers failed or were not generated, or judgments failed or are missing (per task
     in the last lines); the same command again retries them
  3 wins over 4 (both are said): what is retried would not make those numbers measure the model.
A user error is 2, an interrupted run 128 + the signal (cli.py).

`card` ends by the same rule over its rows (`card_outcome`, from the card's summary): 3 when a row's numbers do not
measure its model, else 4 when a row is incomplete or its run ended without its report (a user error, a crash, a
signal), else 0; both are said. Every row that has a store is in the card's table either way, its status beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .results import CardSummary, MeasuredLine, PairwiseSummary, RunSummary
from .statuses import JudgmentStatus as J

COMPLETE = 0
NO_ANSWERS = 3
NO_SCORES = 3  # the same code as NO_ANSWERS: the numbers do not measure the model
INCOMPLETE = 4
# Final failures (asking again would not change them), each with what to check.
_WHY_NO_SCORE = {J.PARSE_FAILED: "the judge's replies hold no score in the format the task's regex reads",
                 J.LENGTH: "the judge's replies were cut off (the task's judge.max_tokens)",
                 J.CONTENT_FILTERED: "the judge's provider filtered the prompts or replies"}

# Shares of a task's answers without a final answer (no_final, empty, or None for the judge): above the first the
# summary, the tables and the page warn; above the second the run ends with NO_ANSWERS.
NO_ANSWER_WARN = 0.05
NO_ANSWER_FAIL = 0.5


@dataclass
class Outcome:
    code: int = COMPLETE
    lines: list[str] = field(default_factory=list)


def outcome(summary: RunSummary | PairwiseSummary, retry_command: str | None = None,
            replayed_from: str | None = None) -> Outcome:
    """The exit code and what to say about it; `retry_command` is the command that resumes the run; `replayed_from`
    the run(s) whose stored answers this run judges (rejudge, pairwise): running again replays the same answers, so
    answers that failed there are completed there."""
    from .summary import counted

    result = Outcome()
    incomplete, unanswered = [], []
    answers_left = judgments_left = False
    for entry in summary.tasks.values():
        counts = entry.counts
        unfinished = {what: n for what, n in counts.unfinished().items() if n}
        answers_left = answers_left or any(what.startswith("answers") for what in unfinished)
        judgments_left = judgments_left or any(what.startswith("judgments") for what in unfinished)
        left = ", ".join(counted(n, what) for what, n in unfinished.items())
        if left:
            incomplete.append(f"{entry.column}: {left}")
        elif counts.valid == 0 and (final := {s: counts.judged(s) for s in _WHY_NO_SCORE if counts.judged(s)}):
            result.code = NO_SCORES
            result.lines.append(
                f"NO SCORES: {entry.column}: none of its {counts.judgments} judgments gave a score ("
                + ", ".join(f"{n} {status}" for status, n in final.items()) + "), so its numbers do not measure the "
                "model and running again would not change them; check judgments.jsonl (raw, error): "
                + "; ".join(_WHY_NO_SCORE[status] for status in final) + " — or choose another judge.")
        facts = entry.no_answer
        if facts is not None and facts.share > NO_ANSWER_FAIL:
            unanswered.append(f"{entry.column} ({facts.count} of {facts.answers})")
    if unanswered:  # the stronger statement: retrying judgments would not make these numbers measure the model
        result.code = NO_ANSWERS
        result.lines.append(f"NO ANSWERS: most answers had no final answer in {', '.join(unanswered)}; the numbers "
                            "do not measure the model (the warnings above say what to check).")
    if incomplete:
        result.code = result.code or INCOMPLETE
        result.lines += ["INCOMPLETE: " + "; ".join(incomplete) + "."]
        if replayed_from and answers_left:
            result.lines.append(f"The failed or missing answers are those stored in {replayed_from}: run again the "
                                "command that made it to complete them, then this one.")
        if retry_command and (judgments_left or not replayed_from):
            result.lines.append(f"Run the same command again to retry the judgments: {retry_command}" if replayed_from
                                else f"Run the same command again to retry them: {retry_command}")
    return result


def card_outcome(card: CardSummary, retry_command: str | None = None) -> Outcome:
    """How a card ends, from its summary: each measured row's status (`outcome` of its summary) and the rows whose
    run ended without its report (`failed`, with what each said last)."""
    result = Outcome()
    complete = {run.dir: run.summary.complete for run in card.runs}
    measured = [row for row in card.rows if isinstance(row, MeasuredLine)]
    not_measuring = [row.run for row in measured if row.status == NO_ANSWERS]
    incomplete = [row.run for row in measured if not complete[row.dir] and row.run not in card.failed]
    if not_measuring:
        result.code = NO_ANSWERS
        result.lines.append(f"NOT MEASURED: the numbers of {', '.join(not_measuring)} do not measure the model: a "
                            "benchmark's answers mostly had no final answer, or none of its judgments gave a score "
                            "(table.md says which, and what to check).")
    if incomplete or card.failed:
        result.code = result.code or INCOMPLETE
        parts = [f"{', '.join(incomplete)} incomplete (table.md says what is missing)"] if incomplete else []
        parts += [f"{name} {said}" for name, said in card.failed.items()]
        result.lines.append("INCOMPLETE: " + "; ".join(parts) + ".")
        if retry_command:
            result.lines.append(f"Run the same command again to complete them: {retry_command}")
    return result
