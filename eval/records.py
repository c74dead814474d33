"""The records that flow between stages and live in the store: `Generation` and `Judgment`.

A record's `key` is a hash of everything that determines it; the store holds one record per slot
(round, task, item, turn) and recomputes a slot only when the key it would have differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def content_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:32]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Slot:
    round: int
    task: str
    item_id: str
    turn: int


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def slot(self) -> Slot:
        return Slot(self.round, self.task, self.item_id, self.turn)  # type: ignore[attr-defined]


@dataclass
class Generation(_Record):
    key: str
    round: int
    seed: int
    task: str
    item_id: str
    turn: int
    messages: list[dict[str, str]]
    messages_hash: str
    prompt_hash: str | None
    raw: str
    final: str | None
    reasoning: str
    status: str  # a statuses.GenerationStatus
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    seconds: float
    error: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass
class Judgment(_Record):
    key: str
    generation_key: str
    round: int
    task: str
    item_id: str
    turn: int
    judge_model: str
    prompt_name: str
    prompt_hash: str
    params: dict[str, Any]
    messages: list[dict[str, str]]
    raw: str | None
    scores: dict[str, float]
    status: str  # a statuses.JudgmentStatus
    attempts: int
    usage: dict[str, int] = field(default_factory=dict)
    returned_model: str | None = None
    fingerprint: str | None = None
    seconds: float = 0.0
    error: str | None = None
    cost_usd: float | None = None
    cached: bool = False
    parse_rules: str | None = None  # JudgeRequest.rules: how the reply was read (the shared cache keys by it)
