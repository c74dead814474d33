"""The judge over the OpenAI API (`judge.provider: openai`, any OpenAI-compatible server through `judge.base_url`) or
Azure OpenAI (`provider: azure`): a `transport.Transport` on `AsyncOpenAI` / `AsyncAzureOpenAI`, with the SDK's
retries (exponential backoff with jitter, `Retry-After` honoured), every attempt paced by the rate limiter (an event
hook on the SDK's HTTP client, so the SDK's own retries and a batch's synchronous retries pay too), every reply checked
(replies.py) before it is read, and parameter adaptation for reasoning judges (`ParamPolicy`).

The HTTP side: a query string of the configured address (`?api-key=…`) is sent as query parameters of every
request (not glued into its path); a chat reply's body is read as it arrives, gzip decoded here, and dropped once it
passes `judge.max_reply_bytes` (`UnreadableReply`, a malformed reply), so no more than that is ever held for it
(`capped_http_client`; the openai generation backend reads its replies the same way, within `model.max_reply_bytes`).
Credentials in an address (`user:pass@`) are refused when the config is read (config.py).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import re
import sys
import zlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from ..config import JudgeConfig
from ..errors import UserError
from ..redact import PUBLIC_QUERY_PARAMS
from ..statuses import JudgmentStatus as J
from .limits import request_tokens
from .replies import MalformedReply, read_body
from .transport import Batches, BatchState, Call, CallFailed, JudgeFatal, Setup

REASONING_FAMILIES = ("gpt-5", "o1", "o3", "o4")
# Parameters these families reject, known in advance; anything else is learned from a 400 naming it.
DROPPED_BY_FAMILY = {"gpt-5": {"top_p"}, "o1": {"temperature", "top_p"}, "o3": {"temperature", "top_p"}, "o4": {"temperature", "top_p"}}
_UNSUPPORTED = re.compile(r"Unsupported (?:parameter|value): '([A-Za-z_]+)'")
_CONTENT_FILTER = ("content_filter", "content_policy", "content management policy", "responsibleaipolicyviolation")
MOCK_KEY = "mock-key"  # what the built-in mock served over HTTP is sent (it checks no key unless told)


def api_key_for(cfg: JudgeConfig) -> str:
    if cfg.mock:
        return MOCK_KEY
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise UserError(f"judge.api_key_env: the environment variable {cfg.api_key_env} is not set; export the judge "
                        "API key there (keys are read from the environment only and never written to disk)")
    return key


def _family(model: str) -> str | None:
    name = model.rsplit("/", 1)[-1]
    return next((f for f in REASONING_FAMILIES if name.startswith(f)), None)


class ParamPolicy:
    """Which request fields to send to a model of the OpenAI API; learns from 400s that name a parameter."""

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

    def learn(self, message: str, param: str | None = None) -> str | None:
        """Adapt to a 400 (its message, and the parameter it names, if any) that refuses a parameter; return the
        parameter's name, or None if it named none."""
        match = _UNSUPPORTED.search(message)
        name = param or (match.group(1) if match else None)
        if name in ("max_tokens", "max_completion_tokens") and "max_completion_tokens" in message and self.max_tokens_field == "max_tokens":
            self.max_tokens_field = "max_completion_tokens"
            return name
        if name and name not in self.dropped and name not in ("messages", "model") and (match or "unsupported" in message.lower()):
            self.dropped.add(name)
            return name
        return None

    def learn_from(self, error: openai.BadRequestError) -> str | None:
        return self.learn(str(error), getattr(error, "param", None))

    def state(self) -> dict[str, Any]:
        return {"dropped": sorted(self.dropped), "max_completion_tokens": self.max_tokens_field == "max_completion_tokens"}


class UnreadableReply(openai.OpenAIError):
    """A chat reply dropped while it was read (too large, or in an encoding that was not asked for). An OpenAIError,
    so the SDK passes it on as raised, without retrying; the transport treats it as a malformed reply."""


def capped_http_client(limit: int, setting: str, on_request=None) -> Any:
    """The SDK's HTTP client, reading every chat reply within `limit` bytes (`setting` names the limit in errors);
    `on_request` is awaited before every HTTP request the SDK sends, its own retries included."""
    hooks = {"request": [on_request] if on_request else [], "response": [_reply_reader(limit, setting)]}
    return openai.DefaultAsyncHttpxClient(event_hooks=hooks, headers={"Accept-Encoding": "gzip"})


def make_openai_client(cfg: JudgeConfig, base_url: str | None, api_key: str, on_request=None):
    http_client = capped_http_client(cfg.max_reply_bytes, "judge.max_reply_bytes", on_request)
    if cfg.provider == "azure" and not cfg.mock:
        assert cfg.azure is not None
        endpoint, query = split_query(cfg.azure.endpoint)
        return openai.AsyncAzureOpenAI(azure_endpoint=endpoint, api_version=cfg.azure.api_version,
                                       azure_deployment=cfg.azure.deployment, default_query=query, api_key=api_key,
                                       max_retries=cfg.max_retries, timeout=cfg.timeout_s, http_client=http_client)
    address, query = split_query(base_url) if base_url else (base_url, None)
    return openai.AsyncOpenAI(base_url=address, default_query=query, api_key=api_key, max_retries=cfg.max_retries,
                              timeout=cfg.timeout_s, http_client=http_client)


