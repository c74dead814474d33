"""The judge client through real HTTP to the mock server: every fault, retries and their attempt counts,
Retry-After, parameter adaptation for reasoning judges, rate limits, preflight, the shared cache."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import counters

from eval.compat import STRICT, UPSTREAM
from eval.config import JudgeConfig, MockSettings
from eval.errors import UserError
from eval.judge.client import JudgeClient
from eval.judge.ledger import Ledger
from eval.judge.openai_api import ParamPolicy
from eval.judge.parsing import Parser
from eval.judge.requests import JudgeRequest
from eval.judge.transport import JudgeFatal
from eval.records import Slot


def request(i: int = 0, retries: int = 2, max_tokens: int = 64) -> JudgeRequest:
    return JudgeRequest(Slot(1, "t", str(i), 1), f"key-{i}", "gen", "single-v1", "sha",
                        [{"role": "system", "content": "sys"}, {"role": "user", "content": f"answer {i}; grade on a scale of 1 to 10"}],
                        {"temperature": 0.0, "top_p": None, "max_tokens": max_tokens, "seed": 1, "reasoning_effort": None},
                        Parser("single", r"\[\[(10|[1-9])\]\]", 1, 10), retries, None)


@pytest.fixture
def no_sdk_backoff(monkeypatch):
    """The SDK's wait before retrying a 429/500 (0.5 s and up) changes nothing here but the wall time."""
    import openai

    monkeypatch.setattr(openai._base_client.BaseClient, "_calculate_retry_timeout", lambda self, *a, **k: 0.001)


def judge(server, req=None, profile=UPSTREAM, **cfg):
    settings = {"model": "mock-judge", "base_url": server.url, "mock": True, "max_retries": 2, "timeout_s": 1.0, **cfg}
    config = JudgeConfig(**settings)

    async def go():
        client = JudgeClient(config, server.url, Ledger(config), profile=profile)
        try:
            return await client.judge(req or request()), client
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.mark.parametrize("profile,fault,status,attempts,requests", [
    (UPSTREAM, None, "ok", 1, 1),
    (UPSTREAM, "429", "api_error", 3, 3),            # the SDK's retries (max_retries=2), then a failure status
    (UPSTREAM, "500", "api_error", 3, 3),
    (UPSTREAM, "503", "api_error", 3, 3),
    (UPSTREAM, "hang", "timeout", 3, 3),
    (UPSTREAM, "drop", "api_error", 3, 3),
    (UPSTREAM, "malformed", "api_error", 3, 3),       # a 200 that is not JSON: retried by the client, bounded
    (UPSTREAM, "empty", "parse_failed", 3, 3),        # an empty answer is re-asked parse_retries (2) times
    (UPSTREAM, "content_filter", "content_filtered", 3, 3),  # a 400 uses up one ask, as upstream counts it
    (UPSTREAM, "length", "parse_failed", 3, 3),       # finish_reason ignored: a cut-off reply without a score is re-asked
    (STRICT, "empty", "parse_failed", 3, 3),
    (STRICT, "content_filter", "content_filtered", 1, 1),  # strict: a 400 ends the judgment
    (STRICT, "length", "length", 1, 1),               # strict: a cut-off reply ends it
])
def test_every_fault_ends_in_its_status_with_counted_attempts(mock_server, no_sdk_backoff, profile, fault, status, attempts,
                                                             requests):
    server = mock_server(settings=MockSettings(retry_after_s=0.05, hang_s=1.5, **({f"rate_{fault}": 1.0} if fault else {})))
    judgment, _ = judge(server, profile=profile)
    assert (judgment.status, judgment.attempts) == (status, attempts)
    assert counters(server)["requests"] == requests
    if status == "ok":
        assert judgment.scores["score"] in range(1, 11) and judgment.returned_model == "mock-judge"
        assert judgment.fingerprint == "fp_mock" and judgment.usage["prompt_tokens"] > 0
    else:
        assert judgment.error and not judgment.scores


def batch_judged(client: JudgeClient, folder) -> list:
    """Requests 0 and 1 judged by `client` in batch mode (a store in `folder`); the judgments, in the order kept."""
    from eval.judge.batch import BatchJudge
    from eval.store import Store

    judgments = []

    async def go():
        store = Store(folder / "run.sqlite")

        async def keep(judgment):
            judgments.append(judgment)

        try:
            await BatchJudge(client, store, poll_s=0.01).run([request(0), request(1)], keep)
        finally:
            await client.close()
            store.close()

    asyncio.run(go())
    return judgments


