"""Chat messages for each turn, and splitting a model's output into reasoning and final answer.

Harmony (llm-jp-4 thinking, gpt-oss): the prompt ends with `<|start|>assistant`; the model writes
`<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>`.
Output without a final channel is not an answer: it gets a status, never the analysis text as the answer.
The final text is kept exactly as written (whitespace included), and kept when the output was cut off inside the
final channel (status `truncated`): the compat profile decides what the judge sees of it (`eval/compat.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ReasoningFormat
from .statuses import GenerationStatus as G

HARMONY_MARKERS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>")
_TERMINATORS = ("<|end|>", "<|return|>", "<|call|>")
_SPLIT = re.compile("(" + "|".join(re.escape(m) for m in HARMONY_MARKERS) + ")")


def turn_messages(system_prompt: str | None, questions: Sequence[str],
                  previous_finals: Sequence[str | None]) -> list[dict[str, str | None]]:
    """Messages for the turn after `previous_finals`: [system, user₁, assistant(final₁), user₂, …].

    Earlier assistant turns carry the final answer only; reasoning never goes back to the model. A None answer
    (none came back, under the upstream profile) is sent as `content: null`, as upstream does.
    """
    assert len(previous_finals) == len(questions) - 1
    messages: list[dict[str, str | None]] = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for i, question in enumerate(questions):
        messages.append({"role": "user", "content": question})
        if i < len(previous_finals):
            messages.append({"role": "assistant", "content": previous_finals[i]})
    return messages


@dataclass(frozen=True)
class ParsedOutput:
    final: str | None  # status ok: the answer; truncated: the final channel's text so far, if it was reached
    reasoning: str
    status: G


def parse_output(text: str, hit_limit: bool, fmt: ReasoningFormat, special_tokens: Sequence[str] = ()) -> ParsedOutput:
    """Split raw output (special tokens kept) into final answer and reasoning, with a status.

    `special_tokens`: the tokenizer's special tokens; none of them reaches the final answer or the reasoning.
    A final that is empty once whitespace is ignored is `no_final` (its text is kept as written, like the rest).
    """
    if fmt.format == "auto":
        raise ValueError("parse_output needs the decided reasoning format (backends/template.py), not auto")
    structural = {"harmony": set(HARMONY_MARKERS), "think": {fmt.think_start, fmt.think_end}}.get(fmt.format, set())
    stray = [t for t in special_tokens if t and t not in structural]
    if stray:
        text = re.sub("|".join(re.escape(t) for t in sorted(stray, key=len, reverse=True)), "", text)
    if fmt.format == "harmony":
        parsed = _parse_harmony(text, hit_limit)
    elif fmt.format == "think":
        parsed = _parse_think(text, hit_limit, fmt.think_start, fmt.think_end)
    else:
        parsed = _plain(text, "", hit_limit)
    if parsed.status == G.OK and not (parsed.final or "").strip():
        return ParsedOutput(parsed.final, parsed.reasoning, G.NO_FINAL)
    return parsed


def _plain(text: str, reasoning: str, hit_limit: bool) -> ParsedOutput:
    return ParsedOutput(text, reasoning, G.TRUNCATED if hit_limit else G.OK)


def _parse_harmony(text: str, hit_limit: bool) -> ParsedOutput:
    analysis: list[str] = []
    final: str | None = None
    final_closed = False
    header: list[str] = []
    content: list[str] | None = None  # not None while inside a message body
    channel = ""

    def close(terminated: bool) -> None:
        nonlocal final, final_closed
        body = "".join(content or [])
        if channel == "analysis":
            analysis.append(body.strip())
        elif channel == "final" and final is None:
            final, final_closed = body, terminated

    for part in _SPLIT.split(text):
        if not part:
            continue
        if content is not None:
            if part in _TERMINATORS:
                close(terminated=True)
                content, header = None, []
            elif part not in HARMONY_MARKERS:  # a stray marker inside a message is not text
                content.append(part)
        elif part == "<|message|>":
            channel = _channel_of("".join(header))
            content = []
        elif part == "<|start|>":
            header = []
        else:
            header.append(part)
    if content is not None:
        close(terminated=False)
    reasoning = "\n\n".join(a for a in analysis if a)
    if final is not None and (final_closed or not hit_limit):
        return ParsedOutput(final, reasoning, G.OK)
    return ParsedOutput(final, reasoning, G.TRUNCATED if hit_limit else G.NO_FINAL)


def _channel_of(header: str) -> str:
    match = re.search(r"<\|channel\|>\s*([A-Za-z_]+)", header)
    return match.group(1) if match else ""


def _parse_think(text: str, hit_limit: bool, start: str, end: str) -> ParsedOutput:
    if end in text:
        before, after = text.split(end, 1)
        reasoning = before.split(start, 1)[1] if start in before else before
        return _plain(after, reasoning.strip(), hit_limit)
    if start in text:
        reasoning = text.split(start, 1)[1].strip()
        return ParsedOutput(None, reasoning, G.TRUNCATED if hit_limit else G.NO_FINAL)
    return _plain(text, "", hit_limit)