def split_query(url: str) -> tuple[str, dict[str, str] | None]:
    """An address and its query parameters, apart: the SDK appends paths to the address as a string."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    return urlunsplit(parts._replace(query="", fragment="")), dict(parse_qsl(parts.query, keep_blank_values=True))


def endpoint_identity(cfg: JudgeConfig) -> dict[str, Any]:
    """Who answers this judge's requests, as the shared cache keys it: the provider, the address as the SDK will use
    it (no credentials: a secret query value appears as its hash), and for Azure the deployment and API version."""
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


def _reply_reader(limit: int, setting: str):
    """A response hook: the body of every chat reply is read through `_capped_body` (nothing is read yet here)."""

    async def hook(response: Any) -> None:
        if b"/chat/completions" not in response.request.url.raw_path:
            return
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise UnreadableReply(f"the body is encoded as {encoding[:40]!r}, which was not asked for")
        declared = response.headers.get("content-length", "")
        if encoding == "identity" and declared.isdigit() and int(declared) > limit:
            raise UnreadableReply(f"the body has {int(declared):,} bytes, more than {setting} ({limit:,})")
        response.stream = _capped_body(response.stream, limit, setting, gzip=encoding == "gzip")
        if encoding == "gzip":
            del response.headers["content-encoding"]  # decoded here, under the cap

    return hook


def _capped_body(raw: Any, limit: int, setting: str, gzip: bool) -> Any:
    return _capped_stream_class(type(raw).__module__.split(".")[0])(raw, limit, setting, gzip)


@functools.cache
def _capped_stream_class(library: str) -> type:
    """A body stream of the HTTP library the SDK uses (httpx, or httpx2 in openai 3), which holds no more than `limit`
    decoded bytes: gzip is inflated here in pieces no larger than what is left under the limit."""

    class CappedBody(sys.modules[library].AsyncByteStream):  # type: ignore[misc]  # a base class found at run time
        def __init__(self, raw: Any, limit: int, setting: str, gzip: bool):
            self.raw, self.limit, self.setting, self.gzip = raw, limit, setting, gzip

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
                        raise UnreadableReply(f"the body has more than {self.setting} ({self.limit:,}) bytes")
                    yield piece

        async def aclose(self) -> None:
            await self.raw.aclose()

    return CappedBody


def is_content_filter(error: Exception) -> bool:
    body = getattr(error, "body", None)
    return mentions_content_filter(body.get("code") if isinstance(body, dict) else None, str(error))


def mentions_content_filter(code: Any, message: str) -> bool:
    """An error (its code and message) that says a content filter refused the prompt."""
    text = f"{code} {message}".lower()
    return any(marker in text for marker in _CONTENT_FILTER)


def short_error(error: Exception) -> str:
    """An API error's message, one line of at most 200 characters."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and body.get("message"):
        text = str(body["message"])
    else:
        text = str(error)
    return text.splitlines()[0][:200] if text else type(error).__name__


