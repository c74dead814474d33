"""The judge client: bounded concurrency, the rate limits every attempt pays, the budget, and the one place where
what a judge call returned — a reply, or a failure — becomes a judgment or a re-ask (`JudgeClient.decide`).

How a call is made is its transport's (`transport.Transport`: the OpenAI/Azure API, or the mock judge in process;
`providers.py` chooses): the client hands it the request's messages and parameters and gets a checked reply, or a
`CallFailed` saying what status the failure gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import compat
from ..compat import Profile
from ..config import JudgeConfig
from ..records import Judgment, Usage
from ..statuses import JudgmentStatus as J
from ..tasks import Task
from .ledger import Ledger
from .limits import RateLimiter
from .providers import open_transport
from .replies import Reply
from .requests import JudgeRequest
from .transport import CallFailed, Setup

log = logging.getLogger("eval.judge")


@dataclass
class Progress:
    """A judgment in the making: what was asked and received so far (kept across re-asks and batch → sync)."""

    request: JudgeRequest
    started: float = field(default_factory=time.perf_counter)
    attempts: int = 0
    asks: int = 0
    replies: int = 0  # asks that got a reply (raw and refusal hold the latest); the others failed
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    raw: str | None = None
    refusal: str | None = None
    returned_model: str | None = None
    fingerprint: str | None = None
    sent: dict[str, Any] = field(default_factory=dict)


class JudgeClient:
    """`base_url`: where the requests go (`providers.judge_address`); `learned`: what an earlier invocation's transport
    learned about the model; `tasks`: the run's (the mock judge recognises their templates)."""

    def __init__(self, cfg: JudgeConfig, base_url: str | None, ledger: Ledger, learned: dict[str, Any] | None = None,
                 profile: Profile = compat.UPSTREAM, tasks: Iterable[Task] | None = None):
        self.cfg = cfg
        self.profile = profile
        self.warnings: list[str] = []
        self.semaphore = asyncio.Semaphore(cfg.concurrency)
        # A budget shared with other runs holds the rates and the judgments in flight of all of them.
        self.limiter = ledger.shared or RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute)
        self.in_flight = ledger.shared.in_flight if ledger.shared is not None else contextlib.nullcontext
        self.transport = open_transport(cfg, Setup(base_url, learned, self._pace, self._warn, tasks))
        self.ledger = ledger
        self.models_seen: set[str] = set()
        self.fingerprints_seen: set[str] = set()

    async def close(self) -> None:
        await self.transport.close()

    def request_body(self, request: JudgeRequest) -> dict[str, Any]:
        """The body a request is sent with now (the parameters this judge accepts): what the shared cache keys by."""
        return {"model": self.cfg.model, "messages": request.messages, **self.transport.parameters(request.params)}

    async def _pace(self, tokens: int) -> None:
        """Every attempt of every call waits for the rate limiter (first asks, re-asks, retries, a batch's retries)."""
        await self.limiter.acquire(tokens)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    async def preflight(self) -> None:
        """One tiny request: the key works, the model exists, the parameters are accepted."""
        await self.transport.check()

    # ---------------------------------------------------------------- judging

    async def judge(self, request: JudgeRequest) -> Judgment | None:
        """The judgment, or None when the budget was spent before this request's turn came (nothing is sent)."""
        async with self.semaphore, self.in_flight():
            if self.ledger.exhausted():
                return None
            return await self.continue_judging(Progress(request))

    async def continue_judging(self, progress: Progress) -> Judgment:
        """Ask (again) until the judgment is final: a score, a final failure, or the asks used up."""
        while True:
            progress.asks += 1
            try:
                call = await self.transport.call(progress.request.messages, progress.request.params)
            except CallFailed as failure:
                progress.attempts += failure.attempts
                judgment = self.decide(progress, failure=failure)
            else:
                progress.attempts += call.attempts
                progress.sent = call.sent
                judgment = self.interpret(progress, call.reply)
            if judgment is not None:
                return judgment

    def interpret(self, progress: Progress, reply: Reply, batch: bool = False) -> Judgment | None:
        """The judgment a reply settles, or None when it holds no score and may be asked again."""
        progress.raw = reply.content
        progress.replies += 1
        progress.returned_model, progress.fingerprint = reply.model, reply.fingerprint
        self._track(progress.returned_model, progress.fingerprint)
        progress.usage.add(reply.usage)
        cost = self.ledger.charge(reply.usage, batch)
        if cost is not None:
            progress.cost = (progress.cost or 0.0) + cost
        progress.refusal = reply.refusal
        return self.decide(progress, finish=reply.finish_reason)

    def decide(self, progress: Progress, finish: str | None = None, failure: CallFailed | None = None) -> Judgment | None:
        """The one place where the latest reply (or failed call) becomes the judgment's status, or None: ask again.

        The profile decides: upstream re-asks after an HTTP 400 and after a reply cut off or filtered
        (finish_reason ignored); strict ends the judgment at a 400 (api_error / content_filtered), a filtered
        reply (content_filtered) or a cut-off one (length). Under both, a reply with no content (a refusal
        included) says nothing about the answer: asked again, and `api_error` (transient, never cached) when
        the asks are used up.

        Upstream (`client/remote.py`, `_process_single_request`) stores each reply over the one before, and a 400
        raises before that assignment: the asks a 400 uses up leave the latest reply standing, and that reply decides
        once the asks are used up (text without a score: no score, left out; `content: null`: an API error). So under
        its profile a judgment whose last asks failed with a 400 ends as its latest reply would have. A failure the
        SDK could not retry away (5xx, timeout, connection) ends the judgment as before, transient: upstream counts no
        ask for those (429, timeout: asked again without limit; 5xx: the run stops), so no reply stands in for them.
        """
        profile, request = self.profile, progress.request
        may_ask_again = progress.asks <= request.parse_retries
        if failure is not None:
            if failure.bad_request and profile.bad_request_is_attempt:
                if may_ask_again:
                    return None
                if progress.replies:  # the latest reply stands, as upstream keeps it
                    return self.decide(progress)
            return self.finish(progress, failure.status, {}, failure.message)
        honour_finish = not profile.judge_finish_reason_ignored
        if finish == "content_filter" and honour_finish:
            return self.finish(progress, J.CONTENT_FILTERED, {}, "the judge's output was filtered")
        cut_off = finish == "length" and honour_finish
        if progress.raw is None and not cut_off:
            if may_ask_again:
                return None
            said = f"the judge refused: {progress.refusal[:200]}" if progress.refusal else "the judge returned no content"
            return self.finish(progress, J.API_ERROR, {}, said)
        scores = request.parser(progress.raw)
        if isinstance(scores, dict):
            return self.finish(progress, J.OK, scores)
        if cut_off:
            return self.finish(progress, J.LENGTH, {}, f"judge output cut off at max tokens ({scores})")
        if may_ask_again:
            return None
        return self.finish(progress, J.PARSE_FAILED, {}, scores)

    def finish(self, progress: Progress, status: str, scores: dict[str, float], error: str | None = None) -> Judgment:
        request = progress.request
        usage = progress.usage
        return Judgment(
            key=request.key, generation_key=request.generation_key, round=request.slot.round, task=request.slot.task,
            item_id=request.slot.item_id, turn=request.slot.turn, judge_model=self.cfg.model,
            prompt_name=request.prompt_name, prompt_hash=request.prompt_hash,
            params=progress.sent or self.transport.parameters(request.params), messages=request.messages, raw=progress.raw,
            scores=scores, status=status, attempts=progress.attempts,
            usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                   "reasoning_tokens": usage.reasoning_tokens},
            returned_model=progress.returned_model, fingerprint=progress.fingerprint,
            seconds=round(time.perf_counter() - progress.started, 3), error=error, cost_usd=progress.cost,
            parse_rules=request.rules(self.profile), call=request.call,
        )

    def _track(self, model: str | None, fingerprint: str | None) -> None:
        for value, seen, what in ((model, self.models_seen, "model"), (fingerprint, self.fingerprints_seen, "system_fingerprint")):
            if value and value not in seen:
                if seen:
                    self._warn(f"judge {what} changed within the run: {sorted(seen)} -> {value}")
                seen.add(value)
