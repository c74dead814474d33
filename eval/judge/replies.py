"""A judge reply checked before anything reads it: the body of an HTTP 200 (sync, or one line of a batch output) →
`Reply`, or `MalformedReply` when the body is not a chat completion. A malformed reply says nothing about the
answer being judged, so it is a transient failure: asked again, never cached (statuses.py).

The bytes are UTF-8 JSON or malformed: nothing is decoded with replacement characters, and a text holding a lone
surrogate (a `\\ud800` escape, which no UTF-8 file can store) is malformed too. How large a body may be is decided
where it is read (client.py), before it is held in memory.

Compatible servers differ in harmless ways that are accepted as they mean it: `content` as a list of text parts is
their joined text, `usage` may be absent or hold nulls. Anything else of the wrong shape is malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..records import Usage


class MalformedReply(ValueError):
    """A 200 whose body is not a chat completion."""


@dataclass(frozen=True)
class Reply:
    content: str | None  # None: the judge said nothing (or refused)
    refusal: str | None
    finish_reason: str | None
    model: str | None
    fingerprint: str | None
    usage: Usage


def read_body(data: bytes) -> Reply:
    """An HTTP 200's body, as received."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedReply(f"the body is not UTF-8 (byte {e.start} of {len(data)})") from None
    try:
        body = json.loads(text)
    except ValueError:
        raise MalformedReply(f"the body is not JSON ({_kind(text)})") from None
    return read_reply(body)


def read_reply(body: Any) -> Reply:
    if not isinstance(body, dict):
        raise MalformedReply(f"the body is {_kind(body)}, not a chat completion object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply(f"'choices' is {_kind(choices)}, not a list with one choice")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise MalformedReply(f"'choices[0]' is {_kind(choice)}, not an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedReply(f"'choices[0].message' is {_kind(message)}, not an object")
    return Reply(content=_content(message.get("content")), refusal=_optional_text(message, "refusal", "message"),
                 finish_reason=_optional_text(choice, "finish_reason", "choices[0]"),
                 model=_optional_text(body, "model", "body"), fingerprint=_optional_text(body, "system_fingerprint", "body"),
                 usage=_usage(body.get("usage")))


def _content(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return _storable(value, "message.content")
    if isinstance(value, list):  # content parts: [{"type": "text", "text": "…"}, …]
        texts = []
        for part in value:
            if not isinstance(part, dict) or not isinstance(part.get("text", ""), str):
                raise MalformedReply(f"a part of 'message.content' is {_kind(part)}, not a text part")
            if part.get("type", "text") == "text":
                texts.append(part.get("text", ""))
        return _storable("".join(texts), "message.content")
    raise MalformedReply(f"'message.content' is {_kind(value)}, not text")


def _optional_text(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedReply(f"'{where}.{key}' is {_kind(value)}, not text")
    return _storable(value, f"{where}.{key}")


def _storable(text: str | None, where: str) -> str | None:
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise MalformedReply(f"'{where}' holds a lone surrogate at character {e.start}, which is not text") from None
    return text


def _usage(value: Any) -> Usage:
    if value is None:
        return Usage()
    if not isinstance(value, dict):
        raise MalformedReply(f"'usage' is {_kind(value)}, not an object")
    details = value.get("completion_tokens_details")
    counts = [value.get("prompt_tokens"), value.get("completion_tokens"),
              details.get("reasoning_tokens") if isinstance(details, dict) else None]
    if any(c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 0) for c in counts):
        raise MalformedReply("'usage' holds something other than token counts")
    return Usage(*(c or 0 for c in counts))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, dict)) and not value:
        return f"an empty {type(value).__name__}"
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'…' if len(shown) > 40 else ''}"