class OpenAITransport:
    """The judge's calls through the OpenAI SDK, to `setup.base_url` (None: the SDK's choice, or Azure's endpoint);
    `setup.pace` is awaited before every chat completion attempt with its estimated tokens."""

    identity = staticmethod(endpoint_identity)

    def __init__(self, cfg: JudgeConfig, setup: Setup):
        self.cfg, self.pace, self.warn = cfg, setup.pace, setup.warn
        self.model = cfg.model
        self.client = make_openai_client(cfg, setup.base_url, api_key_for(cfg), self._pace)
        self.policy = ParamPolicy(cfg.model, setup.learned)
        self.batches: Batches | None = OpenAIBatches(self.client)

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.policy.kwargs(params)

    def learned(self) -> dict[str, Any]:
        return self.policy.state()

    async def close(self) -> None:
        await self.client.close()

    async def _pace(self, http_request: Any) -> None:
        """Every chat call waits for the rate limiter — first asks, re-asks, the SDK's retries, a batch's retries."""
        if b"/chat/completions" not in http_request.url.raw_path:
            return
        try:
            tokens = request_tokens(json.loads(http_request.content))
        except (ValueError, KeyError, TypeError, AttributeError):
            tokens = 0
        await self.pace(tokens)

    async def check(self) -> None:
        where = self.cfg.base_url or ("mock server" if self.cfg.mock else "the OpenAI API")
        try:
            await self._send([{"role": "user", "content": "Reply with OK."}], {"max_tokens": 16}, preflight=True)
        except openai.AuthenticationError:
            raise JudgeFatal(f"judge: {where} rejected the API key in {self.cfg.api_key_env} (401); check the key") from None
        except openai.PermissionDeniedError as e:
            raise JudgeFatal(f"judge: {where} denied access to {self.cfg.model} (403: {short_error(e)})") from None
        except openai.NotFoundError:
            raise JudgeFatal(f"judge.model: {self.cfg.model!r} not found at {where} (404); check the model or deployment name") from None
        except openai.APIConnectionError as e:
            raise JudgeFatal(f"judge.base_url: cannot reach {where} ({short_error(e)}); check the URL and the network") from None
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code == 429:
                self.warn(f"judge preflight got HTTP {e.status_code}; continuing (the judge retries)")
                return
            raise JudgeFatal(f"judge: the test request failed (HTTP {e.status_code}: {short_error(e)})") from None
        except CallFailed as failure:  # a malformed answer: the server is up and the key works
            self.warn(f"judge preflight: {failure.message}; continuing")

    async def call(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Call:
        return await self._send(messages, params)

    async def _send(self, messages: list[dict[str, str]], params: dict[str, Any], preflight: bool = False) -> Call:
        """One chat completion through the SDK's retries. With `preflight`, every SDK error propagates as raised
        (after parameter adaptation)."""
        client = self.client.with_options(max_retries=1) if preflight else self.client
        attempts = 0
        malformed = 0
        while True:
            kwargs = self.policy.kwargs(params)
            try:
                raw = await client.chat.completions.with_raw_response.create(model=self.cfg.model, messages=messages, **kwargs)
                attempts += raw.retries_taken + 1
                return Call(read_body(raw.content), attempts, kwargs)
            except openai.BadRequestError as e:
                attempts += 1
                learned = None if is_content_filter(e) else self.policy.learn_from(e)
                if learned:
                    self.warn(f"judge {self.cfg.model}: the API rejected '{learned}'; adapted and retrying")
                    continue
                if preflight:
                    raise
                if is_content_filter(e):
                    raise CallFailed(J.CONTENT_FILTERED, f"the judge refused the prompt (content filter): {short_error(e)}",
                                     attempts, bad_request=True) from None
                raise CallFailed(J.API_ERROR, f"HTTP 400: {short_error(e)}", attempts, bad_request=True) from None
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
                    raise CallFailed(J.API_ERROR, f"malformed response: {short_error(e)}", attempts) from None
                await asyncio.sleep(min(8.0, 0.5 * 2 ** malformed) * (1 - 0.25 * random.random()))

    def _failure(self, error: openai.APIError, attempts: int) -> Exception:
        """What a failed call (after the SDK's retries) means for the judgment, or for the whole run."""
        retried = attempts + self.cfg.max_retries + 1
        if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
            return JudgeFatal(f"judge: HTTP {error.status_code} from the judge API ({short_error(error)}); fix the key or "
                              "model and run again — judgments stored so far are kept")
        if isinstance(error, openai.APITimeoutError):
            return CallFailed(J.TIMEOUT, f"no answer within {self.cfg.timeout_s:g} s ({self.cfg.max_retries + 1} attempts)", retried)
        if isinstance(error, openai.APIStatusError):
            return CallFailed(J.API_ERROR, f"HTTP {error.status_code}: {short_error(error)}", attempts + _sdk_attempts(error, self.cfg))
        return CallFailed(J.API_ERROR, f"connection failed: {short_error(error)}", retried)


def _sdk_attempts(error: openai.APIStatusError, cfg: JudgeConfig) -> int:
    retried = error.status_code in (408, 409, 429) or error.status_code >= 500
    return cfg.max_retries + 1 if retried else 1


class OpenAIBatches:
    """The Files and Batches endpoints of the client's server."""

    def __init__(self, client: openai.AsyncOpenAI):
        self.client = client

    async def submit(self, lines: list[dict[str, Any]]) -> tuple[str, str]:
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        try:
            upload = await self.client.files.create(file=("judge-requests.jsonl", data), purpose="batch")
            batch = await self.client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                     completion_window="24h", metadata={"harness": "llmjp-eval"})
        except openai.APIStatusError as e:
            if e.status_code in (404, 405, 501):
                raise UserError(f"judge.mode: the judge server has no Files/Batch API (HTTP {e.status_code} from "
                                f"{e.request.url.path}); set judge.mode: sync — everything stored so far is kept") from None
            raise UserError(f"judge.mode batch: submitting the batch failed (HTTP {e.status_code}: {short_error(e)}); run "
                            "again later — everything stored so far is kept") from None
        except openai.APIError as e:
            raise UserError(f"judge.mode batch: submitting the batch failed ({short_error(e)}); run again later — "
                            "everything stored so far is kept") from None
        return batch.id, upload.id

    async def state(self, batch_id: str) -> BatchState:
        batch = await self.client.batches.retrieve(batch_id)
        counts = batch.request_counts
        return BatchState(batch.status, counts.completed + counts.failed if counts is not None else None,
                          batch.output_file_id, batch.error_file_id)

    async def content(self, file_id: str) -> bytes:
        return (await self.client.files.content(file_id)).content
