"""The judge client against a misbehaving OpenAI-compatible server written for the tests (misbehaving_server.py, not
the product's mock): a 200 of any wrong shape — not UTF-8, too large — is a transient failure (asked again, never
cached) read within bounded memory, content parts are read as their text, a reply with no content or a refusal is
never a final parse failure, and the rate limiter holds for every HTTP call — re-asks and the SDK's retries
included."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys

import pytest
from misbehaving_server import GOOD, MisbehavingJudge, Streamed, completion
from test_judge import request

from eval.config import JudgeConfig
from eval.judge.cache import JudgeCache, request_body
from eval.judge.client import JudgeClient
from eval.judge.ledger import Ledger

MALFORMED = {
    "a list": [1, 2, 3],
    "choices a string": {**GOOD, "choices": "oops"},
    "message a string": {**GOOD, "choices": [{"index": 0, "finish_reason": "stop", "message": "str"}]},
    "content a number": completion(7),
    "usage a string": {**GOOD, "usage": "n/a"},
    "no choices": {**GOOD, "choices": []},
    "a null choice": {**GOOD, "choices": [None]},
    "not JSON": b"<html>502 Bad Gateway</html>",
    "not UTF-8": json.dumps(GOOD).encode().replace(b"fine.", b"fine \xff\xfe."),  # a score in it: never stored as one
    "a lone surrogate": json.dumps(GOOD).replace("fine.", "fine \\ud800.").encode(),
}


@pytest.fixture
def server():
    servers = []

    def start(reply):
        servers.append(MisbehavingJudge(reply))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def judge(server, requests=1, retries=2, **cfg):
    config = JudgeConfig(**{"model": "judge", "base_url": server.url, "mock": True, "max_retries": 2, "timeout_s": 5.0, **cfg})

    async def go():
        client = JudgeClient(config, server.url, Ledger(config))
        try:
            return await asyncio.gather(*(client.judge(request(i, retries=retries)) for i in range(requests)))
        finally:
            await client.close()

    judgments = asyncio.run(go())
    return judgments if requests > 1 else judgments[0]


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_200_is_asked_again_and_then_scores(server, shape):
    s = server(lambda n, body, headers: (200, MALFORMED[shape]) if n == 1 else (200, GOOD))
    judgment = judge(s)
    assert (judgment.status, judgment.scores, judgment.attempts) == ("ok", {"score": 7.0}, 2)
    assert len(s.calls) == 2


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_server_that_only_sends_malformed_replies_gives_a_transient_status_that_is_never_cached(server, shape, tmp_path):
    s = server(lambda n, body, headers: (200, MALFORMED[shape]))
    judgment = judge(s, max_retries=1)
    assert judgment.status == "api_error" and "malformed" in judgment.error and judgment.attempts == 2
    cache = JudgeCache("read_write", str(tmp_path / "cache.sqlite"), {"provider": "test"})
    cache.put(judgment)
    assert judgment.parse_rules and cache.get(request_body(judgment), judgment.parse_rules) is None


def padded(size: int) -> bytes:
    """A chat completion of `size` bytes whose content holds a score."""
    body = json.dumps(completion("Rating: [[7]] " + "x" * size)).encode()
    return json.dumps(completion("Rating: [[7]] " + "x" * (2 * size - len(body)))).encode()


OVERSIZE = {  # judge.max_reply_bytes is 4096 in these tests
    "declared": lambda: Streamed(lambda: [padded(10_000)], length=10_000),
    "chunked": lambda: Streamed(lambda: (padded(10_000)[i:i + 1000] for i in range(0, 10_000, 1000))),
    "gzip bomb": lambda: Streamed(lambda: [gzip.compress(padded(10_000_000))], headers={"Content-Encoding": "gzip"}),
    "brotli, not asked for": lambda: Streamed(lambda: [b"\x0b\x02\x80{}\x03"], headers={"Content-Encoding": "br"}),
}


@pytest.mark.parametrize("shape", OVERSIZE)
def test_a_reply_past_the_size_cap_is_dropped_unread_asked_again_and_never_cached(server, shape, tmp_path):
    s = server(lambda n, body, headers: (200, OVERSIZE[shape]()) if n == 1 else (200, GOOD))
    judgment = judge(s, max_reply_bytes=4096)
    assert (judgment.status, judgment.scores, judgment.attempts) == ("ok", {"score": 7.0}, 2)
    s = server(lambda n, body, headers: (200, OVERSIZE[shape]()))
    judgment = judge(s, max_reply_bytes=4096, max_retries=1)
    assert judgment.status == "api_error" and "malformed response" in judgment.error and judgment.raw is None, judgment.error
    cache = JudgeCache("read_write", str(tmp_path / "cache.sqlite"), {"provider": "test"})
    cache.put(judgment)
    assert cache.get(request_body(judgment), judgment.parse_rules) is None


def test_a_gzip_reply_under_the_cap_is_read():
    data = gzip.compress(json.dumps(GOOD).encode())
    s = MisbehavingJudge(lambda n, body, headers: (200, Streamed(lambda: [data], len(data), {"Content-Encoding": "gzip"})))
    try:
        assert judge(s, max_reply_bytes=4096).scores == {"score": 7.0}
    finally:
        s.stop()


CHILD = """
import asyncio, json, sys
from eval.config import JudgeConfig
from eval.judge.client import JudgeClient
from eval.judge.ledger import Ledger
sys.path.insert(0, "tests")
from test_judge import request

