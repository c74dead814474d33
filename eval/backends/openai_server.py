"""Any OpenAI-compatible server (vLLM `serve`, SGLang, a hosted API): async, bounded concurrency, several base URLs
served as one fleet (`fleet.py`). The server renders the chat template and splits reasoning (e.g. vLLM's
`--reasoning-parser`); the final answer is `content`, the reasoning `reasoning` or `reasoning_content`.

Retries are the fleet's, not the SDK's: each server's client makes one attempt per call (`max_retries=0`), so a
dead server costs its requests one connection error each, not the SDK's backoff, before they move on. An attempt
that fails on the server's side (connection error, timeout, 5xx) is sent to another server at once; only when every
server that can take it already failed it does the request wait (the SDK's backoff: 0.5 s doubling up to 8 s, or
the server's `Retry-After`) and go round again. `model.max_retries` bounds the attempts after the first; a 408, 409
or 429 is asked again the same way without counting against the server's health; an HTTP 400 is sent again as the
compat profile says. When the fleet is down, no new request starts, the requests in flight end (one that failed is
stored as `error`, one never sent is not stored) and `generate` raises `BackendUnavailable`. A reply is read within
`model.max_reply_bytes` (the judge's capped reader, `judge.openai_api.capped_http_client`): a larger one is dropped
unread and its answer stored as `error`, generated again by the next run.

The request is llm-jp-judge's for a generator behind its `openai` client: the task's sampling parameters (None left
out), `reasoning_effort` when one is configured, and for the gpt-5 and o-series families `max_completion_tokens` in
place of `max_tokens` and no `top_p` (upstream's `update_sampling_params`; `judge.openai_api.ParamPolicy` holds the rule).
A parameter the API refuses by name (a reasoning model refusing `temperature` ≠ 1) is left out from then on, with a
warning: upstream would have recorded no answer, which the published rows show it did not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from typing import Any

import openai

from ..chat import ParsedOutput
from ..config import OpenAIModel
from ..errors import UserError
from ..judge.openai_api import ParamPolicy, UnreadableReply, capped_http_client
from ..records import content_key
from ..statuses import GenerationStatus as G
from .base import BackendUnavailable, GenerationRequest, GenerationResult, OnResult, error_result
from .fleet import Fleet, Server

ASKED_AGAIN = (408, 409, 429)  # answered, but worth asking again (as the SDK would); the server is up
POLL_S = 0.25  # how often a request waiting for a server looks again
MAX_RETRY_AFTER_S = 60.0

log = logging.getLogger("eval.generate")


def _reasoning_of(message: Any) -> str:
    for name in ("reasoning", "reasoning_content"):
        value = getattr(message, name, None) or (getattr(message, "model_extra", None) or {}).get(name)
        if value:
            return str(value)
    return ""


def parse_message(message: Any, finish_reason: str | None) -> ParsedOutput:
    """The content exactly as the server sent it (None when it sent none), with the harness's status."""
    content = getattr(message, "content", None)
    content = None if content is None else str(content)
    reasoning = _reasoning_of(message)
    if finish_reason == "length":
        return ParsedOutput(content, reasoning, G.TRUNCATED)
    if content is None or not content.strip():
        return ParsedOutput(content, reasoning, G.NO_FINAL)
    return ParsedOutput(content, reasoning, G.OK)


class _NoServer(Exception):
    """The fleet is down, or the run is stopping: the request is not sent again."""


