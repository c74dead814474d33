"""Every status a record can have, and what it means for the run, decided here and nowhere else: final (kept; a
later run leaves it) or transient (asked again by a later run), which judgments count as valid, which another run
may reuse through the shared judge cache, which a task's `api_error_score` scores, and which the tables count.

The members are strings (`JudgmentStatus.OK == "ok"`), so records, the store and pandas frames keep plain text.
"""

from __future__ import annotations

from enum import Enum

from .records import Generation, Judgment


class _Status(str, Enum):
    __str__ = str.__str__  # "ok", not "JudgmentStatus.OK", in messages and f-strings (Python 3.10+)


class GenerationStatus(_Status):
    OK = "ok"
    TRUNCATED = "truncated"  # hit max_new_tokens
    NO_FINAL = "no_final"  # ended without a (non-empty) final channel
    ERROR = "error"  # the backend failed for this item


class JudgmentStatus(_Status):
    OK = "ok"
    PARSE_FAILED = "parse_failed"  # no score after the re-asks
    LENGTH = "length"  # judge output cut off, no score (strict only)
    API_ERROR = "api_error"
    TIMEOUT = "timeout"
    CONTENT_FILTERED = "content_filtered"
    EXCLUDED = "excluded"  # not judged: the task's no_answer policy excludes the answer


G, J = GenerationStatus, JudgmentStatus

# The call failed and nothing was learned about the answer: a later run asks again.
TRANSIENT_GENERATION = frozenset({G.ERROR})
TRANSIENT_JUDGMENT = frozenset({J.API_ERROR, J.TIMEOUT})
# Outcomes that asking again would not change, so another run judging the same messages may reuse them.
SHAREABLE = frozenset({J.OK, J.PARSE_FAILED, J.LENGTH, J.CONTENT_FILTERED})
# A judge call that returned no verdict: safety's `api_error_score` scores these, as upstream scores a failed call.
CALL_FAILURES = (J.API_ERROR, J.TIMEOUT, J.CONTENT_FILTERED)
# Judgments without a score, one column each in the counts table (in this order), and the answers that had none.
FAILURES = (J.PARSE_FAILED, J.LENGTH, *CALL_FAILURES)
UNJUDGED = (*FAILURES, J.EXCLUDED)
GENERATION_FAILURES = (G.TRUNCATED, G.NO_FINAL, G.ERROR)


def is_transient(record: Generation | Judgment) -> bool:
    return record.status in (TRANSIENT_GENERATION if isinstance(record, Generation) else TRANSIENT_JUDGMENT)


def is_valid(status: str) -> bool:
    """A judgment that holds scores: the only kind that enters a mean as it is."""
    return status == J.OK


def may_share(judgment: Judgment) -> bool:
    """A final judgment made from a reply that said something: a judge that returned no text may answer next time."""
    return judgment.status in SHAREABLE and not (judgment.status == J.PARSE_FAILED and judgment.raw is None)
