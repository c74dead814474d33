"""The built-in mock judge in process (`judge.mock: true`): the mock server's replies (mock_server.py: a verdict in
the format of the judge template the prompt was rendered from, seeded faults, `score_shift`) without HTTP, for smoke
runs and for tests where the HTTP layer is not the subject.

It is also the worked example of a transport (`transport.Transport`): a body is made as the OpenAI transport makes
it (`openai_api.ParamPolicy`: the mock server refuses what the API refuses, and its replies are the same), each
attempt is paced, a reply is checked by `replies.read_reply`, and a refusal becomes a `CallFailed`. What only HTTP
has — the faults of the HTTP layer (429, 5xx, a hang, a dropped connection, a malformed body) and the Batch API — is
served by the mock server instead (`served_over_http`; `providers.judge_address` starts it), so the same settings
give the same judgments either way, and the shared cache knows both by the same identity.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import JudgeConfig
from ..statuses import JudgmentStatus as J
from ..tasks import judge_templates, local_judge_templates
from .limits import request_tokens
from .mock_server import MockState, answer_chat, request_hash
from .openai_api import ParamPolicy, mentions_content_filter
from .replies import read_reply
from .transport import Batches, Call, CallFailed, Setup

HTTP_FAULTS = ("429", "500", "503", "hang", "drop", "malformed")


def served_over_http(cfg: JudgeConfig) -> bool:
    """Whether the mock judge needs its HTTP server: a fault of the HTTP layer, or batch mode."""
    return cfg.mode == "batch" or any(getattr(cfg.mock_settings, f"rate_{fault}") > 0 for fault in HTTP_FAULTS)


def endpoint_identity(cfg: JudgeConfig) -> dict[str, Any]:
    """The mock is known by its settings, whether in process or served (a server's address changes every start)."""
    return {"provider": "mock", "settings": cfg.mock_settings.model_dump(mode="json")}


class MockTransport:
    identity = staticmethod(endpoint_identity)
    batches: Batches | None = None

    def __init__(self, cfg: JudgeConfig, setup: Setup):
        self.cfg, self.pace, self.warn = cfg, setup.pace, setup.warn
        self.model = cfg.model
        templates = local_judge_templates() if setup.tasks is None else judge_templates(setup.tasks)
        self.state = MockState(cfg.mock_settings, templates=templates)
        self.policy = ParamPolicy(cfg.model, setup.learned)

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.policy.kwargs(params)

    def learned(self) -> dict[str, Any]:
        return self.policy.state()

    async def check(self) -> None:
        try:
            await self.call([{"role": "user", "content": "Reply with OK."}], {"max_tokens": 16})
        except CallFailed as failure:
            self.warn(f"judge preflight: {failure.message}; continuing")

    async def call(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Call:
        attempts = 0
        while True:
            sent = self.policy.kwargs(params)
            body = {"model": self.model, "messages": messages, **sent}
            await self.pace(request_tokens(body))
            attempts += 1
            fault, latency = self.state.draw(request_hash(body))
            with self.state.lock:
                self.state.counters["requests"] += 1
                self.state.counters[fault or "ok"] += 1
            if latency:
                await asyncio.sleep(latency)
            status, payload = answer_chat(self.state, body, fault)
            if status == 200:
                return Call(read_reply(payload), attempts, sent)
            error = payload["error"]
            if status == 400 and mentions_content_filter(error.get("code"), error["message"]):
                raise CallFailed(J.CONTENT_FILTERED, f"the judge refused the prompt (content filter): {error['message']}",
                                 attempts, bad_request=True)
            if status == 400 and (learned := self.policy.learn(error["message"], error.get("param"))):
                self.warn(f"judge {self.model}: the API rejected '{learned}'; adapted and retrying")
                continue
            raise CallFailed(J.API_ERROR, f"HTTP {status}: {error['message']}", attempts, bad_request=status == 400)

    async def close(self) -> None:
        pass
