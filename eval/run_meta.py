"""What a run keeps in its store's meta table, key by key with the type of its value: the resolved config, the facts
of its tasks and their items (so reports need no task files), and the bookkeeping of the run and its reports.

`Store.meta(KEY)` returns a value of the key's type and `Store.set_meta(KEY, value)` stores one; both validate, so a
value a run cannot have written, or this version cannot read, is found where it is read (one line naming the key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from .config import RunConfig
from .records import Item, TaskMeta

T = TypeVar("T")


class MetaKey(Generic[T]):
    """A key of the meta table and the type of its value; `dump` makes the stored data of a value (default: its JSON
    data)."""

    def __init__(self, name: str, kind: Any, dump: Callable[[T], Any] | None = None):
        self.name = name
        self.adapter: TypeAdapter[T] = TypeAdapter(kind)
        self._dump = dump

    def dump(self, value: T) -> Any:
        return self._dump(value) if self._dump is not None else self.adapter.dump_python(value, mode="json")


# The run: its config as resolved (written to config.yaml; secrets removed) and the settings its records are made
# from, by config key (`RunConfig.identity`, compared leaf by leaf by `resume.refusal`).
CONFIG: MetaKey[RunConfig] = MetaKey("config", RunConfig, dump=RunConfig.snapshot)
IDENTITY: MetaKey[dict[str, Any]] = MetaKey("identity", dict[str, Any])
COMMAND: MetaKey[list[str]] = MetaKey("command", list[str])

# Its tasks, by name: what reports show and aggregate, the items (questions and references, for the page), where
# their files came from, and the warnings loading them gave (both for manifest.json).
TASKS: MetaKey[dict[str, TaskMeta]] = MetaKey("tasks", dict[str, TaskMeta])
ITEMS: MetaKey[dict[str, list[Item]]] = MetaKey("items", dict[str, list[Item]])
PROVENANCE: MetaKey[dict[str, list[dict[str, Any]]]] = MetaKey("provenance", dict[str, list[dict[str, Any]]])
WARNINGS: MetaKey[list[str]] = MetaKey("warnings", list[str])

# The model as the backend saw it: its identity (part of every generation key) and the reasoning format and prompt
# renderer decided at start (`ChatRenderer.facts`; None for a backend that decides none).
BACKEND_IDENTITY: MetaKey[dict[str, Any]] = MetaKey("backend_identity", dict[str, Any])
MODEL_FORMAT: MetaKey[dict[str, str] | None] = MetaKey("model_format", dict[str, str] | None)

# The judge client's parameter adaptations (`JudgeClient.policy.state`), carried over to the next invocation.
JUDGE_LEARNED_PARAMS: MetaKey[dict[str, Any]] = MetaKey("judge_learned_params", dict[str, Any])
# True from the shared judge cache's opening until its writes are done: a run killed in between offers the store's
# judgments to the cache again at its next start.
JUDGE_CACHE_BEHIND: MetaKey[bool] = MetaKey("judge_cache_behind", bool)
# The store fingerprint the report files were written from (a finished run is not reported twice).
REPORTS_FINGERPRINT: MetaKey[str] = MetaKey("reports_fingerprint", str)
