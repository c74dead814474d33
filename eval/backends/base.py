"""The generation protocol every engine implements: requests in, results out (streamed through a callback)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..chat import ParsedOutput
from ..records import Slot
from ..statuses import GenerationStatus


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0 = greedy
    top_p: float | None
    max_new_tokens: int
    frequency_penalty: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    slot: Slot
    messages: list[dict[str, str | None]]  # a None content: an earlier turn that had no answer (chat.turn_messages)
    sampling: Sampling
    seed: int  # per request: derived from the round's seed and the slot, so it does not depend on batching


@dataclass
class GenerationResult:
    request: GenerationRequest
    raw: str
    parsed: ParsedOutput
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    seconds: float
    prompt_hash: str | None = None
    error: str | None = None


OnResult = Callable[[GenerationResult], None]


class Backend(Protocol):
    name: str

    def identity(self) -> dict[str, Any]:
        """Everything about the model and its prompt format that determines an output (part of each key)."""

    def prompt_hash(self, messages: list[dict[str, str | None]]) -> str:
        """Hash of exactly what the model is given for these messages (part of each key): the rendered token ids
        where the harness renders, else the request content it controls."""

    def generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event | None = None) -> None:
        """Generate every request and call `on_result` once per request, as soon as each is done. Once `stop` is set
        (the run is stopping), return as soon as the engine allows, dropping what is unfinished."""

    def close(self) -> None: ...


def request_seed(round_seed: int, slot: Slot) -> int:
    digest = hashlib.sha256(f"{round_seed}|{slot.task}|{slot.item_id}|{slot.turn}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def error_result(request: GenerationRequest, message: str) -> GenerationResult:
    return GenerationResult(request, "", ParsedOutput(None, "", GenerationStatus.ERROR), None, None, None, 0.0, error=message)


class BackendUnavailable(Exception):
    """The engine cannot generate now (every server it was given stopped answering): what was stored stays, and a
    later run generates the rest. The message is one line saying why."""
