"""Secrets never leave the process: every known secret value is replaced by `[REDACTED]` before anything is stored
(run store, judge cache, report files) or printed.

Known secrets are registered when a config is loaded: the API keys read from the environment, and the values in the
query strings and user-info of the server addresses (`?api-key=…`, `https://user:pass@host`). Error texts, which may
echo a request back (`Authorization: Bearer …`), additionally lose anything shaped like a credential.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PLACEHOLDER = "[REDACTED]"
MIN_LENGTH = 6  # shorter values are too likely to occur by chance in answers and prompts
PUBLIC_QUERY_PARAMS = {"api-version", "api_version"}  # Azure's: part of the address, not a credential
_CREDENTIAL = re.compile(r"(?i)(\bbearer\s+|\b(?:api[-_]?key|x-api-key|authorization|access[-_]token|token|secret)"
                         r"[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)([^\s\"',;&}]{6,})")

_secrets: set[str] = set()


def register(value: str | None) -> None:
    if value and len(value) >= MIN_LENGTH:
        _secrets.add(value)


def register_url(url: str | None) -> None:
    """The credentials an address carries: its password and every query value but the public ones."""
    if not url:
        return
    parts = urlsplit(url)
    register(parts.password)
    if parts.password:
        register(unquote(parts.password))
    for raw in parts.query.split("&"):
        name, _, value = raw.partition("=")
        if unquote(name) not in PUBLIC_QUERY_PARAMS:
            register(value)
            register(unquote(value))
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in PUBLIC_QUERY_PARAMS:
            register(value)


def register_config(cfg: Any) -> None:
    """Every secret a run config gives access to (keys through their environment variables, addresses)."""
    judge = cfg.judge
    register(os.environ.get(judge.api_key_env))
    register_url(judge.base_url)
    if judge.azure is not None:
        register_url(judge.azure.endpoint)
    model = cfg.model
    if getattr(model, "api_key_env", None):
        register(os.environ.get(model.api_key_env))
    for url in getattr(model, "base_urls", None) or ():
        register_url(url)


def text(value: str, credentials: bool = False) -> str:
    """`value` with every known secret replaced; with `credentials`, also anything shaped like one (error texts)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in value:
            value = value.replace(secret, PLACEHOLDER)
    if credentials:
        value = _CREDENTIAL.sub(lambda m: m.group(1) + PLACEHOLDER, value)
    return value


def data(value: Any) -> Any:
    """A JSON-like structure with `text` applied to every string in it."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {data(k): data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [data(v) for v in value]
    return value
