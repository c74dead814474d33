"""Which transport answers a judge config (`transport.Transport`), who it is to the shared cache, and where its
requests go.

`judge.provider` names the transport (`TRANSPORTS`); `judge.mock: true` puts the built-in mock judge in its place:
in process, or served over HTTP on this machine when its settings need HTTP (`mock_transport.served_over_http`), and
then talked to through the OpenAI transport like any server. Adding a provider: a module with a class that
implements `Transport` (opened with the judge config and a `transport.Setup`, with a static `identity(cfg)`), a
settings type in `config.py` (a field of `JudgeConfig`, as `azure: AzureSettings`), its name in
`JudgeConfig.provider`, and a line here (mypy holds the class to `transport.Provider`). `mock_transport.py` is the
worked example.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..config import JudgeConfig
from ..tasks import Task
from .mock_transport import MockTransport, served_over_http
from .openai_api import OpenAITransport
from .transport import Provider, Setup, Transport

TRANSPORTS: dict[str, Provider] = {"openai": OpenAITransport, "azure": OpenAITransport}


def _transport_type(cfg: JudgeConfig, base_url: str | None) -> Provider:
    return MockTransport if cfg.mock and base_url is None else TRANSPORTS[cfg.provider]


def endpoint_identity(cfg: JudgeConfig) -> dict[str, Any]:
    """Who answers the config's judge requests, as the shared cache keys it."""
    return (MockTransport if cfg.mock else TRANSPORTS[cfg.provider]).identity(cfg)


def open_transport(cfg: JudgeConfig, setup: Setup) -> Transport:
    return _transport_type(cfg, setup.base_url)(cfg, setup)


@contextmanager
def judge_address(cfg: JudgeConfig, tasks: Iterable[Task] | None = None) -> Iterator[str | None]:
    """Where the judge's requests go while the context lasts: the configured address; for the mock judge nowhere
    (None: answered in process) or a mock server started here for the context, when its settings need HTTP."""
    if not cfg.mock:
        yield cfg.base_url
        return
    if not served_over_http(cfg):
        yield None
        return
    from .mock_server import MockServer

    server = MockServer(cfg.mock_settings, tasks=tasks).start()
    try:
        yield server.url
    finally:
        server.stop()
