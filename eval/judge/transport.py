"""The judge seam: how one judge call is made, apart from what its reply means.

A transport takes the messages and sampling parameters of one call and returns a `Call` — the reply, checked
(`replies.Reply`), with the attempts it took and the parameters as sent — or raises `CallFailed` (no reply: the status
it gives the judgment) or `JudgeFatal` (no call can succeed: a bad key, an unknown model). It owns everything about
its endpoint: the client and its retries, which parameters the model accepts, the rate limiter's pacing of every
attempt (the `pace` it is given), and the identity the shared cache keys by. What a reply or a failure means —
a score, a re-ask, a final status — is decided once, by `client.JudgeClient.decide`, for every transport.

Implementations: `openai_api.OpenAITransport` (OpenAI and Azure, and any OpenAI-compatible server: base_url) and
`mock_transport.MockTransport` (the built-in mock judge in process, no HTTP). `providers.py` chooses one from the
config. A transport that can run a batch (`batches`) offers the Batch API (`batch.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import UserError
from .replies import Reply

if TYPE_CHECKING:
    from ..config import JudgeConfig
    from ..tasks import Task

Pace = Callable[[int], Awaitable[None]]  # waits until the rate limits allow a call of about this many tokens
Warn = Callable[[str], None]  # hears of what a transport adapted or noticed (the run's warnings)


@dataclass(frozen=True)
class Setup:
    """What every transport is opened with, besides its config (`JudgeConfig`: the provider's settings)."""

    base_url: str | None  # where the requests go: the configured address, or that of a mock server started here
    learned: dict[str, Any] | None  # what an earlier invocation learned (`Transport.learned`)
    pace: Pace  # awaited before every attempt of a call
    warn: Warn
    tasks: Iterable[Task] | None = None  # the run's tasks (the mock judge recognises their judge templates)


@dataclass(frozen=True)
class Call:
    """A judge call that got a reply."""

    reply: Reply
    attempts: int  # HTTP attempts (or their equivalent) it took, retries included
    sent: dict[str, Any]  # the sampling parameters as sent (after adaptation to the model)


class CallFailed(Exception):
    """A judge call that got no usable reply: the status it gives the judgment (`statuses.JudgmentStatus`), a message,
    the attempts it took, and `bad_request` when the server refused the request itself (an HTTP 400), which a
    compatibility profile may count as one ask used up (`compat.Profile.bad_request_is_attempt`)."""

    def __init__(self, status: str, message: str, attempts: int, bad_request: bool = False):
        super().__init__(message)
        self.status, self.message, self.attempts, self.bad_request = status, message, attempts, bad_request


class JudgeFatal(UserError):
    """A failure no retry can fix (bad key, unknown model): stop judging, keep everything stored."""


@dataclass(frozen=True)
class BatchState:
    """A submitted batch as its server reports it."""

    status: str  # validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled
    done: int | None  # requests finished (completed or failed) so far, when the server says
    output_file_id: str | None
    error_file_id: str | None


class Batches(Protocol):
    """A Batch API in the OpenAI format: lines of `{custom_id, method, url, body}` in, lines of `{custom_id,
    response: {status_code, body}}` out. Failures to submit are a `UserError` saying what to do."""

    async def submit(self, lines: list[dict[str, Any]]) -> tuple[str, str]:
        """Upload the lines and start a batch over them: (batch id, input file id)."""

    async def state(self, batch_id: str) -> BatchState: ...

    async def content(self, file_id: str) -> bytes:
        """The bytes of an output or error file."""


class Transport(Protocol):
    model: str  # the model (or deployment) asked
    batches: Batches | None  # None: this endpoint has no Batch API

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """The sampling parameters as they would be sent now (unset ones left out, the model's own field names):
        with the model and the messages, the request body the shared cache keys by."""

    def learned(self) -> dict[str, Any]:
        """What this transport learned about its model (parameters it refuses), kept for the next invocation."""

    async def call(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Call:
        """One judge call, retries included; raises `CallFailed` or `JudgeFatal`."""

    async def check(self) -> None:
        """One tiny call: the key works, the model exists, the parameters are accepted; raises `JudgeFatal` with the
        fix, or warns (through its `warn`) and returns where the endpoint answered but the call did not succeed."""

    async def close(self) -> None: ...


class Provider(Protocol):
    """A transport class, as `providers.TRANSPORTS` names it: opened with the judge config and a `Setup`; its static
    `identity(cfg)` says who answers, without credentials (the endpoint the shared cache keys by)."""

    def __call__(self, cfg: JudgeConfig, setup: Setup) -> Transport: ...

    def identity(self, cfg: JudgeConfig) -> dict[str, Any]: ...
