"""The model's own chat template, shared by the local engines (hf, vllm): render, check the template kwargs, fix the
conversation date, hash the exact prompt, and find where an output stops.

The configured `conversation_start_date` is both passed to the template (templates such as llm-jp-4's read it) and
returned by the template's clock: a template that calls `strftime_now(...)` (gpt-oss's does) gets the configured date
instead of today's. transformers rebuilds every template kwarg as plain data, so a Python function cannot be passed
in; the clock is a Jinja macro placed before the template, which shadows transformers' `strftime_now` global and
answers the formats the template asks for with the configured date.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jinja2

from ..chat import HARMONY_MARKERS
from ..errors import UserError
from ..records import content_key, text_hash
from ..smoke_model import builtin_path, is_builtin

DATE_KWARG = "conversation_start_date"
_CLOCK_VAR = "llmjp_eval_clock"
_CLOCK_FORMAT = re.compile(r"""strftime_now\(\s*(["'])(.*?)\1\s*\)""")
_CLOCK = ("{%- macro strftime_now(format) -%}{%- if format in " + _CLOCK_VAR + " -%}{{ " + _CLOCK_VAR + "[format] }}"
          "{%- else -%}{{ raise_exception('the template asks the clock for ' ~ format ~ ', which the harness cannot "
          "fix to the configured date') }}{%- endif -%}{%- endmacro %}")
_PROBE = [{"role": "system", "content": "Probe system prompt."}, {"role": "user", "content": "Probe question one?"},
          {"role": "assistant", "content": "Probe answer one."}, {"role": "user", "content": "Probe question two?"}]
_ABSENT = object()


def resolve_model_path(path: str) -> str:
    if is_builtin(path):
        return str(builtin_path(path))
    local = Path(path).expanduser()
    if path.startswith((".", "/", "~")) and not local.exists():
        raise UserError(f"model.path: {path} does not exist")
    return str(local) if local.exists() else path


@dataclass(frozen=True)
class StopRule:
    """Where an output ends: at an end-of-output token, or (Harmony) at the `<|end|>` that closes a final message."""

    eos_ids: frozenset[int]
    end_id: int | None = None
    final_header: tuple[int, ...] = ()  # `<|channel|>final<|message|>` as the model writes it; () = no such stop

    def length(self, tokens: Sequence[int]) -> int | None:
        """Length of the output up to and including its stop token; None when it has not stopped."""
        in_final = False
        width = len(self.final_header)
        for i, token in enumerate(tokens):
            if token in self.eos_ids or (in_final and token == self.end_id):
                return i + 1
            if width and token == self.final_header[-1] and tuple(tokens[max(0, i - width + 1):i + 1]) == self.final_header:
                in_final = True
        return None

    def entered_final(self, tokens: Sequence[int]) -> bool:
        """The output has opened its final message (its `<|end|>` stops it from here on)."""
        width = len(self.final_header)
        return bool(width) and any(tuple(tokens[i:i + width]) == self.final_header
                                   for i, token in enumerate(tokens) if token == self.final_header[0])

    def message_closed(self, tokens: Sequence[int]) -> bool:
        """The output ends with an `<|end|>` that closes a message other than the final one: more follows."""
        return bool(tokens) and self.end_id is not None and tokens[-1] == self.end_id and self.length(tokens) is None


class ChatRenderer:
    def __init__(self, path: str, revision: str | None, trust_remote_code: bool, chat_template_kwargs: dict[str, Any],
                 unchecked_kwargs: Sequence[str] = ()):
        from transformers import AutoTokenizer

        self.path = resolve_model_path(path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"model.path: cannot load a tokenizer from {path!r} ({str(e).splitlines()[0]}); "
                            "check the path or hub id, HF_TOKEN for gated models, and the network or HF cache") from None
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        if not template:
            raise UserError(f"model.path: the tokenizer of {path!r} has no chat template; the harness renders every "
                            "prompt with the model's own template, so use a chat model or add chat_template.jinja")
        self.tokenizer.padding_side = "left"
        self.template = template
        self.template_hash = text_hash(template)
        self.kwargs = chat_template_kwargs
        self._clock_formats = sorted({m.group(2) for m in _CLOCK_FORMAT.finditer(template)})
        vocab = self.tokenizer.get_vocab()
        self.special = {m: vocab[m] for m in HARMONY_MARKERS if m in vocab}
        self.special_tokens = sorted({t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special})
        self._prompt_hashes: dict[str, str] = {}
        self._check_kwargs(set(unchecked_kwargs))

    # ---------------------------------------------------------------- rendering

    def _render(self, messages: list[dict[str, str]], kwargs: dict[str, Any], clock: str | None = None) -> str:
        """Render with `kwargs`; the template's clock reads `clock` (default: the kwargs' date, else today)."""
        clock = clock or kwargs.get(DATE_KWARG)
        template, extra = self.template, {}
        if clock is not None:
            day = dt.date.fromisoformat(clock)
            template, extra = _CLOCK + self.template, {_CLOCK_VAR: {f: day.strftime(f) for f in self._clock_formats}}
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      chat_template=template, **kwargs, **extra)
        except TypeError as e:
            raise UserError(f"model.chat_template_kwargs: the chat template rejected them ({e})") from None
        except (jinja2.TemplateError, ValueError) as e:  # includes raise_exception() inside the template
            first_line = (str(e).splitlines() or [""])[0]
            raise UserError(f"model.chat_template_kwargs: the chat template failed to render ({first_line})") from None

    def render(self, messages: list[dict[str, str | None]]) -> str:
        # An earlier turn without an answer (content null) is an empty assistant message to a chat template.
        messages = [{**m, "content": "" if m["content"] is None else m["content"]} for m in messages]
        return self._render(messages, self.kwargs)

    def encode(self, messages: list[dict[str, str | None]]) -> tuple[list[int], str]:
        """The prompt's token ids and their hash (the prompt's identity in generation keys)."""
        ids = self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]
        digest = content_key("prompt-ids", ids)
        self._prompt_hashes[content_key(messages)] = digest
        return ids, digest

    def prompt_hash(self, messages: list[dict[str, str | None]]) -> str:
        return self._prompt_hashes.get(content_key(messages)) or self.encode(messages)[1]

    # ---------------------------------------------------------------- checks at the start of a run

    def _check_kwargs(self, unchecked: set[str]) -> None:
        """Every configured kwarg must change the rendering, and the conversation date must reach the prompt."""
        unknown = sorted(unchecked - set(self.kwargs))
        if unknown:
            raise UserError(f"model.unchecked_template_kwargs: '{unknown[0]}' is not among model.chat_template_kwargs")
        date = self.kwargs.get(DATE_KWARG)
        if date is not None and not _is_iso_date(date):
            raise UserError(f"model.chat_template_kwargs.{DATE_KWARG}: {date!r} is not a YYYY-MM-DD date")
        base = self._render(_PROBE, self.kwargs)
        for key, value in self.kwargs.items():
            if key in unchecked:
                continue
            if not any(self._renders_differently(base, key, other) for other in _other_values(key, value)):
                raise UserError(f"model.chat_template_kwargs.{key}: the chat template renders the same prompt whatever "
                                f"its value (unknown to the template, or misspelt?); fix or remove it, or list it in "
                                f"model.unchecked_template_kwargs if the template reads it only in cases not probed here")
        if date is None:
            if self._render(_PROBE, self.kwargs, "2001-02-03") != self._render(_PROBE, self.kwargs, "2002-03-04"):
                print(f"WARNING: the chat template renders today's date into every prompt; set "
                      f"model.chat_template_kwargs.{DATE_KWARG} (YYYY-MM-DD) so prompts do not change from day to day",
                      file=sys.stderr)

    def _renders_differently(self, base: str, key: str, other: Any) -> bool:
        kwargs = {k: v for k, v in self.kwargs.items() if k != key}
        if other is not _ABSENT:
            kwargs[key] = other
        try:
            return self._render(_PROBE, kwargs) != base
        except UserError:
            return True  # the template validates this kwarg (it refused another value): it reads it

    # ---------------------------------------------------------------- output

    def eos_ids(self, configured: Any = None) -> list[int]:
        """End-of-output ids: the model's generation config, the tokenizer's eos, and Harmony's return/call."""
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        ids.update(self.special[m] for m in ("<|return|>", "<|call|>") if m in self.special)
        return sorted(ids)

    def stop_rule(self, harmony: bool, configured_eos: Any = None) -> StopRule:
        eos = frozenset(self.eos_ids(configured_eos))
        if not harmony or not {"<|channel|>", "<|message|>", "<|end|>"} <= set(self.special):
            return StopRule(eos)
        header = self.tokenizer("<|channel|>final<|message|>", add_special_tokens=False)["input_ids"]
        return StopRule(eos, self.special["<|end|>"], tuple(header))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)


def _is_iso_date(value: Any) -> bool:
    try:
        return isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None \
            and dt.date.fromisoformat(value) is not None
    except ValueError:
        return False


def _other_values(key: str, value: Any) -> list[Any]:
    """Values to render instead of `value`: absent, and one of the same type that differs."""
    if key == DATE_KWARG:
        return [_ABSENT, (dt.date.fromisoformat(str(value)) + dt.timedelta(days=1)).isoformat()]
    if isinstance(value, bool):
        return [_ABSENT, not value]
    if isinstance(value, (int, float)):
        return [_ABSENT, value + 1]
    if isinstance(value, str):
        return [_ABSENT, value + "-probe", ""]
    if isinstance(value, list):
        return [_ABSENT, value + ["probe"]]
    return [_ABSENT, "probe"]
