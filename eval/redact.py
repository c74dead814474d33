"""Secrets never leave the process: every known secret value is replaced by `[REDACTED]` before anything is stored
(run store, judge cache, report files) or printed.

Known secrets are registered when a config is loaded: the API keys read from the environment, and the values in the
query strings of the server addresses (`?api-key=…`; an address with user-info is refused by config.py). With each
secret its derived forms are registered: percent-encoded, and base64 at each of the three offsets it can have in a
longer encoded text (`Basic base64(user:secret)`): the characters that encode the secret alone. Error texts, which
may echo a request back (`Authorization: Bearer …`, `Basic …`), additionally lose anything shaped like a credential.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

PLACEHOLDER = "[REDACTED]"
MIN_LENGTH = 6  # shorter values are too likely to occur by chance in answers and prompts
MIN_ENCODED_LENGTH = 8  # a shorter piece of a secret's base64 could be part of any base64 text
PUBLIC_QUERY_PARAMS = {"api-version", "api_version"}  # Azure's: part of the address, not a credential
_CREDENTIAL = re.compile(r"(?i)(\bbearer\s+|\b(?:api[-_]?key|x-api-key|authorization|access[-_]token|token|secret)"
                         r"[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)([^\s\"',;&}]{6,})")
_BASIC = re.compile(r"(?i)(\bbasic\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")

_secrets: set[str] = set()


def register(value: str | None) -> None:
    if value and len(value) >= MIN_LENGTH:
        _secrets.update(_forms(value))


def _forms(secret: str) -> Iterator[str]:
    """The secret as it may appear in a text: as is, percent-encoded, and inside base64 at any offset."""
    yield secret
    yield quote(secret, safe="")
    data = secret.encode("utf-8")
    for offset in range(3):  # the secret's first byte at offset 0, 1 or 2 of a 3-byte group of the encoded text
        start = -(-8 * offset // 6)  # the first character that holds no bit of what precedes the secret
        end = 8 * (offset + len(data)) // 6  # past the last character that holds no bit of what follows it
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            piece = encode(b"\0" * offset + data).decode("ascii")[start:end]
            if len(piece) >= MIN_ENCODED_LENGTH:
                yield piece


def register_url(url: str | None) -> None:
    """The credentials an address carries: every query value but the public ones."""
    if not url:
        return
    parts = urlsplit(url)
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
        value = _BASIC.sub(_basic_credentials, value)
    return value


def _basic_credentials(match: re.Match[str]) -> str:
    """`Basic <base64 of user:password>` loses its credentials; "basic" followed by any other word stays."""
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return match.group(1) + PLACEHOLDER if b":" in decoded else match.group(0)


def data(value: Any) -> Any:
    """A JSON-like structure with `text` applied to every string in it."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {data(k): data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [data(v) for v in value]
    return value
