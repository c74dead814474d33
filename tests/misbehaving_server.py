"""An OpenAI-compatible judge written for the tests, independent of the product's mock: each chat request is answered
by a `reply(n, body, headers)` function of the test (n counts chat requests from 1), so a test can send any status,
any body shape, echo headers, or misbehave for the first few requests only. Files and batches answer 404 unless the
test gives `files`. Every chat request is recorded with its arrival time and the path it asked for (query included).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Streamed:
    """A body written chunk by chunk as it is produced (never held whole): with `length` as its Content-Length, else
    chunked; `headers` added (e.g. Content-Encoding). A client that hangs up mid-body ends it quietly."""

    chunks: Callable[[], Iterable[bytes]]
    length: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


Reply = tuple[int, Any]  # (HTTP status, JSON-able body, raw bytes or Streamed)


def completion(content: Any, finish_reason: str = "stop", **message_extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "judge",
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content, **message_extra}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


GOOD = completion("The answer is fine. Rating: [[7]]")


class MisbehavingJudge:
    def __init__(self, reply: Callable[[int, dict, dict], Reply], files: Callable[[str, str], Reply] | None = None):
        self.reply = reply
        self.files = files
        self.calls: list[float] = []  # arrival time of each chat request
        self.paths: list[str] = []  # the path of each chat request, as sent
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                if isinstance(body, Streamed):
                    self._stream(status, body)
                    return
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, status: int, body: Streamed) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in body.headers.items():
                    self.send_header(name, value)
                if body.length is None:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(body.length))
                self.end_headers()
                try:
                    for chunk in body.chunks():
                        self.wfile.write(chunk if body.length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    if body.length is None:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0]
                if "chat/completions" in self.path:
                    with outer.lock:
                        outer.calls.append(time.monotonic())
                        outer.paths.append(self.path)
                        n = len(outer.calls)
                    status, body = outer.reply(n, json.loads(raw), self.headers)  # case-insensitive .get
                elif outer.files is not None:
                    status, body = outer.files("POST", path)
                else:
                    status, body = 404, {"error": {"message": f"Unknown request URL: POST {path}", "type": "invalid_request_error"}}
                self._send(status, body)

            def do_GET(self) -> None:
                status, body = outer.files("GET", self.path) if outer.files else (404, {"error": {"message": "not found"}})
                self._send(status, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
