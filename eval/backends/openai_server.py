"""Any OpenAI-compatible server (vLLM `serve`, SGLang, a hosted API): async, bounded concurrency, several base URLs
used round-robin. The server renders the chat template and splits reasoning (e.g. vLLM's `--reasoning-parser`);
the final answer is `content`, the reasoning `reasoning` or `reasoning_content`.

The request is llm-jp-judge's for a generator behind its `openai` client: the task's sampling parameters (None left
out), `reasoning_effort` when one is configured, and for the gpt-5 and o-series families `max_completion_tokens` in
place of `max_tokens` and no `top_p` (upstream's `update_sampling_params`; `judge.client.ParamPolicy` holds the rule).
A parameter the API refuses by name (a reasoning model refusing `temperature` ≠ 1) is left out from then on, with a
warning: upstream would have recorded no answer, which the published rows show it did not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import openai

from ..chat import ParsedOutput
from ..config import OpenAIModel
from ..errors import UserError
from ..judge.client import ParamPolicy
from ..records import content_key
from ..statuses import GenerationStatus as G
from .base import GenerationRequest, GenerationResult, OnResult, error_result

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
    return ParsedOutput(content, reasoning, "ok")


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

    def identity(self) -> dict[str, Any]:
        ident = {"backend": self.name, "model": self.cfg.path, "chat_template_kwargs": self.cfg.chat_template_kwargs}
        if self.cfg.reasoning_effort is not None:
            ident["reasoning_effort"] = self.cfg.reasoning_effort
        return ident

    def prompt_hash(self, messages: list[dict[str, str | None]]) -> str:
        # The server renders the template: what the harness controls is the messages and the template kwargs.
        return content_key("openai-chat", messages, self.cfg.chat_template_kwargs)

    def describe_format(self) -> str:
        return ("reasoning format: split by the server (the answer is `content`, the reasoning `reasoning` or "
                "`reasoning_content`)" + (f"; reasoning_effort {self.effort} sent" if self.effort else ""))

    def close(self) -> None:
        pass

    def generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event | None = None) -> None:
        if requests:
            asyncio.run(self._generate(requests, on_result, stop or threading.Event()))  # in the generation thread

    async def _generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event) -> None:
        """`concurrency` workers share one queue: memory stays bounded by the workers, not by the request count."""
        clients = [openai.AsyncOpenAI(base_url=url, api_key=self.key, max_retries=self.cfg.max_retries,
                                      timeout=self.cfg.timeout_s) for url in self.cfg.base_urls]
        queue: asyncio.Queue[tuple[int, GenerationRequest]] = asyncio.Queue()
        for index, request in enumerate(requests):
            queue.put_nowait((index, request))

        async def worker() -> None:
            while not queue.empty() and not stop.is_set():  # a request in flight still ends; no new one starts
                index, request = queue.get_nowait()
                on_result(await self._complete(clients[index % len(clients)], request))

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, len(requests)))))
        finally:
            for client in clients:
                await client.close()

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        s = request.sampling
        params = {"max_tokens": s.max_new_tokens, "temperature": s.temperature, "seed": request.seed, "top_p": s.top_p,
                  "frequency_penalty": s.frequency_penalty, "reasoning_effort": self.effort}
        kwargs = self.policy.kwargs(params)  # None left out; the model family's fields
        if self.cfg.chat_template_kwargs:
            kwargs["extra_body"] = {"chat_template_kwargs": dict(self.cfg.chat_template_kwargs)}
        return kwargs

    async def _complete(self, client: openai.AsyncOpenAI, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        bad_requests = 0
        while True:
            sent = self._params(request)
            try:
                completion = await client.chat.completions.create(model=self.cfg.path, messages=request.messages, **sent)
                break
            except openai.BadRequestError as e:  # not retried by the SDK
                learned = self.policy.learn(e)
                if learned:
                    log.warning(f"model {self.cfg.path}: the API refused '{learned}'; it is no longer sent")
                if learned or self._params(request) != sent:  # refused for a parameter no longer sent: send again
                    continue
                if bad_requests == self.bad_request_retries:
                    return error_result(request, _error_text(e))
                bad_requests += 1
            except openai.APIError as e:
                return error_result(request, _error_text(e))
        choice = completion.choices[0]
        parsed = parse_message(choice.message, choice.finish_reason)
        usage = completion.usage
        return GenerationResult(request, parsed.final or "", parsed, choice.finish_reason,
                                usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
                                time.perf_counter() - started, self.prompt_hash(request.messages))


def _error_text(error: openai.APIError) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
