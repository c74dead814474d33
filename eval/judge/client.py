"""The judge client: `AsyncOpenAI` / `AsyncAzureOpenAI` with bounded concurrency, rate limits paid by every HTTP call,
the SDK's retries (exponential backoff with jitter, `Retry-After` honoured), every reply checked (replies.py) before
it is read, a failure status for every outcome, parse re-asks, and parameter adaptation for reasoning judges.

The HTTP side: a query string of the configured address (`?api-key=…`) is sent as query parameters of every
request (not glued into its path); a chat reply's body is read as it arrives, gzip decoded here, and dropped once it
passes `judge.max_reply_bytes` (`UnreadableReply`, a malformed reply), so no more than that is ever held for it.
Credentials in an address (`user:pass@`) are refused when the config is read (config.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from .. import compat
from ..compat import Profile
from ..config import JudgeConfig
from ..errors import UserError
from ..records import Judgment, Usage
from ..redact import PUBLIC_QUERY_PARAMS
from ..statuses import JudgmentStatus as J
from .ledger import Ledger
from .limits import RateLimiter, estimate_tokens
from .replies import MalformedReply, Reply, read_body
from .requests import JudgeRequest

log = logging.getLogger("eval.judge")

REASONING_FAMILIES = ("gpt-5", "o1", "o3", "o4")
# Parameters these families reject, known in advance; anything else is learned from a 400 naming it.
DROPPED_BY_FAMILY = {"gpt-5": {"top_p"}, "o1": {"temperature", "top_p"}, "o3": {"temperature", "top_p"}, "o4": {"temperature", "top_p"}}
_UNSUPPORTED = re.compile(r"Unsupported (?:parameter|value): '([A-Za-z_]+)'")
_CONTENT_FILTER = ("content_filter", "content_policy", "content management policy", "responsibleaipolicyviolation")


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


class JudgeFatal(UserError):
    """A failure no retry can fix (bad key, unknown model): stop judging, keep everything stored."""


class _Failed(Exception):
    def __init__(self, status: str, message: str, attempts: int, bad_request: bool = False):
        super().__init__(message)
        self.status, self.message, self.attempts, self.bad_request = status, message, attempts, bad_request


def api_key_for(cfg: JudgeConfig) -> str:
    if cfg.mock:
        return "mock-key"
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise UserError(f"judge.api_key_env: the environment variable {cfg.api_key_env} is not set; export the judge "
                        "API key there (keys are read from the environment only and never written to disk)")
    return key


def _family(model: str) -> str | None:
    name = model.rsplit("/", 1)[-1]
    return next((f for f in REASONING_FAMILIES if name.startswith(f)), None)


class ParamPolicy:
    """Which request fields to send to this judge model; learns from 400s that name a parameter."""

    def __init__(self, model: str, learned: dict[str, Any] | None = None):
        family = _family(model)
        learned = learned or {}
        self.dropped: set[str] = set(DROPPED_BY_FAMILY.get(family or "", set())) | set(learned.get("dropped", []))
        self.max_tokens_field = "max_completion_tokens" if family or learned.get("max_completion_tokens") else "max_tokens"

    def kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in params.items():
            if value is None or name in self.dropped:
                continue
            out[self.max_tokens_field if name == "max_tokens" else name] = value
        return out

    def learn(self, error: openai.BadRequestError) -> str | None:
        """Adapt to a 400 that names an unsupported parameter; return its name, or None if it named none."""
        param = getattr(error, "param", None)
        match = _UNSUPPORTED.search(str(error))
        name = param or (match.group(1) if match else None)
        if name in ("max_tokens", "max_completion_tokens") and "max_completion_tokens" in str(error) and self.max_tokens_field == "max_tokens":
            self.max_tokens_field = "max_completion_tokens"
            return name
        if name and name not in self.dropped and name not in ("messages", "model") and (match or "unsupported" in str(error).lower()):
            self.dropped.add(name)
            return name
        return None

    def state(self) -> dict[str, Any]:
        return {"dropped": sorted(self.dropped), "max_completion_tokens": self.max_tokens_field == "max_completion_tokens"}


class UnreadableReply(openai.OpenAIError):
    """A chat reply dropped while it was read (too large, or in an encoding that was not asked for). An OpenAIError,
    so the SDK passes it on as raised, without retrying; the client treats it as a malformed reply."""


def make_openai_client(cfg: JudgeConfig, base_url: str | None, api_key: str, on_request=None):
    """`on_request` is awaited before every HTTP request the SDK sends, its own retries included."""
    hooks = {"request": [on_request] if on_request else [], "response": [_reply_reader(cfg.max_reply_bytes)]}
    http_client = openai.DefaultAsyncHttpxClient(event_hooks=hooks, headers={"Accept-Encoding": "gzip"})
    common = {"api_key": api_key, "max_retries": cfg.max_retries, "timeout": cfg.timeout_s, "http_client": http_client}
    if cfg.provider == "azure" and not cfg.mock:
        assert cfg.azure is not None
        endpoint, query = split_query(cfg.azure.endpoint)
        return openai.AsyncAzureOpenAI(azure_endpoint=endpoint, api_version=cfg.azure.api_version,
                                       azure_deployment=cfg.azure.deployment, default_query=query, **common)
    address, query = split_query(base_url)
    return openai.AsyncOpenAI(base_url=address, default_query=query, **common)


def split_query(url: str | None) -> tuple[str | None, dict[str, str] | None]:
    """An address and its query parameters, apart: the SDK appends paths to the address as a string."""
    if not url:
        return url, None
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    return urlunsplit(parts._replace(query="", fragment="")), dict(parse_qsl(parts.query, keep_blank_values=True))


def endpoint_identity(cfg: JudgeConfig) -> dict[str, Any]:
    """Who answers this judge's requests, as the shared cache keys it: the provider, the address as the SDK will use
    it (no credentials: a secret query value appears as its hash), and for Azure the deployment and API version.
    The built-in mock is known by its settings (its address changes with every start)."""
    if cfg.mock:
        return {"provider": "mock", "settings": cfg.mock_settings.model_dump(mode="json")}
    if cfg.provider == "azure":
        assert cfg.azure is not None
        return {"provider": "azure", "endpoint": normalised_address(cfg.azure.endpoint),
                "deployment": cfg.azure.deployment, "api_version": cfg.azure.api_version}
    address = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"  # as the SDK chooses
    return {"provider": "openai", "base_url": normalised_address(address)}


def normalised_address(url: str) -> str:
    """Scheme and host in lower case, no default port, no user-info, no trailing slash, query parameters sorted with
    every value but Azure's api-version replaced by a hash of it."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    query = sorted((name, value if name in PUBLIC_QUERY_PARAMS else "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16])
                   for name, value in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "&".join(f"{n}={v}" for n, v in query), ""))


