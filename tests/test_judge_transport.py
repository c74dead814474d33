"""The judge seam (eval/judge/transport.py): the mock judge in process answers as the mock server does over HTTP,
every attempt pays the rate limiter, a transport of one's own plugs into `JudgeClient` (whose `decide` alone makes a
status of what it returns), and the HTTP server is started only where the settings need it."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from helpers import ROOT, cli, counters
from test_judge import request

from eval.compat import STRICT, UPSTREAM
from eval.config import JudgeConfig, MockSettings
from eval.judge.client import JudgeClient
from eval.judge.ledger import Ledger
from eval.judge.mock_transport import MockTransport, served_over_http
from eval.judge.openai_api import OpenAITransport
from eval.judge.providers import judge_address
from eval.judge.replies import Reply
from eval.judge.transport import Call, CallFailed
from eval.records import Usage


def judgments(cfg: JudgeConfig, base_url: str | None, requests, profile=UPSTREAM):
    async def go():
        client = JudgeClient(cfg, base_url, Ledger(cfg), profile=profile, tasks=[])
        try:
            return [await client.judge(r) for r in requests], client
        finally:
            await client.close()

    return asyncio.run(go())


def comparable(judgment) -> dict:
    data = judgment.to_dict()
    del data["seconds"]  # wall time
    return data


@pytest.mark.parametrize("profile,model,faults", [
    (UPSTREAM, "mock-judge", {}),
    (UPSTREAM, "mock-judge", {"rate_empty": 1.0}),             # parse_failed after the re-asks
    (UPSTREAM, "mock-judge", {"rate_content_filter": 1.0}),    # a 400 uses up an ask
    (STRICT, "mock-judge", {"rate_content_filter": 1.0}),      # a 400 ends the judgment
    (STRICT, "mock-judge", {"rate_length": 1.0}),
    (UPSTREAM, "mock-judge", {"rate_empty": 0.4, "seed": 3}),  # the same seeded draws in both
    (UPSTREAM, "gpt-5.4-2026-03-05", {}),                      # max_completion_tokens learned from a 400
])
def test_the_mock_in_process_judges_as_the_mock_server_over_http(mock_server, profile, model, faults):
    cfg = JudgeConfig(model=model, mock=True, max_retries=2, mock_settings=MockSettings(**faults))
    server = mock_server(settings=cfg.mock_settings, tasks=[])
    requests = [request(i) for i in range(6)]
    over_http, http_client = judgments(cfg, server.url, requests, profile)
    sent_over_http = counters(server)["requests"]
    in_process, client = judgments(cfg, None, requests, profile)
    assert isinstance(client.transport, MockTransport) and isinstance(http_client.transport, OpenAITransport)
    assert [comparable(j) for j in in_process] == [comparable(j) for j in over_http]
    assert counters(server)["requests"] == sent_over_http  # nothing went over HTTP
    assert client.transport.learned() == http_client.transport.learned()
    assert client.warnings == http_client.warnings


def test_every_attempt_in_process_pays_the_rate_limiter():
    cfg = JudgeConfig(model="mock-judge", mock=True, mock_settings=MockSettings(rate_empty=1.0))
    paid: list[int] = []

    async def go():
        client = JudgeClient(cfg, None, Ledger(cfg), tasks=[])

        async def acquire(tokens: int) -> None:
            paid.append(tokens)

        client.limiter.acquire = acquire
        return await client.judge(request(0, retries=2, max_tokens=64))

    judgment = asyncio.run(go())
    assert judgment.status == "parse_failed" and judgment.attempts == 3
    assert len(paid) == 3 and all(tokens > 64 for tokens in paid)  # the messages' estimate plus max_tokens


class Scripted:
    """A transport of the test's own: each call returns (or raises) the next thing of its script."""

    model = "scripted"
    batches = None

    def __init__(self, script):
        self.script = list(script)

    def parameters(self, params):
        return {k: v for k, v in params.items() if v is not None}

    def learned(self):
        return {}

    async def call(self, messages, params):
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return Call(Reply(step, None, "stop", "scripted", None, Usage(10, 2)), 1, self.parameters(params))

    async def check(self):
        pass

    async def close(self):
        pass


@pytest.mark.parametrize("profile,status,attempts,asked", [(UPSTREAM, "ok", 3, 2), (STRICT, "api_error", 2, 1)])
def test_any_transport_plugs_into_the_client_and_decide_alone_makes_the_status(profile, status, attempts, asked):
    cfg = JudgeConfig(model="scripted", mock=True)
    refused = CallFailed("api_error", "HTTP 400: no", 2, bad_request=True)
    transport = Scripted([refused, "Rating: [[7]]"])

    async def go():
        client = JudgeClient(cfg, None, Ledger(cfg), profile=profile, tasks=[])
        client.transport = transport
        return await client.judge(request(0))

    judgment = asyncio.run(go())
    assert (judgment.status, judgment.attempts) == (status, attempts)
    assert len(transport.script) == 2 - asked
    if status == "ok":
        assert judgment.scores == {"score": 7.0} and judgment.returned_model == "scripted"


def test_the_mock_is_served_over_http_only_where_its_settings_need_it():
    assert not served_over_http(JudgeConfig(model="m", mock=True, mock_settings=MockSettings(rate_empty=0.5)))
    assert served_over_http(JudgeConfig(model="m", mock=True, mode="batch"))
    for fault in ("429", "500", "503", "hang", "drop", "malformed"):
        assert served_over_http(JudgeConfig(model="m", mock=True, mock_settings=MockSettings(**{f"rate_{fault}": 0.1})))
    with judge_address(JudgeConfig(model="m", mock=True), tasks=[]) as address:
        assert address is None
    with judge_address(JudgeConfig(model="m", mock=True, mode="batch"), tasks=[]) as address:
        assert address is not None and address.startswith("http://127.0.0.1:")
    with judge_address(JudgeConfig(model="m", base_url="http://judge.example/v1")) as address:
        assert address == "http://judge.example/v1"


def test_a_smoke_run_with_the_mock_judge_starts_no_server(tmp_path, monkeypatch):
    from eval.judge.mock_server import MockServer

    def refuse(self):
        raise AssertionError("the mock judge was served over HTTP")

    monkeypatch.setattr(MockServer, "start", refuse)
    result = cli("run", "configs/smoke.yaml", "--out", str(tmp_path / "run"), "--limit", "1", "--rounds", "1",
                 "--tasks", "answer_carefully")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "made 1 judgments" in result.stdout


def test_no_module_of_the_package_imports_a_private_name_of_another():
    found = []
    for path in (ROOT / "eval").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                found += [f"{path.relative_to(ROOT)}: {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert found == []


def test_the_transport_modules_do_not_reach_into_each_other():
    """The OpenAI SDK is the OpenAI transport's: the client, the batch mode and the mock transport do not import it."""
    for name in ("client.py", "batch.py", "mock_transport.py", "transport.py", "providers.py"):
        tree = ast.parse(Path(ROOT / "eval" / "judge" / name).read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "openai" not in imported, name
