"""The judge's requests-per-minute limit, counted where it matters: at the server. A local OpenAI-compatible server
fails a share of the calls (an HTTP 500 that the SDK retries, a malformed 200 that the client sends again, a reply
without a score that is re-asked: every one of them is a call the limit must pay for) and records the arrival time
of every call; the harness's judge client judges N requests under `requests_per_minute`. Reported: calls, the most
calls in any window of one minute at the server (must not exceed the limit), calls in the first minute, and the rate
achieved over the whole run ("first second": the first 1/60 of the minute). The last line is one JSON object.

    python benchmarks/rate_limit.py                          # 20/min, 40 requests, 25 % failing: ~2.5 minutes
    python benchmarks/rate_limit.py --minute 1 --n 12        # the minute scaled down to 1 s: CI size, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import platform
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval.config import JudgeConfig  # noqa: E402
from eval.judge import limits  # noqa: E402
from eval.judge.client import JudgeClient  # noqa: E402
from eval.judge.ledger import Ledger  # noqa: E402
from eval.judge.parsing import Parser  # noqa: E402
from eval.judge.requests import JudgeRequest  # noqa: E402
from eval.records import Slot  # noqa: E402


def reply_body(content: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                       "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()


FAILURES = [(500, b'{"error": {"message": "busy"}}'), (200, b"<html>502</html>"), (200, reply_body("no score here"))]


class CountingServer:
    """Answers chat completions; fails `fail_rate` of them (one of FAILURES, in turn); records every arrival."""

    def __init__(self, fail_rate: float, seed: int):
        self.arrivals: list[float] = []
        self.failed = 0
        draw = random.Random(seed)
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.arrivals.append(time.monotonic())
                    failing = draw.random() < fail_rate
                    outer.failed += failing
                status, body = FAILURES[outer.failed % len(FAILURES)] if failing else (200, reply_body("Rating: [[7]]"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def most_in_a_window(arrivals: list[float], window: float) -> int:
    times = sorted(arrivals)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0)


async def judge_all(url: str, n: int, rpm: float, concurrency: int) -> list[str]:
    config = JudgeConfig(model="judge", base_url=url, mock=True, requests_per_minute=rpm, concurrency=concurrency,
                         max_retries=3, timeout_s=30)
    client = JudgeClient(config, url, Ledger(config))
    parser = Parser("single", r"\[\[(10|[1-9])\]\]", 1, 10)
    requests = [JudgeRequest(Slot(1, "bench", str(i), 1), f"k{i}", "g", "single-v1", "sha",
                             [{"role": "user", "content": f"Answer {i}. Grade it as [[n]]."}],
                             {"temperature": 0.0, "max_tokens": 64}, parser, 3, None) for i in range(n)]
    try:
        return [j.status for j in await asyncio.gather(*(client.judge(r) for r in requests))]
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=float, default=20, help="judge.requests_per_minute")
    parser.add_argument("--n", type=int, default=40, help="judgments")
    parser.add_argument("--fail-rate", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--minute", type=float, default=60.0, help="seconds in a minute (scaled down for a dry run)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.minute != 60.0 and hasattr(limits, "MINUTE_S"):
        limits.MINUTE_S, limits.MARGIN_S = args.minute, limits.MARGIN_S * args.minute / 60.0
    server = CountingServer(args.fail_rate, args.seed)
    started = time.monotonic()
    try:
        statuses = asyncio.run(judge_all(server.url, args.n, args.rpm, args.concurrency))
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    calls = len(server.arrivals)
    most = most_in_a_window(server.arrivals, args.minute)
    first = sum(1 for t in server.arrivals if t < started + args.minute)
    first_second = sum(1 for t in server.arrivals if t < started + args.minute / 60)
    rate = (calls - 1) / (max(server.arrivals) - min(server.arrivals)) * args.minute if calls > 1 else None
    print(f"{args.n} judgments at {args.rpm:g}/min ({args.fail_rate:.0%} of calls failing): {calls} calls in {elapsed:.1f} s; "
          f"most in one minute at the server {most} (limit {args.rpm:g}); first minute {first}, first second {first_second}; "
          f"{rate or 0:.1f} calls per minute overall", flush=True)
    print(json.dumps({"benchmark": "rate_limit", "machine": f"{platform.machine()} {platform.python_version()}",
                      "rpm": args.rpm, "minute_s": args.minute, "judgments": args.n, "fail_rate": args.fail_rate,
                      "calls": calls, "failed_calls": server.failed, "max_calls_in_a_minute": most,
                      "calls_first_minute": first, "calls_first_second": first_second,
                      "calls_per_minute": round(rate, 2) if rate else None, "seconds": round(elapsed, 2),
                      "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
                      "within_limit": most <= args.rpm}))


if __name__ == "__main__":
    main()