def _reply_reader(limit: int):
    """A response hook: the body of every chat reply is read through `_capped_body` (nothing is read yet here)."""

    async def hook(response: Any) -> None:
        if b"/chat/completions" not in response.request.url.raw_path:
            return
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise UnreadableReply(f"the body is encoded as {encoding[:40]!r}, which was not asked for")
        declared = response.headers.get("content-length", "")
        if encoding == "identity" and declared.isdigit() and int(declared) > limit:
            raise UnreadableReply(f"the body has {int(declared):,} bytes, more than judge.max_reply_bytes ({limit:,})")
        response.stream = _capped_body(response.stream, limit, gzip=encoding == "gzip")
        if encoding == "gzip":
            del response.headers["content-encoding"]  # decoded here, under the cap

    return hook


def _capped_body(raw: Any, limit: int, gzip: bool) -> Any:
    return _capped_stream_class(type(raw).__module__.split(".")[0])(raw, limit, gzip)


@functools.cache
def _capped_stream_class(library: str) -> type:
    """A body stream of the HTTP library the SDK uses (httpx, or httpx2 in openai 3), which holds no more than `limit`
    decoded bytes: gzip is inflated here in pieces no larger than what is left under the limit."""

    class CappedBody(sys.modules[library].AsyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, raw: Any, limit: int, gzip: bool):
            self.raw, self.limit, self.gzip = raw, limit, gzip

        async def __aiter__(self):
            inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if self.gzip else None
            size = 0
            async for chunk in self.raw:
                while chunk:
                    if inflate is None:
                        piece, chunk = chunk, b""
                    else:
                        try:
                            piece = inflate.decompress(chunk, self.limit - size + 1)
                        except zlib.error as e:
                            raise UnreadableReply(f"the gzip body does not inflate ({e})") from None
                        chunk = inflate.unconsumed_tail
                    size += len(piece)
                    if size > self.limit:
                        raise UnreadableReply(f"the body has more than judge.max_reply_bytes ({self.limit:,}) bytes")
                    yield piece

        async def aclose(self) -> None:
            await self.raw.aclose()

    return CappedBody


