"""Answers that already exist: another run's `generations.jsonl`, or a FastChat `model_answer` JSONL.

Harness records are matched by (task, item, turn, round), falling back to round 1 when a round is absent; FastChat
answers carry no task or round, so they are matched by question id and turn and reused for every round. Answers are
replayed exactly as stored (whitespace included); the compat profile decides whether the judge sees them stripped.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..chat import ParsedOutput
from ..config import ReplayModel
from ..errors import UserError
from ..records import Slot, content_key
from ..sources import read_jsonl, sha256_file
from ..statuses import GenerationStatus as G
from .base import GenerationRequest, GenerationResult, OnResult, error_result


class ReplayBackend:
    name = "replay"

    def __init__(self, cfg: ReplayModel):
        self.path = Path(cfg.path).expanduser()
        if not self.path.is_file():
            raise UserError(f"model.path: replay file {self.path} not found")
        self.sha256 = sha256_file(self.path)
        self.harness: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        self.fastchat: dict[tuple[str, int], str] = {}
        for lineno, row in read_jsonl(self.path, "model.path"):
            fmt = cfg.format if cfg.format != "auto" else ("fastchat" if "choices" in row else "harness")
            if fmt == "fastchat":
                turns = _fastchat_turns(row)
                if turns is None or "question_id" not in row:
                    raise UserError(f"model.path: {self.path} line {lineno}: not a FastChat answer (expected question_id "
                                    "and choices: [{turns: [text, …]}])")
                for turn, text in enumerate(turns, 1):
                    self.fastchat[(str(row["question_id"]), turn)] = text
            else:
                missing = {"task", "item_id", "turn", "round", "final", "status"} - set(row)
                if missing:
                    raise UserError(f"model.path: {self.path} line {lineno}: not a generations.jsonl record "
                                    f"(no {', '.join(sorted(missing))})")
                try:
                    self.harness[(row["task"], str(row["item_id"]), int(row["turn"]), int(row["round"]))] = row
                except (TypeError, ValueError):
                    raise UserError(f"model.path: {self.path} line {lineno}: turn and round must be integers") from None
                if row["status"] not in tuple(G):
                    raise UserError(f"model.path: {self.path} line {lineno}: status {row['status']!r} is not a "
                                    f"generation status (one of {', '.join(G)})")

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "file": str(self.path), "sha256": self.sha256}

    def prompt_hash(self, messages: list[dict[str, str | None]]) -> str:
        return content_key("replay", messages)  # answers are looked up by slot; the messages are all there is

    def close(self) -> None:
        pass

    def _harness_row(self, s: Slot) -> dict[str, Any] | None:
        return self.harness.get((s.task, s.item_id, s.turn, s.round)) or self.harness.get((s.task, s.item_id, s.turn, 1))

    def unavailable(self, slots: list[Slot]) -> list[Slot]:
        """The slots this file holds no answer for (a run needing them cannot complete)."""
        return [s for s in slots if self._harness_row(s) is None and (s.item_id, s.turn) not in self.fastchat]

    def answer(self, s: Slot) -> str | None:
        """The answer text a slot is replayed with ("" for a failed one without text; None: the file holds none)."""
        row = self._harness_row(s)
        if row is not None:
            return row["final"] or ""
        return self.fastchat.get((s.item_id, s.turn))

    def generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event | None = None) -> None:
        for request in requests:  # answers are read, not made: nothing takes long enough to stop early
            s = request.slot
            row = self._harness_row(s)
            if row is not None:
                parsed = ParsedOutput(row["final"], row.get("reasoning") or "", G(row["status"]))
                on_result(GenerationResult(request, row.get("raw") or row["final"] or "", parsed, row.get("finish_reason"),
                                           row.get("tokens_in"), row.get("tokens_out"), 0.0))
            elif (s.item_id, s.turn) in self.fastchat:
                text = self.fastchat[(s.item_id, s.turn)]
                on_result(GenerationResult(request, text, ParsedOutput(text, "", G.OK), "stop", None, None, 0.0))
            else:
                on_result(error_result(request, f"no answer in {self.path} for {s.task} item {s.item_id} turn {s.turn}"))


def _fastchat_turns(row: dict[str, Any]) -> list[str] | None:
    choices = row.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    turns = first.get("turns") if isinstance(first, dict) else None
    return turns if isinstance(turns, list) and all(isinstance(t, str) for t in turns) else None
