"""What a record's status means for the run, decided here and nowhere else: final (kept; a later run leaves it) or
transient (asked again by a later run), and which judgments another run may reuse through the shared judge cache.
"""

from __future__ import annotations

from .records import Generation, Judgment

# The call failed and nothing was learned about the answer: a later run asks again.
TRANSIENT_JUDGMENT = frozenset({"api_error", "timeout"})
TRANSIENT_GENERATION = frozenset({"error"})
# Outcomes that asking again would not change, so another run judging the same messages may reuse them.
SHAREABLE = frozenset({"ok", "parse_failed", "length", "content_filtered"})


def is_transient(record: Generation | Judgment) -> bool:
    return record.status in (TRANSIENT_GENERATION if isinstance(record, Generation) else TRANSIENT_JUDGMENT)


def may_share(judgment: Judgment) -> bool:
    """A final judgment made from a reply that said something: a judge that returned no text may answer next time."""
    return judgment.status in SHAREABLE and not (judgment.status == "parse_failed" and judgment.raw is None)
