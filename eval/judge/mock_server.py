"""An OpenAI-compatible mock server for offline runs and tests: chat completions (as a judge, or as a generator
for models named `mock-gen*`), files and batches, and injected faults.

Everything is deterministic: a verdict is a function of the request content, written by the metric kind of the
judge template the prompt was rendered from, in the format its parser reads (`eval/kinds/`), plus `score_shift` clipped to the scale (a
second judge that differs from the first by a known rule); a fault is drawn from (seed, request
content, how often that content was seen). Counters are served at `GET /mock/counters`.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..config import MockSettings
from ..kinds import KINDS, kind, renders
from ..tasks import Task, judge_templates, local_judge_templates
from .prompts import Template

FAULTS = ("429", "500", "503", "hang", "drop", "malformed", "empty", "content_filter", "length")
REASONING_FAMILIES = ("gpt-5", "o1", "o3", "o4")


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).digest()[:8], "little")


def request_hash(body: dict[str, Any]) -> str:
    """Identifies a request by its whole body (model, messages, parameters), as counted in `bodies`."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def verdict(messages: list[dict[str, Any]], settings: MockSettings, templates: Iterable[tuple[str, Template]] = ()) -> str:
    """A judge reply in the format the prompt asks for; the score is a function of the prompt, plus the settings'
    `score_shift` clipped to the scale (a pairwise verdict follows their `pairwise_rule`).

    A prompt rendered from one of `templates` is answered by that template's metric kind, in the format its parser
    reads (a quality template: one line per criterion of its own list); any other prompt gets one `[[n]]`, on
    1–5 when it names that scale, else 1–10.
    """
    prompt = "\n".join(str(m.get("content") or "") for m in messages)
    h = _digest(prompt)
    for metric, template in templates:
        if renders(template, prompt):
            return kind(metric).mock_reply(template, prompt, h, settings)
    if any(marker in prompt for marker in ("1から5", "1 to 5", "1-5", "1–5")):
        return KINDS["safety"].mock_reply(None, prompt, h, settings)
    return KINDS["mt_bench"].mock_reply(None, prompt, h, settings)


def generation(messages: list[dict[str, Any]], max_tokens: int | None, effort: str | None) -> tuple[str, str | None, str, int]:
    """(reasoning, content, finish_reason, completion tokens) for a mock generator model."""
    h = _digest(messages)
    last = str(messages[-1].get("content") or "")[:40]
    reasoning = f"Reasoning ({effort or 'default'}) about: {last}" * {"low": 1, "medium": 2, "high": 4}.get(effort or "", 2)
    content = f"Mock answer {h % 100000:05d} to: {last}"
    need_reasoning, need_content = len(reasoning) // 4 + 1, len(content) // 4 + 1
    if max_tokens is not None and max_tokens < need_reasoning:
        return reasoning[: max_tokens * 4], None, "length", max_tokens
    if max_tokens is not None and max_tokens < need_reasoning + need_content:
        return reasoning, content[: (max_tokens - need_reasoning) * 4], "length", max_tokens
    return reasoning, content, "stop", need_reasoning + need_content


class MockState:
    def __init__(self, settings: MockSettings, api_key: str | None = None, reject_params: tuple[str, ...] = (),
                 templates: Iterable[tuple[str, Template]] = ()):
        self.settings = settings
        self.templates = list(templates)
        self.api_key = api_key
        self.reject_params = set(reject_params)
        self.lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.bodies: Counter[str] = Counter()
        self.in_flight = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    def draw(self, body_hash: str) -> tuple[str | None, float]:
        with self.lock:
            self.bodies[body_hash] += 1
            seen = self.bodies[body_hash]
        s = self.settings
        rng = random.Random(_digest(s.seed, body_hash, seen))
        latency = max(0.0, s.latency_s + rng.uniform(-s.latency_jitter_s, s.latency_jitter_s))
        u = rng.random()
        for name in FAULTS:
            rate = getattr(s, f"rate_{name}")
            if u < rate:
                return name, latency
            u -= rate
        return None, latency

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"counters": dict(self.counters), "bodies": dict(self.bodies), "in_flight": self.in_flight}


