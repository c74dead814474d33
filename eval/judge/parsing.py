"""Score parsing with the upstream regex semantics.

- single score (MT-Bench, safety): `re.search` → first match, group 1 → number (Python's `float` reads any Unicode
  decimal digit, as upstream's `int` does); a second pattern is tried when the first finds nothing (FastChat's
  `[x]` fallback); under the strict profile, a number outside the scale is no score.
- criteria (quality): `re.findall` of (criterion, score) pairs; every criterion exactly once, else a failure.
- verdict (pairwise, `VerdictParser`): the labels the pattern's group captures anywhere in the reply, read in the
  order A, B, tie — FastChat's rule (`"[[A]]" in judgment`, then `[[B]]`, then `[[C]]`); under the strict profile
  a reply naming two different verdicts is no verdict.
A score that is not a finite number (NaN, infinity, or digits past the float range) is a parse failure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Parser:
    kind: str  # "single" | "criteria"
    regex: str
    low: float
    high: float
    criteria: tuple[str, ...] = ()
    score_name: str = "score"
    check_range: bool = True
    fallback_regex: str | None = None

    def __call__(self, text: str | None) -> dict[str, float] | str:
        """Scores, or the reason the text has none."""
        if not text:
            return "empty judge output"
        if self.kind == "criteria":
            return _criteria(text, self.regex, self.criteria)
        match = re.search(self.regex, text)
        if match is None and self.fallback_regex:
            match = re.search(self.fallback_regex, text)
        if match is None:
            return "no score found"
        value = _number(match.group(1))
        if isinstance(value, str):
            return value
        if self.check_range and not self.low <= value <= self.high:
            return f"score {value:g} outside {self.low:g}-{self.high:g}"
        return {self.score_name: value}


def _number(text: str) -> float | str:
    """The score as a finite float, or why it is none (NaN or infinity would poison every mean)."""
    try:
        value = float(text)
    except ValueError:
        return f"score {text!r} is not a number"
    return value if math.isfinite(value) else f"score {text!r} is not a finite number"


def _criteria(text: str, regex: str, criteria: tuple[str, ...]) -> dict[str, float] | str:
    scores: dict[str, float] = {}
    for name, value in re.findall(regex, text):
        if name in scores:
            return f"criterion {name} given twice"
        number = _number(value)
        if isinstance(number, str):
            return f"criterion {name}: {number}"
        scores[name] = number
    missing = [c for c in criteria if c not in scores]
    if missing:
        return f"missing criteria: {', '.join(missing)}"
    return scores


@dataclass(frozen=True)
class VerdictParser:
    """A pairwise verdict: `regex`'s group 1 captures a label; `labels` are (label, the share of the verdict that goes
    to the answer in position A: 1 A, 0 B, 0.5 a tie), in the order they are looked for."""

    regex: str
    labels: tuple[tuple[str, float], ...]
    single: bool = False  # strict: exactly one distinct verdict in the reply
    score_name: str = "position_a"

    def __call__(self, text: str | None) -> dict[str, float] | str:
        if not text:
            return "empty judge output"
        found = set(re.findall(self.regex, text))
        named = [(label, share) for label, share in self.labels if label in found]
        if not named:
            return "no verdict found"
        if self.single and len(named) > 1:
            return f"verdicts {', '.join(label for label, _ in named)} given together"
        return {self.score_name: named[0][1]}
