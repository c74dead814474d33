"""The records that flow between stages and live in the store: the `Item`s of a task, `Generation` (one per slot)
and `Judgment` (one per judge call of a slot), the rows of the plan and of a stored field selection, and the task
facts the reports read.

A record's `key` is a hash of everything that determines it; the store holds one generation per slot (round, task,
item, turn) and one judgment per judge call of a slot (`CallSlot`: the slot and the call's name; a metric kind says
which calls a slot needs, most kinds one, `SINGLE_CALL`), and recomputes a record only when the key it would have
differs.

Records are dataclasses: they are made field by field on the hot path (every answer, every judgment, the judge
cache) and copied with `dataclasses.replace`; the store writes them itself, so reading them back needs no
validation. What the store keeps about a task (`TaskMeta`) is a pydantic model: it is read from runs made by
earlier versions, so it is validated, and fields those runs lack get their defaults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict


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


SINGLE_CALL = "single"  # a slot's judge call where a kind makes one: every judgment stored before slots had several

Plot = Literal["categories", "none"]  # how a task is plotted beside the bars of every task: a per-category radar, or not

SLOT_COLUMNS = tuple(f.name for f in fields(Slot))  # a slot's columns in the store's tables and in frames
SLOT_IN_TASK = tuple(c for c in SLOT_COLUMNS if c != "task")  # in the frames of one task (observations)


@dataclass(frozen=True)
class SlotRow(Slot):
    """A row about one slot: the plan's, or selected fields of a stored record (`Store.fields`)."""

    @property
    def slot(self) -> Slot:
        return Slot(self.round, self.task, self.item_id, self.turn)


@dataclass(frozen=True)
class CallSlot(SlotRow):
    """One judge call of a slot, by its name (`MetricKind.calls`): where a judgment is stored."""

    call: str

    @classmethod
    def of(cls, slot: Slot, call: str) -> CallSlot:
        return cls(slot.round, slot.task, slot.item_id, slot.turn, call)


CALL_SLOT_COLUMNS = tuple(f.name for f in fields(CallSlot))  # a judgment's place: the slot's columns and the call's


@dataclass(frozen=True)
class Planned(SlotRow):
    """A slot of the plan and its item's category."""

    category: str | None


@dataclass(frozen=True)
class Item:
    task: str
    item_id: str
    turns: tuple[str, ...]
    category: str | None = None
    references: tuple[str, ...] | None = None  # per turn; MT-Bench reference categories only


@dataclass(frozen=True)
class TaskRules:
    """What aggregation needs to know about a task (stored with the run, so reports need no task files)."""

    metric: str
    api_error_score: float | None = None
    primary_criterion: str | None = None
    criteria: tuple[str, ...] = ()
    calls: tuple[str, ...] = (SINGLE_CALL,)  # the judge calls each slot needs, by name (`MetricKind.calls`)


NoAnswer = Literal["judge_as_is", "judge_empty", "exclude"]  # what is judged of an answer that is not ok (`compat.answer_for`)


class TaskMeta(BaseModel):
    """What the reports need to know about a task, stored with the run (`report.task_meta`). A field that runs made
    before it existed lack takes its default; `summary` tells an absent presentation field from an empty one
    (`model_fields_set`) and gives the kind's default."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    title: str
    column: str
    metric: str
    turns: int = 1
    variant: str
    order: int | None = None
    published_column: str | None = None
    plot: Plot | None = None
    scale: tuple[int, int] | None = None
    rules: TaskRules
    no_answer: NoAnswer | None = None
    greedy_categories: list[str] = []
    expected_items: int | None = None
    judge_prompts: str | None = None
    judge_prompts_sha256: str | None = None


class _Record:
    """What the stored records (dataclasses) share: the fields of their slot, and their JSON data."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    round: int
    task: str
    item_id: str
    turn: int

    def to_dict(self) -> dict[str, Any]:
        """The record's fields as a new mapping whose values are the record's own (JSON data: no record nests another,
        so `asdict`'s deep copy of every message and score would only cost time)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def slot(self) -> Slot:
        return Slot(self.round, self.task, self.item_id, self.turn)


@dataclass
class Generation(_Record):
    key: str
    round: int
    seed: int
    task: str
    item_id: str
    turn: int
    messages: list[dict[str, str | None]]
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

    def add(self, other: Usage) -> None:
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
    call: str = SINGLE_CALL  # which judge call of its slot this is (records stored before several were possible: one)

    @property
    def place(self) -> CallSlot:
        return CallSlot.of(self.slot, self.call)


@dataclass(frozen=True)
class JudgmentUsage:
    """What a stored judgment cost, and who answered it (`Store.fields`: the manifest, the budget of a resumed run)."""

    task: str
    usage: dict[str, int]
    cost_usd: float | None
    cached: bool
    returned_model: str | None
    fingerprint: str | None