@pytest.mark.parametrize("profile,attempts,sync_requests", [(UPSTREAM, 3, 2), (STRICT, 1, 0)])
def test_a_batch_line_refused_by_the_content_filter_follows_the_profile(tmp_path, mock_server, profile, attempts,
                                                                         sync_requests):
    server = mock_server(settings=MockSettings(batch_polls_to_complete=0, rate_content_filter=1.0))
    config = JudgeConfig(model="mock-judge", base_url=server.url, mock=True, max_retries=2)
    judgments = batch_judged(JudgeClient(config, server.url, Ledger(config), profile=profile), tmp_path)
    # upstream: the batch's 400 is one of the three asks, the other two are asked synchronously; strict: it ends there
    assert [(j.status, j.attempts) for j in judgments] == [("content_filtered", attempts)] * 2
    assert counters(server).get("requests", 0) == 2 * sync_requests and counters(server)["batch_requests"] == 2


def test_batch_lines_whose_error_is_text_are_asked_synchronously(tmp_path, mock_server):
    """An error file whose bodies give the error as text, not as an object (some compatible servers do): each line is
    asked again synchronously, as any other failed line."""
    import json

    from eval.judge.transport import BatchState

    class TextErrors:
        async def submit(self, lines):
            self.lines = lines
            return "batch-1", "file-in"

        async def state(self, batch_id):
            return BatchState("completed", len(self.lines), None, "file-errors")

        async def content(self, file_id):
            return b"".join(json.dumps({"custom_id": line["custom_id"], "response": {
                "status_code": status, "body": {"error": "the server is overloaded"}}}).encode() + b"\n"
                for line, status in zip(self.lines, (400, 500), strict=True))

    server = mock_server()
    config = JudgeConfig(model="mock-judge", base_url=server.url, mock=True, max_retries=0)
    client = JudgeClient(config, server.url, Ledger(config))
    client.transport.batches = TextErrors()
    judgments = batch_judged(client, tmp_path)
    assert sorted((j.item_id, j.status) for j in judgments) == [("0", "ok"), ("1", "ok")]
    assert counters(server)["requests"] == 2


def test_retry_after_is_waited_for(mock_server):
    server = mock_server(settings=MockSettings(rate_429=1.0, retry_after_s=0.4))
    started = time.perf_counter()
    judgment, _ = judge(server, max_retries=2)
    assert judgment.attempts == 3 and time.perf_counter() - started >= 0.8


def test_transient_faults_recover_with_a_seeded_fault_rate(mock_server, no_sdk_backoff):
    server = mock_server(settings=MockSettings(rate_500=0.3, rate_429=0.2, retry_after_s=0.01, seed=7))
    outcomes = [judge(server, request(i), max_retries=6)[0] for i in range(20)]
    assert all(j.status == "ok" for j in outcomes)
    assert sum(j.attempts for j in outcomes) == counters(server)["requests"] > 20


def test_reasoning_judges_use_max_completion_tokens_and_learn_rejected_parameters(mock_server):

    policy = ParamPolicy("gpt-5.4-2026-03-05")
    assert policy.kwargs({"max_tokens": 10, "top_p": 0.9, "temperature": 1.0, "seed": None}) == \
           {"max_completion_tokens": 10, "temperature": 1.0}
    assert "temperature" in ParamPolicy("o3-mini").dropped
    server = mock_server(reject_params=("temperature",))
    judgment, client = judge(server, model="gpt-5.4-2026-03-05")
    assert judgment.status == "ok"
    assert "temperature" not in judgment.params and "max_completion_tokens" in judgment.params
    assert any("'temperature'" in w for w in client.warnings)
    assert client.transport.learned()["dropped"] == ["temperature", "top_p"]
    before = counters(server)["requests"]
    config = JudgeConfig(model="gpt-5.4-2026-03-05", base_url=server.url, mock=True)

    async def resumed():  # a later run starts from what the store remembers: no second 400
        fresh = JudgeClient(config, server.url, Ledger(config), learned=client.transport.learned())
        try:
            return await fresh.judge(request(1))
        finally:
            await fresh.close()

    assert asyncio.run(resumed()).status == "ok"
    assert counters(server)["requests"] - before == 1


def test_reasoning_effort_is_sent_when_configured(mock_server):
    judgment, _ = judge(mock_server(), reasoning_effort="low", req=_with_effort(request()))
    assert judgment.params["reasoning_effort"] == "low"


