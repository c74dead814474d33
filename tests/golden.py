"""A scripted OpenAI-compatible server that replays the golden capture of llm-jp-judge v2.0.0
(../shared/upstream/golden, see its README): it plays the model under test (`gen-model`) and the judge
(`judge-model`), answers each request from `scripted/*.json`, and records every body it receives.

Which item a request is about is read off the request as the golden README describes; the reply is
`replies[min(attempt, len(replies)) - 1]`, where `attempt` counts receipts of this exact body (sha256 of the canonical
JSON). Nothing else (time, arrival order) influences a reply, so a run against it is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MT_TURN2_MARKER = "<|The Start of Assistant A's Conversation with User|>"
HARNESS_TASK = {"mt_bench_ja": "mt_bench_ja", "mt_bench_en": "mt_bench_en", "safety_ja": "answer_carefully",
                "quality_ja": "llm_jp_instructions"}


def body_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Received:
    kind: str  # "generate" | "evaluate" | "other"
    benchmark: str | None
    item_id: str | None
    turn: int | None
    attempt: int
    sdk_retry: int
    body: dict[str, Any]  # key order as received
    status: int


@dataclass
class Script:
    """What to answer: the scripted replies and the texts that identify items."""

    generator: dict[tuple[str, str, int], list[dict[str, Any]]]
    judge: dict[tuple[str, str, int], list[dict[str, Any]]]
    first_turns: dict[str, tuple[str, str]]  # MT-Bench turn-1 text or stand-in text -> (benchmark, ID)
    tags: dict[str, tuple[str, str]]  # "[AC-01]" -> (benchmark, ID)

    @classmethod
    def load(cls, folder: Path, inputs: Path) -> Script:
        def keyed(name: str) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
            path = folder / name
            rows = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
            return {(r["benchmark"], str(r["ID"]), r["turn"]): r["replies"] for r in rows}

        first_turns: dict[str, tuple[str, str]] = {}
        tags: dict[str, tuple[str, str]] = {}
        for benchmark in ("mt_bench_ja", "mt_bench_en"):
            path = inputs / f"{benchmark}_questions.jsonl"
            for row in read_jsonl(path) if path.exists() else []:
                first_turns[row["turns"][0]] = (benchmark, str(row["question_id"]))
        for benchmark, name in (("safety_ja", "answer_carefully_v2.0_test.json"), ("quality_ja", "llm_jp_instructions_v1.0_test.json")):
            path = inputs / name
            for row in json.loads(path.read_text(encoding="utf-8")) if path.exists() else []:
                first_turns[row["text"]] = (benchmark, row["ID"])
                tags[f"[{row['ID']}]"] = (benchmark, row["ID"])
        return cls(keyed("generator_replies.json"), keyed("judge_replies.json"), first_turns, tags)

    def identify(self, body: dict[str, Any]) -> tuple[str, str | None, str | None, int | None]:
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        if body.get("model") == "gen-model" and users and users[0] in self.first_turns:
            benchmark, item = self.first_turns[users[0]]
            return "generate", benchmark, item, len(users)
        if body.get("model") == "judge-model" and users:
            prompt = users[-1]
            hits = {v for text, v in self.first_turns.items() if v[0].startswith("mt_bench") and text in prompt}
            hits |= {v for tag, v in self.tags.items() if tag in prompt}
            if len(hits) == 1:
                benchmark, item = hits.pop()
                turn = 2 if benchmark.startswith("mt_bench") and MT_TURN2_MARKER in prompt else 1
                return "evaluate", benchmark, item, turn
        return "other", None, None, None


@dataclass
class ScriptedServer:
    script: Script
    received: list[Received] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, reply = server.answer(json.loads(raw), int(self.headers.get("x-stainless-retry-count") or 0))
                data = json.dumps(reply, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, body: dict[str, Any], sdk_retry: int) -> tuple[int, dict[str, Any]]:
        sha = body_sha256(body)
        kind, benchmark, item, turn = self.script.identify(body)
        with self.lock:
            self.counts[sha] += 1
            attempt = self.counts[sha]
        table = self.script.generator if kind == "generate" else self.script.judge
        replies = table.get((benchmark, item, turn)) if kind != "other" else None
        if replies is None:  # e.g. the harness's preflight request: not an item of the capture
            reply = {"status": 200, "content": "OK", "finish_reason": "stop"}
        else:
            reply = replies[min(attempt, len(replies)) - 1]
        with self.lock:
            self.received.append(Received(kind, benchmark, item, turn, attempt, sdk_retry, body, reply["status"]))
        if reply["status"] != 200:
            return reply["status"], {"error": reply["error"]}
        message = {"role": "assistant", "content": reply["content"]}
        if "reasoning_content" in reply:
            message["reasoning_content"] = reply["reasoning_content"]
        return 200, {"id": "chatcmpl-" + hashlib.sha256(f"{sha}:{attempt}".encode()).hexdigest()[:24],
                     "object": "chat.completion", "created": 1735689600, "model": body.get("model"),
                     "choices": [{"index": 0, "message": message, "finish_reason": reply["finish_reason"], "logprobs": None}],
                     "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}