def _error(status: int, message: str, code: str | None = None, param: str | None = None, kind: str = "invalid_request_error") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _completion(model: str, content: str | None, finish: str, prompt_tokens: int, completion_tokens: int,
                reasoning: str | None = None, reasoning_tokens: int = 0) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning"] = reasoning
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}},
    }


def answer_chat(state: MockState, body: dict[str, Any], fault: str | None) -> tuple[int, dict[str, Any]]:
    """The reply to one chat completion request, given its drawn fault (used by HTTP and batch paths)."""
    model = str(body.get("model", ""))
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not messages:
        return _error(400, "'messages' must be a non-empty list", param="messages")
    family = next((f for f in REASONING_FAMILIES if model.startswith(f)), None)
    if family and "max_tokens" in body:
        return _error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                      code="unsupported_parameter", param="max_tokens")
    for name in state.reject_params:
        if name in body:
            return _error(400, f"Unsupported value: '{name}' does not support {body[name]!r} with this model.",
                          code="unsupported_value", param=name)
    if fault == "429":
        return _error(429, "Rate limit reached (mock)", code="rate_limit_exceeded", kind="requests")
    if fault in ("500", "503"):
        return _error(int(fault), "The server had an error (mock)", kind="server_error")
    if fault == "content_filter":
        return _error(400, "The response was filtered due to the prompt triggering the content management policy (mock).",
                      code="content_filter", param="prompt")
    prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if model.startswith("mock-gen"):
        reasoning, content, finish, tokens = generation(messages, limit, body.get("reasoning_effort"))
        return 200, _completion(model, content, finish, prompt_tokens, tokens, reasoning, len(reasoning) // 4 + 1)
    text = verdict(messages, state.settings, state.templates)
    if fault == "empty":
        return 200, _completion(model, "", "stop", prompt_tokens, 0)
    if fault == "length":
        return 200, _completion(model, text.split("[[")[0], "length", prompt_tokens, limit or 16)
    return 200, _completion(model, text, "stop", prompt_tokens, len(text) // 4 + 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and runs read counters instead
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        key = self.server.state.api_key
        if key and key not in (self.headers.get("Authorization", "").removeprefix("Bearer "), self.headers.get("api-key")):
            self._send(*_error(401, "Incorrect API key provided (mock).", code="invalid_api_key"))
            return False
        return True

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/mock/counters":
            return self._send(200, state.snapshot())
        if not self._authorized():
            return
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["v1", "models"]:
            return self._send(200, {"object": "list", "data": [{"id": "mock-judge", "object": "model", "owned_by": "mock"}]})
        if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
            data = state.files.get(parts[2])
            return self._send(200, data) if data is not None else self._send(*_error(404, "No such file"))
        if parts[:2] == ["v1", "batches"] and len(parts) == 3:
            return self._send(*self._poll_batch(parts[2]))
        self._send(*_error(404, f"Unknown path {self.path}"))

    def do_POST(self) -> None:
        state = self.server.state
        raw = self._body()
        if self.path == "/mock/reset":
            with state.lock:
                state.counters.clear()
                state.bodies.clear()
            return self._send(200, {"ok": True})
        if not self._authorized():
            return
        if self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):  # OpenAI, and Azure's deployment paths
            return self._chat(raw)
        if self.path.rstrip("/") == "/v1/files":
            return self._upload(raw)
        if self.path.rstrip("/") == "/v1/batches":
            return self._create_batch(raw)
        self._send(*_error(404, f"Unknown path {self.path}"))

    def _chat(self, raw: bytes) -> None:
        state = self.server.state
        with state.lock:
            state.counters["requests"] += 1
            state.in_flight += 1
            state.counters["max_in_flight"] = max(state.counters["max_in_flight"], state.in_flight)
        try:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                return self._send(*_error(400, "Invalid JSON body"))
            fault, latency = state.draw(request_hash(body))
            with state.lock:
                state.counters[fault or "ok"] += 1
            time.sleep(latency)
            if fault == "hang":
                time.sleep(state.settings.hang_s)
            if fault == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            if fault == "malformed":
                return self._send(200, b'{"id": "chatcmpl-mock", "choices": [{"mess')
            status, payload = answer_chat(state, body, fault)
            headers = {"Retry-After": f"{state.settings.retry_after_s:g}"} if status == 429 else None
            self._send(status, payload, headers)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _upload(self, raw: bytes) -> None:
        state = self.server.state
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode() + raw)
        content, filename = b"", "upload.jsonl"
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                payload = part.get_payload(decode=True)
                content = payload if isinstance(payload, bytes) else b""
                filename = part.get_filename() or filename
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        with state.lock:
            state.files[file_id] = content
            state.counters["files_uploaded"] += 1
        self._send(200, {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                         "filename": filename, "purpose": "batch", "status": "processed"})

    def _create_batch(self, raw: bytes) -> None:
        state = self.server.state
        body = json.loads(raw or b"{}")
        if body.get("input_file_id") not in state.files:
            return self._send(*_error(400, "input_file_id not found", param="input_file_id"))
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        batch = {"id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"), "_polls": 0}
        with state.lock:
            state.batches[batch_id] = batch
            state.counters["batches_created"] += 1
        self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})

    def _poll_batch(self, batch_id: str) -> tuple[int, dict]:
        state = self.server.state
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                return _error(404, "No such batch")
            batch["_polls"] += 1
            state.counters["batch_polls"] += 1
            ready = batch["_polls"] > state.settings.batch_polls_to_complete and batch["status"] != "completed"
        if ready:
            self._complete_batch(batch)
        elif batch["status"] == "validating":
            batch["status"] = "in_progress"
        return 200, {k: v for k, v in batch.items() if not k.startswith("_")}

    def _complete_batch(self, batch: dict[str, Any]) -> None:
        state = self.server.state
        outputs: list[str] = []
        errors: list[str] = []
        for line in state.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            fault, _ = state.draw(request_hash(entry["body"]))
            fault = fault if fault in ("500", "content_filter", "empty", "length") else None
            with state.lock:
                state.counters["batch_requests"] += 1
            status, payload = answer_chat(state, entry["body"], fault)
            row = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": entry["custom_id"],
                   "response": {"status_code": status, "request_id": uuid.uuid4().hex[:8], "body": payload}, "error": None}
            (outputs if status == 200 else errors).append(json.dumps(row, ensure_ascii=False))
        with state.lock:
            for kind, rows in (("output_file_id", outputs), ("error_file_id", errors)):
                if rows:
                    file_id = f"file-{uuid.uuid4().hex[:12]}"
                    state.files[file_id] = ("\n".join(rows) + "\n").encode()
                    batch[kind] = file_id
            batch["status"] = "completed"
            batch["request_counts"] = {"total": len(outputs) + len(errors), "completed": len(outputs), "failed": len(errors)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: MockState):
        super().__init__(address, _Handler)
        self.state = state
        self.connections: set[socket.socket] = set()  # open client connections, so that `kill` can cut them
        self.connections_lock = threading.Lock()
        self.killed = False

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            killed = self.killed
            if not killed:
                self.connections.add(request)
        if killed:  # between `kill` and the end of the serving loop: as refused as a dead process's port
            self.shutdown_request(request)
        else:
            super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed, timed out) is normal here; anything else is reported."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class MockServer:
    """Start with `start()` (a background thread) or `serve_forever()`; `url` is the OpenAI base URL.

    It recognises a judge prompt by the templates of `tasks` (a run's own), by default by those of every registered
    task variant on this machine.
    """

    def __init__(self, settings: MockSettings | None = None, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, reject_params: tuple[str, ...] = (), tasks: Iterable[Task] | None = None):
        templates = local_judge_templates() if tasks is None else judge_templates(tasks)
        self.state = MockState(settings or MockSettings(), api_key, reject_params, templates)
        self.httpd = _Server((host, port), self.state)
        self.host: str
        self.port: int
        self.host, self.port = self.httpd.socket.getsockname()[:2]  # as bound: the port chosen when 0 was asked
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> MockServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mock-server", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kill(self) -> None:
        """Stop as a killed process would: refuse new connections and cut the open ones, requests in flight included
        (a stopped server lets its open keep-alive connections finish). A new server on the same port restarts it."""
        with self.httpd.connections_lock:
            self.httpd.killed = True
            connections = list(self.httpd.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.stop()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