def _with_effort(r: JudgeRequest) -> JudgeRequest:
    return JudgeRequest(r.slot, r.key, r.generation_key, r.prompt_name, r.prompt_hash, r.messages,
                        {**r.params, "reasoning_effort": "low"}, r.parser, r.parse_retries, r.api_error_score)


def test_model_and_fingerprint_changes_are_warned(mock_server):
    server = mock_server()
    config = JudgeConfig(model="mock-judge", mock=True)
    client = JudgeClient(config, server.url, Ledger(config))
    client._track("m", "fp1")
    client._track("m", "fp2")
    assert any("system_fingerprint changed" in w for w in client.warnings)


def test_requests_per_minute_are_spread_from_the_first_request_on(mock_server):
    server = mock_server()
    config = JudgeConfig(model="mock-judge", mock=True, requests_per_minute=120, concurrency=8)

    async def go():
        client = JudgeClient(config, server.url, Ledger(config))
        started = time.perf_counter()
        await asyncio.gather(*(client.judge(request(i)) for i in range(4)))
        await client.close()
        return time.perf_counter() - started

    assert asyncio.run(go()) >= 3 * 61 / 120  # no burst at the start: one request every (60 + 1) / 120 s


@pytest.mark.parametrize("case,needle", [
    ("401", "rejected the API key in MOCK_KEY (401)"),
    ("unreachable", "cannot reach"),
    ("unset", "environment variable MOCK_KEY is not set"),
])
def test_preflight_fails_early_with_a_clear_message(mock_server, monkeypatch, case, needle):
    server = mock_server(api_key="right-key")
    url = "http://127.0.0.1:9/v1" if case == "unreachable" else server.url
    if case == "unset":
        monkeypatch.delenv("MOCK_KEY", raising=False)
    else:
        monkeypatch.setenv("MOCK_KEY", "wrong-key")
    config = JudgeConfig(model="mock-judge", base_url=url, api_key_env="MOCK_KEY", max_retries=0, timeout_s=2)

    async def go():
        client = JudgeClient(config, url, Ledger(config))
        try:
            await client.preflight()
        finally:
            await client.close()

    with pytest.raises(UserError) as err:
        asyncio.run(go())
    assert needle in str(err.value)
    assert "wrong-key" not in str(err.value)


def test_auth_failure_during_judging_is_fatal_not_a_status(mock_server, monkeypatch):
    server = mock_server(api_key="right-key")
    monkeypatch.setenv("MOCK_KEY", "wrong-key")
    config = JudgeConfig(model="mock-judge", base_url=server.url, api_key_env="MOCK_KEY")

    async def go():
        client = JudgeClient(config, server.url, Ledger(config))
        try:
            await client.judge(request())
        finally:
            await client.close()

    with pytest.raises(JudgeFatal, match="HTTP 401"):
        asyncio.run(go())


def test_ledger_prices_by_model_prefix_and_batch_discount():
    from eval.config import Price
    from eval.judge.ledger import cost_usd, price_for
    from eval.records import Usage

    prices = {"gpt-5.4": Price(input=2.0, output=10.0)}
    price = price_for(prices, "gpt-5.4-2026-03-05")
    assert cost_usd(price, Usage(1_000_000, 100_000)) == pytest.approx(3.0)
    assert cost_usd(price, Usage(1_000_000, 100_000), batch_discount=0.5) == pytest.approx(1.5)
    assert price_for(prices, "gpt-4o") is None


def test_azure_provider_talks_to_the_deployment_path(mock_server, monkeypatch):
    server = mock_server(api_key="azure-key")
    monkeypatch.setenv("AZURE_KEY", "azure-key")
    endpoint = server.url.removesuffix("/v1")
    config = JudgeConfig(model="my-deployment", provider="azure", api_key_env="AZURE_KEY",
                         azure={"endpoint": endpoint, "api_version": "2024-10-21", "deployment": "my-deployment"})

    async def go():
        client = JudgeClient(config, None, Ledger(config))
        try:
            await client.preflight()
            return await client.judge(request())
        finally:
            await client.close()

    judgment = asyncio.run(go())
    assert judgment.status == "ok" and counters(server)["requests"] == 2


def sliding_sums(grants: list[tuple[float, float]], window: float) -> list[float]:
    """The units granted in every window of `window` seconds that ends at a grant (where the largest sums are)."""
    return [sum(u for t, u in grants if t <= end < t + window) for end, _ in grants]