def is_content_filter(error: Exception) -> bool:
    body = getattr(error, "body", None)
    return mentions_content_filter(body.get("code") if isinstance(body, dict) else None, str(error))


def mentions_content_filter(code: Any, message: str) -> bool:
    text = f"{code} {message}".lower()
    return any(marker in text for marker in _CONTENT_FILTER)


class JudgeClient:
    def __init__(self, cfg: JudgeConfig, base_url: str | None, ledger: Ledger, learned: dict[str, Any] | None = None,
                 profile: Profile = compat.UPSTREAM):
        self.cfg = cfg
        self.profile = profile
        self.client = make_openai_client(cfg, base_url, api_key_for(cfg), self._pace)
        self.semaphore = asyncio.Semaphore(cfg.concurrency)
        # A budget shared with other runs holds the rates and the judgments in flight of all of them.
        self.limiter = ledger.shared or RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute)
        self.in_flight = ledger.shared.in_flight if ledger.shared is not None else contextlib.nullcontext
        self.policy = ParamPolicy(cfg.model, learned)
        self.ledger = ledger
        self.models_seen: set[str] = set()
        self.fingerprints_seen: set[str] = set()
        self.warnings: list[str] = []

    async def close(self) -> None:
        await self.client.close()

    def request_body(self, request: JudgeRequest) -> dict[str, Any]:
        """The body a request is sent with now (the parameters this judge accepts)."""
        return {"model": self.cfg.model, "messages": request.messages, **self.policy.kwargs(request.params)}

    async def _pace(self, http_request: Any) -> None:
        """Every chat call waits for the rate limiter — first asks, re-asks, the SDK's retries, a batch's retries."""
        if b"/chat/completions" not in http_request.url.raw_path:
            return
        try:
            body = json.loads(http_request.content)
            tokens = sum(estimate_tokens(m.get("content") or "") for m in body["messages"] if isinstance(m, dict))
            tokens += body.get("max_completion_tokens") or body.get("max_tokens") or 0
        except (ValueError, KeyError, TypeError, AttributeError):
            tokens = 0
        await self.limiter.acquire(tokens)

    # ---------------------------------------------------------------- checks

    async def preflight(self) -> None:
        """One tiny request: the key works, the model exists, the parameters are accepted."""
        where = self.cfg.base_url or ("mock server" if self.cfg.mock else "the OpenAI API")
        try:
            await self._create([{"role": "user", "content": "Reply with OK."}], {"max_tokens": 16}, preflight=True)
        except openai.AuthenticationError:
            raise JudgeFatal(f"judge: {where} rejected the API key in {self.cfg.api_key_env} (401); check the key") from None
        except openai.PermissionDeniedError as e:
            raise JudgeFatal(f"judge: {where} denied access to {self.cfg.model} (403: {_short(e)})") from None
        except openai.NotFoundError:
            raise JudgeFatal(f"judge.model: {self.cfg.model!r} not found at {where} (404); check the model or deployment name") from None
        except openai.APIConnectionError as e:
            raise JudgeFatal(f"judge.base_url: cannot reach {where} ({_short(e)}); check the URL and the network") from None
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code == 429:
                self.warnings.append(f"judge preflight got HTTP {e.status_code}; continuing (the judge retries)")
                log.warning(self.warnings[-1])
                return
            raise JudgeFatal(f"judge: the test request failed (HTTP {e.status_code}: {_short(e)})") from None
        except _Failed as failure:  # a malformed answer: the server is up and the key works
            self.warnings.append(f"judge preflight: {failure.message}; continuing")
            log.warning(self.warnings[-1])

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
                completion, tries, progress.sent = await self._create(progress.request.messages, progress.request.params)
            except _Failed as failure:
                progress.attempts += failure.attempts
                judgment = self.decide(progress, failure=failure)
            else:
                progress.attempts += tries
                judgment = self.interpret(progress, completion)
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

    def decide(self, progress: Progress, finish: str | None = None, failure: _Failed | None = None) -> Judgment | None:
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
            params=progress.sent or self.policy.kwargs(request.params), messages=request.messages, raw=progress.raw,
            scores=scores, status=status, attempts=progress.attempts,
            usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                   "reasoning_tokens": usage.reasoning_tokens},
            returned_model=progress.returned_model, fingerprint=progress.fingerprint,
            seconds=round(time.perf_counter() - progress.started, 3), error=error, cost_usd=progress.cost,
            parse_rules=request.rules(self.profile),
        )

    async def _create(self, messages: list[dict[str, str]], params: dict[str, Any], preflight: bool = False):
        """One chat completion through the SDK's retries; returns (completion, HTTP attempts, fields sent).

        With `preflight`, every SDK error propagates as raised (after parameter adaptation).
        """
        client = self.client.with_options(max_retries=1) if preflight else self.client
        attempts = 0
        malformed = 0
        while True:
            kwargs = self.policy.kwargs(params)
            try:
                raw = await client.chat.completions.with_raw_response.create(model=self.cfg.model, messages=messages, **kwargs)
                attempts += raw.retries_taken + 1
                return read_body(raw.content), attempts, kwargs
            except openai.BadRequestError as e:
                attempts += 1
                learned = None if is_content_filter(e) else self.policy.learn(e)
                if learned:
                    self.warnings.append(f"judge {self.cfg.model}: the API rejected '{learned}'; adapted and retrying")
                    log.warning(self.warnings[-1])
                    continue
                if preflight:
                    raise
                if is_content_filter(e):
                    raise _Failed(J.CONTENT_FILTERED, f"the judge refused the prompt (content filter): {_short(e)}",
                                  attempts, bad_request=True) from None
                raise _Failed(J.API_ERROR, f"HTTP 400: {_short(e)}", attempts, bad_request=True) from None
            except openai.APIError as e:
                if preflight:
                    raise
                raise self._failure(e, attempts) from None
            except (MalformedReply, UnreadableReply) as e:
                # A 200 whose body is not a chat completion, or one too large to read: the SDK retries neither.
                if isinstance(e, UnreadableReply):
                    attempts += 1
                malformed += 1
                if malformed > self.cfg.max_retries:
                    raise _Failed(J.API_ERROR, f"malformed response: {_short(e)}", attempts) from None
                await asyncio.sleep(min(8.0, 0.5 * 2 ** malformed) * (1 - 0.25 * random.random()))

    def _failure(self, error: openai.APIError, attempts: int) -> Exception:
        """What a failed call (after the SDK's retries) means for the judgment, or for the whole run."""
        retried = attempts + self.cfg.max_retries + 1
        if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
            return JudgeFatal(f"judge: HTTP {error.status_code} from the judge API ({_short(error)}); fix the key or "
                              "model and run again — judgments stored so far are kept")
        if isinstance(error, openai.APITimeoutError):
            return _Failed(J.TIMEOUT, f"no answer within {self.cfg.timeout_s:g} s ({self.cfg.max_retries + 1} attempts)", retried)
        if isinstance(error, openai.APIStatusError):
            return _Failed(J.API_ERROR, f"HTTP {error.status_code}: {_short(error)}", attempts + _sdk_attempts(error, self.cfg))
        return _Failed(J.API_ERROR, f"connection failed: {_short(error)}", retried)

    def _track(self, model: str | None, fingerprint: str | None) -> None:
        for value, seen, what in ((model, self.models_seen, "model"), (fingerprint, self.fingerprints_seen, "system_fingerprint")):
            if value and value not in seen:
                if seen:
                    self.warnings.append(f"judge {what} changed within the run: {sorted(seen)} -> {value}")
                    log.warning(self.warnings[-1])
                seen.add(value)


def _sdk_attempts(error: openai.APIStatusError, cfg: JudgeConfig) -> int:
    retried = error.status_code in (408, 409, 429) or error.status_code >= 500
    return cfg.max_retries + 1 if retried else 1


def _short(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict) and body.get("message"):
        text = str(body["message"])
    else:
        text = str(error)
    return text.splitlines()[0][:200] if text else type(error).__name__
