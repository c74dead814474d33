"""Answers that already exist: another run's `generations.jsonl`, or a FastChat `model_answer` JSONL.

Harness records are matched by (task, item, turn, round), falling back to round 1 when a round is absent; FastChat
answers carry no task or round, so they are matched by question id and turn and reused for every round. Answers are
replayed exactly as stored (whitespace included); the compat profile decides whether the judge sees them stripped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..chat import ParsedOutput
from ..config import ReplayModel
from ..errors import UserError
from ..records import content_key
from ..sources import read_jsonl, sha256_file
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
                for turn, text in enumerate(row["choices"][0]["turns"], 1):
                    self.fastchat[(str(row["question_id"]), turn)] = text
            else:
                missing = {"task", "item_id", "turn", "round", "final", "status"} - set(row)
                if missing:
                    raise UserError(f"model.path: {self.path} line {lineno}: not a generations.jsonl record "
                                    f"(no {', '.join(sorted(missing))})")
                self.harness[(row["task"], str(row["item_id"]), int(row["turn"]), int(row["round"]))] = row

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "file": str(self.path), "sha256": self.sha256}

    def prompt_hash(self, messages: list[dict[str, str]]) -> str:
        return content_key("replay", messages)  # answers are looked up by slot; the messages are all there is

    def close(self) -> None:
        pass

    def generate(self, requests: list[GenerationRequest], on_result: OnResult) -> None:
        for request in requests:
            s = request.slot
            row = self.harness.get((s.task, s.item_id, s.turn, s.round)) or self.harness.get((s.task, s.item_id, s.turn, 1))
            if row is not None:
                parsed = ParsedOutput(row["final"], row.get("reasoning") or "", row["status"])
                on_result(GenerationResult(request, row.get("raw") or row["final"] or "", parsed, row.get("finish_reason"),
                                           row.get("tokens_in"), row.get("tokens_out"), 0.0))
            elif (s.item_id, s.turn) in self.fastchat:
                text = self.fastchat[(s.item_id, s.turn)]
                on_result(GenerationResult(request, text, ParsedOutput(text, "", "ok"), "stop", None, None, 0.0))
            else:
                on_result(error_result(request, f"no answer in {self.path} for {s.task} item {s.item_id} turn {s.turn}"))