@pytest.mark.parametrize("limit,sizes", [(20, [1]), (600, [40, 590, 3, 250, 600, 1200, 17])])
def test_an_allowance_never_grants_more_than_its_limit_in_any_window(limit, sizes):
    from eval.judge.limits import Allowance

    allowance, now, grants = Allowance(limit, 61.0), 0.0, []
    for i in range(400):
        units = sizes[i % len(sizes)]
        while (wait := allowance.wait(units, now)) > 0:
            now += wait
        allowance.grant(units, now)
        grants.append((now, min(units, limit)))
        now += (i % 7) * 0.37  # callers arrive irregularly
    assert max(sliding_sums(grants, 61.0)) <= limit
    if sizes == [1]:  # requests: evenly spread from the first on, one per 61/20 s
        gaps = [b - a for (a, _), (b, _) in zip(grants[:-1], grants[1:], strict=True)]
        assert min(gaps) >= 61 / 20 - 1e-9 and grants[limit][0] >= 61.0


def test_the_limiter_serves_waiting_callers_in_order_and_pays_every_allowance(monkeypatch):
    from eval.judge import limits
    from eval.judge.limits import RateLimiter, estimate_tokens

    clock = {"now": 0.0}

    async def sleep(seconds):
        clock["now"] += seconds

    monkeypatch.setattr(limits.asyncio, "sleep", sleep)
    limiter = RateLimiter(30, tokens_per_minute=600, clock=lambda: clock["now"])
    order: list[tuple[int, float]] = []

    async def call(i, tokens):
        await limiter.acquire(tokens)
        order.append((i, clock["now"]))

    async def go():
        await asyncio.gather(*(call(i, 100 if i % 2 else 10) for i in range(12)))

    asyncio.run(go())
    assert [i for i, _ in order] == list(range(12))
    tokens = [(t, 100 if i % 2 else 10) for i, t in order]
    assert max(sliding_sums(tokens, 60.0)) <= 600 and max(sliding_sums([(t, 1) for t, _ in tokens], 60.0)) <= 30
    assert estimate_tokens("abcdefgh") == 3 and estimate_tokens("日本語") == 4


def cached_judgment(status="ok", model=None, score=5.0):
    from eval.records import Judgment

    return Judgment(key=f"k-{status}", generation_key="g", round=1, task="t", item_id="1", turn=1, judge_model=model or f"m-{status}",
                    prompt_name="p", prompt_hash="h", params={"temperature": 0.0}, messages=[{"role": "user", "content": "q"}],
                    raw="[[5]]", scores={"score": score} if status == "ok" else {}, status=status, attempts=1,
                    parse_rules="rules")


def test_cache_modes(tmp_path):
    from eval.judge.cache import JudgeCache, request_body

    endpoint = {"provider": "openai", "base_url": "http://a/v1"}
    path = str(tmp_path / "cache.sqlite")
    writer = JudgeCache("read_write", path, endpoint)
    writer.put(cached_judgment("ok"))
    writer.put(cached_judgment("api_error"))  # transient: asked again next time, never cached
    assert writer.get(request_body(cached_judgment("ok")), "rules").status == "ok"
    assert writer.get(request_body(cached_judgment("api_error")), "rules") is None
    writer.close()  # its writes trail on a writer thread; close waits for them
    reader = JudgeCache("read", path, endpoint)
    reader.put(cached_judgment("parse_failed"))
    reader.close()
    body = request_body(cached_judgment("ok"))
    assert reader.get(body, "rules") is None  # closed
    assert JudgeCache("read", path, endpoint).get(body, "rules") is not None
    assert JudgeCache("read", path, endpoint).get(request_body(cached_judgment("parse_failed")), "rules") is None
    assert JudgeCache("off", path, endpoint).get(body, "rules") is None


@pytest.mark.parametrize("other", [{"provider": "openai", "base_url": "http://b/v1"},  # another server, same model name
                                   {"provider": "azure", "endpoint": "http://a", "deployment": "m", "api_version": "2024-10-21"}])
