"""The judge client against a misbehaving OpenAI-compatible server written for the tests (misbehaving_server.py, not
the product's mock): a 200 of any wrong shape is a transient failure (asked again, never cached), content parts are
read as their text, a reply with no content or a refusal is never a final parse failure, and the rate limiter holds
for every HTTP call — re-asks and the SDK's retries included."""

from __future__ import annotations

import asyncio
import time

import pytest

from eval.config import JudgeConfig
from eval.judge.cache import JudgeCache
from eval.judge.client import JudgeClient
from eval.judge.ledger import Ledger

from misbehaving_server import GOOD, MisbehavingJudge, completion
from test_judge import request

MALFORMED = {
    "a list": [1, 2, 3],
    "choices a string": {**GOOD, "choices": "oops"},
    "message a string": {**GOOD, "choices": [{"index": 0, "finish_reason": "stop", "message": "str"}]},
    "content a number": completion(7),
    "usage a string": {**GOOD, "usage": "n/a"},
    "no choices": {**GOOD, "choices": []},
    "a null choice": {**GOOD, "choices": [None]},
    "not JSON": b"<html>502 Bad Gateway</html>",
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
    cache = JudgeCache("read_write", str(tmp_path / "cache.sqlite"))
    cache.put(judgment)
    assert cache.get(judgment.key) is None


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
    cache = JudgeCache("read_write", str(tmp_path / "cache.sqlite"))
    cache.put(judgment)
    assert cache.get(judgment.key) is None
    later = judge(s, retries=2)  # the server is healthy again: the same request now scores
    assert later.status == "ok" and later.key == judgment.key


def test_the_rate_limit_holds_for_every_http_call_re_asks_and_sdk_retries_included(server):
    # every request: a 500 (the SDK retries it), then an unparseable reply (re-asked), then a score — 3 calls each
    def reply(n, body, headers):
        return [(500, {"error": {"message": "busy"}}), (200, completion("no score here")), (200, GOOD)][(n - 1) % 3]

    s = server(reply)
    config = JudgeConfig(model="judge", base_url=s.url, mock=True, max_retries=2, timeout_s=5.0, requests_per_minute=6)

    async def go():
        client = JudgeClient(config, s.url, Ledger(config))
        try:
            jobs = asyncio.gather(*(client.judge(request(i)) for i in range(4)))
            started = time.monotonic()
            try:
                await asyncio.wait_for(asyncio.shield(jobs), timeout=3.0)
            except asyncio.TimeoutError:
                pass
            in_window = sum(1 for t in s.calls if t - started < 3.0)
            jobs.cancel()
            return in_window
        finally:
            await client.close()

    assert asyncio.run(go()) <= 6  # the bucket holds 6; the next call is 10 s away