def peak_mb():  # this process's own high-water mark (ru_maxrss may carry the parent's over exec)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024

async def go(url):
    config = JudgeConfig(model="judge", base_url=url, mock=True, max_retries=1, timeout_s=60)
    client = JudgeClient(config, url, Ledger(config))
    first = await client.judge(request(0))  # a normal reply: everything imported and warmed up
    before = peak_mb()
    second = await client.judge(request(1))  # 50 MB replies, twice
    await client.close()
    print(json.dumps({"first": first.status, "second": second.status, "error": second.error, "before_mb": before,
                      "after_mb": peak_mb()}))

asyncio.run(go(sys.argv[1]))
"""


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_a_50_mb_reply_is_refused_within_bounded_memory(declared):
    """The client runs in a process of its own, which reports its peak RSS: a 50 MB reply (sent in 1 MB chunks, so the
    server never holds it) may add no more than 16 MB to the peak (the cap is the default 4 MiB)."""
    size, chunk = 50 * 2**20, b"x" * 2**20

    def reply(n, body, headers):
        if n == 1:
            return 200, GOOD
        return 200, Streamed(lambda: (chunk for _ in range(size // len(chunk))), length=size if declared else None)

    s = MisbehavingJudge(reply)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(["tests/netblock", "."])}
        child = subprocess.run([sys.executable, "-c", CHILD, s.url], capture_output=True, text=True, timeout=120,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env)
    finally:
        s.stop()
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["first"] == "ok" and result["second"] == "api_error" and "max_reply_bytes" in result["error"], result
    assert result["after_mb"] - result["before_mb"] < 16, result
    assert result["after_mb"] < 160, result


def test_content_as_a_list_of_text_parts_is_read_as_its_text(server):
    parts = [{"type": "text", "text": "Fine answer. "}, {"type": "text", "text": "Rating: [[9]]"}]
    s = server(lambda n, body, headers: (200, completion(parts)))
    judgment = judge(s)
    assert (judgment.status, judgment.scores, judgment.raw) == ("ok", {"score": 9.0}, "Fine answer. Rating: [[9]]")


@pytest.mark.parametrize("message", [{"content": None}, {"content": None, "refusal": "I can't help with that."}],
                         ids=["null-content", "refusal"])
def test_no_content_or_a_refusal_is_asked_again_and_never_a_cached_parse_failure(server, tmp_path, message):
    s = server(lambda n, body, headers: (200, completion(**message)) if n <= 3 else (200, GOOD))
    judgment = judge(s, retries=2)  # three asks, all without content
    assert judgment.status == "api_error" and judgment.status != "content_filtered" and len(s.calls) == 3
    assert ("refused" in judgment.error) == ("refusal" in message)
    cache = JudgeCache("read_write", str(tmp_path / "cache.sqlite"), {"provider": "test"})
    cache.put(judgment)
    assert judgment.parse_rules and cache.get(request_body(judgment), judgment.parse_rules) is None
    later = judge(s, retries=2)  # the server is healthy again: the same request now scores
    assert later.status == "ok" and later.key == judgment.key


def test_no_window_at_the_server_holds_more_calls_than_the_limit_with_a_quarter_of_calls_failing(server, monkeypatch):
    """20 requests per minute, the minute scaled down to 2 s: 25 % of the calls fail (a 500 the SDK retries, a malformed
    200 the client sends again, a reply without a score that is re-asked), and the server counts its arrivals."""
    import random

    import openai

    from eval.judge import limits

    monkeypatch.setattr(limits, "MINUTE_S", 2.0)
    monkeypatch.setattr(limits, "MARGIN_S", 0.1)
    monkeypatch.setattr(openai._base_client.BaseClient, "_calculate_retry_timeout", lambda self, *a, **k: 0.001)
    draw = random.Random(7)
    failures = [(500, {"error": {"message": "busy"}}), (200, b"<html>502</html>"), (200, completion("no score here"))]

    def reply(n, body, headers):
        return failures[n % 3] if draw.random() < 0.25 else (200, GOOD)

    s = server(reply)
    judgments = judge(s, requests=30, max_retries=3, requests_per_minute=20, concurrency=8)
    assert all(j.status == "ok" for j in judgments)
    calls = sorted(s.calls)
    assert len(calls) > 30  # the failures were paid for too
    per_window = [sum(1 for t in calls if start <= t < start + 2.0) for start in calls]
    assert max(per_window) <= 20, per_window