def test_the_cache_key_covers_the_endpoint_the_body_and_the_reading_rules(tmp_path, other):
    from eval.judge.cache import JudgeCache, request_body

    endpoint = {"provider": "openai", "base_url": "http://a/v1"}
    path = str(tmp_path / "cache.sqlite")
    writer = JudgeCache("read_write", path, endpoint)
    writer.put(cached_judgment())
    writer.close()
    body = request_body(cached_judgment())
    assert JudgeCache("read", path, endpoint).get(body, "rules").scores == {"score": 5.0}
    assert JudgeCache("read", path, other).get(body, "rules") is None
    assert JudgeCache("read", path, endpoint).get(body, "other rules") is None
    assert JudgeCache("read", path, endpoint).get({**body, "top_p": 1.0}, "rules") is None
    assert JudgeCache("read", path, endpoint).get({**body, "model": "another"}, "rules") is None


def test_the_endpoint_identity_is_the_address_as_the_sdk_uses_it_without_credentials(monkeypatch):
    from eval.judge.providers import endpoint_identity

    def identity(**judge):
        return endpoint_identity(JudgeConfig(model="m", **judge))

    same = [identity(base_url="http://LocalHost:80/v1/"), identity(base_url="http://localhost/v1")]
    assert same[0] == same[1] == {"provider": "openai", "base_url": "http://localhost/v1"}
    assert identity(base_url="http://localhost:8001/v1") != same[0]
    keyed = identity(base_url="https://h/v1?api-key=SECRET-123456&api-version=2024")["base_url"]
    assert "SECRET" not in keyed and keyed.startswith("https://h/v1?api-key=sha256:") and keyed.endswith("&api-version=2024")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert identity()["base_url"] == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy:9000/v1")  # the SDK's own choice when base_url is unset
    assert identity()["base_url"] == "http://proxy:9000/v1"
    azure = {"provider": "azure", "azure": {"endpoint": "https://r.openai.azure.com/", "deployment": "d"}}
    assert identity(**azure) == {"provider": "azure", "endpoint": "https://r.openai.azure.com", "deployment": "d",
                                 "api_version": "2024-10-21"}
    assert identity(mock=True)["provider"] == "mock" and identity(mock=True) != identity(mock=True, mock_settings={"score_shift": 1})


def test_a_record_that_does_not_verify_is_a_counted_miss_and_the_fresh_judgment_replaces_it(tmp_path):
    import json
    import sqlite3

    from eval.judge.cache import JudgeCache, inspect, request_body

    endpoint = {"provider": "openai", "base_url": "http://a/v1"}
    path = tmp_path / "cache.sqlite"
    bodies = {}
    writer = JudgeCache("read_write", str(path), endpoint)
    for name in ("edited", "truncated", "foreign", "not-json", "good"):
        judgment = cached_judgment(model=name)
        bodies[name] = request_body(judgment)
        writer.put(judgment)
    writer.close()
    db = sqlite3.connect(path)
    records = dict(db.execute("SELECT key, record FROM entries"))
    by_model = {json.loads(text)["judgment"]["judge_model"]: key for key, text in records.items()}
    edited = json.loads(records[by_model["edited"]])
    edited["judgment"]["scores"]["score"] = 1.0  # the score changed by hand, the seal kept
    foreign = {"key": by_model["foreign"], "record": {"raw": "[[9]]"}}  # another version's shape
    changes = {"edited": json.dumps(edited), "truncated": records[by_model["truncated"]][:-40],
               "foreign": json.dumps(foreign), "not-json": "\x00\x01 not json"}
    for name, text in changes.items():
        db.execute("UPDATE entries SET record = ? WHERE key = ?", (text, by_model[name]))
    db.commit()
    db.close()

    reader = JudgeCache("read_write", str(path), endpoint)
    assert [name for name in bodies if reader.get(bodies[name], "rules") is not None] == ["good"]
    assert reader.misses == {"altered": 1, "unreadable": 2, "another version": 1}
    warning = reader.miss_warning()
    assert "4 records did not verify (2 unreadable, 1 altered, 1 another version) and were judged again" in warning
    found = inspect(path)
    assert found.records == 5 and found.reasons() == {"unreadable": 2, "altered": 1, "another version": 1}
    reader.put(cached_judgment(model="edited", score=6.0))  # the fresh judgment
    reader.close()
    again = JudgeCache("read", str(path), endpoint)
    assert again.get(bodies["edited"], "rules").scores == {"score": 6.0} and not again.misses


def test_mock_counters_are_served_over_http(mock_server):
    import json
    import urllib.request

    server = mock_server()
    judge(server)
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/mock/counters") as response:
        data = json.loads(response.read())
    assert data["counters"]["requests"] == 1 and data["counters"]["ok"] == 1 and len(data["bodies"]) == 1
