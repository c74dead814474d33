"""The metric kinds, by the name a task file gives in `metric:`. Adding a kind: one module and one entry here."""

from __future__ import annotations

from ..errors import UserError
from .base import CallResult, JudgeCall, MetricKind, TaskRules, renders
from .mt_bench import MTBench
from .pairwise import Pairwise
from .quality import Quality
from .safety import Safety

KINDS: dict[str, MetricKind] = {kind.name: kind for kind in (MTBench(), Quality(), Safety(), Pairwise())}


def kind(name: str) -> MetricKind:
    if name not in KINDS:
        raise UserError(f"unknown metric kind {name!r} (known: {', '.join(KINDS)})")
    return KINDS[name]


__all__ = ["KINDS", "CallResult", "JudgeCall", "MetricKind", "TaskRules", "kind", "renders"]