class OpenAIServerBackend:
    name = "openai"

    def __init__(self, cfg: OpenAIModel, bad_request_retries: int = 0, require_key: bool = True):
        """`require_key` False: only the identity and prompt hashes are needed (a dry run), not the server."""
        self.cfg = cfg
        self.bad_request_retries = bad_request_retries  # the compat profile's: upstream sends a 400 again 3 times
        self.effort = cfg.reasoning_effort or cfg.chat_template_kwargs.get("reasoning_effort")
        self.policy = ParamPolicy(cfg.path)
        key = "EMPTY"
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env) or ""
            if not key and require_key:
                raise UserError(f"model.api_key_env: the environment variable {cfg.api_key_env} is not set")
        self.key = key
        self.fleet = Fleet(cfg.base_urls)  # its health and counts last for the whole run, over every turn

    def identity(self) -> dict[str, Any]:
        ident = {"backend": self.name, "model": self.cfg.path, "chat_template_kwargs": self.cfg.chat_template_kwargs}
        if self.cfg.reasoning_effort is not None:
            ident["reasoning_effort"] = self.cfg.reasoning_effort
        return ident

    def prompt_hash(self, messages: list[dict[str, str | None]]) -> str:
        # The server renders the template: what the harness controls is the messages and the template kwargs.
        return content_key("openai-chat", messages, self.cfg.chat_template_kwargs)

    def servers(self) -> list[dict[str, Any]]:
        """Per server, what it was sent and how it answered in this run (manifest.json)."""
        return self.fleet.counts()

    def describe_format(self) -> str:
        return ("reasoning format: split by the server (the answer is `content`, the reasoning `reasoning` or "
                "`reasoning_content`)" + (f"; reasoning_effort {self.effort} sent" if self.effort else ""))

    def close(self) -> None:
        pass

    def generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event | None = None) -> None:
        if requests and not self.fleet.down:
            asyncio.run(self._generate(requests, on_result, stop or threading.Event()))  # in the generation thread
        if self.fleet.down:
            raise BackendUnavailable(self.fleet.down_message())

    async def _generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event) -> None:
        """`concurrency` workers share one queue: memory stays bounded by the workers, not by the request count."""
        clients = [openai.AsyncOpenAI(base_url=server.url, api_key=self.key, max_retries=0, timeout=self.cfg.timeout_s,
                                      http_client=capped_http_client(self.cfg.max_reply_bytes, "model.max_reply_bytes"))
                   for server in self.fleet.servers]
        queue: asyncio.Queue[GenerationRequest] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)

        async def worker() -> None:
            # A request in flight still ends; no new one starts once the run stops or the fleet is down.
            while not queue.empty() and not stop.is_set() and not self.fleet.down:
                result = await self._complete(clients, queue.get_nowait(), stop)
                if result is not None:
                    on_result(result)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, len(requests)))))
        finally:
            for client in clients:
                await client.close()

    async def _complete(self, clients: list[openai.AsyncOpenAI], request: GenerationRequest,
                        stop: threading.Event) -> GenerationResult | None:
        """The request's answer, or its last error once its attempts are spent; None when it was never sent."""
        started = time.perf_counter()
        failed_on: set[int] = set()  # the servers this request failed on since it last waited
        failures = bad_requests = 0
        error: openai.APIError | None = None
        while True:
            try:
                server = await self._server(failed_on, failures, error, stop)
            except _NoServer:
                return None if error is None else error_result(request, _error_text(error))
            sent = self._params(request)
            try:  # (the messages are role/content dicts, which the SDK's types spell as one TypedDict per role)
                completion = await clients[server.index].chat.completions.create(
                    model=self.cfg.path, messages=request.messages, **sent)  # type: ignore[arg-type]
            except openai.BadRequestError as e:  # the compat profile says how often a 400 is sent again
                self.fleet.refused(server)
                learned = self.policy.learn_from(e)
                if learned:
                    log.warning(f"model {self.cfg.path}: the API refused '{learned}'; it is no longer sent")
                if learned or self._params(request) != sent:  # refused for a parameter no longer sent: send again
                    continue
                if bad_requests == self.bad_request_retries:
                    return error_result(request, _error_text(e))
                bad_requests += 1
                continue
            except (openai.APIConnectionError, openai.InternalServerError) as e:  # timeouts included; 5xx
                self.fleet.failed(server, _error_text(e))
                error = e
            except openai.APIStatusError as e:
                self.fleet.refused(server)
                if e.status_code not in ASKED_AGAIN:
                    return error_result(request, _error_text(e))
                error = e
            except (openai.APIError, UnreadableReply) as e:  # a reply that is not a chat completion, or too large to read
                self.fleet.refused(server)
                return error_result(request, _error_text(e))
            else:
                self.fleet.answered(server)
                break
            finally:
                self.fleet.release(server)
            failures += 1
            failed_on.add(server.index)
            if failures > self.cfg.max_retries:
                return error_result(request, _error_text(error))
        choice = completion.choices[0]
        parsed = parse_message(choice.message, choice.finish_reason)
        usage = completion.usage
        return GenerationResult(request, parsed.final or "", parsed, choice.finish_reason,
                                usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
                                time.perf_counter() - started, self.prompt_hash(request.messages))

    async def _server(self, failed_on: set[int], failures: int, error: openai.APIError | None,
                      stop: threading.Event) -> Server:
        """The server for the next attempt: another one than those this request failed on, at once if one can take it;
        when only those can, after a backoff; when none can, once one is back on trial."""
        while True:
            if stop.is_set() or self.fleet.down:
                raise _NoServer()
            server = self.fleet.take(avoid=failed_on)
            if server is not None:
                return server
            if failed_on and self.fleet.any_usable():
                await self._sleep(_backoff(failures, error), stop)
                failed_on.clear()
            else:
                await self._sleep(self.fleet.seconds_until_trial() or POLL_S, stop)

    async def _sleep(self, seconds: float, stop: threading.Event) -> None:
        """Sleep, but wake soon after the run starts stopping or the fleet goes down."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and not self.fleet.down and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, POLL_S))

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        s = request.sampling
        params = {"max_tokens": s.max_new_tokens, "temperature": s.temperature, "seed": request.seed, "top_p": s.top_p,
                  "frequency_penalty": s.frequency_penalty, "reasoning_effort": self.effort}
        kwargs = self.policy.kwargs(params)  # None left out; the model family's fields
        if self.cfg.chat_template_kwargs:
            kwargs["extra_body"] = {"chat_template_kwargs": dict(self.cfg.chat_template_kwargs)}
        return kwargs


def _backoff(failures: int, error: openai.APIError | None) -> float:
    """The SDK's wait before asking again: the server's Retry-After (up to a minute), else 0.5 s doubling up to 8 s,
    less up to 25 % jitter."""
    response = getattr(error, "response", None)
    try:
        retry_after = float(response.headers.get("retry-after")) if response is not None else None
    except (TypeError, ValueError):
        retry_after = None
    if retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER_S:
        return retry_after
    return min(0.5 * 2 ** (failures - 1), 8.0) * (1 - 0.25 * random.random())


def _error_text(error: openai.OpenAIError) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
