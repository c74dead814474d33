"""The model's prompts, shared by the local engines (hf, vllm): decide the reasoning format and the renderer, render,
check the template kwargs, fix the conversation date, hash the exact prompt, and find where an output stops.

Decided once when a run starts (`ModelFormat`, printed and stored in the manifest):
- the reasoning format: `auto` picks Harmony when the tokenizer has the Harmony tokens, `think` when the template or
  the vocabulary uses the `<think>` marker, `none` otherwise; a configured format the tokenizer cannot write stops the
  run with one line.
- the renderer: the model's Jinja chat template, or for gpt-oss (`model_type: gpt_oss`) the openai-harmony encoding as
  vLLM's OpenAI server renders it — the route llm-jp-judge generated its gpt-oss rows through. The compat profile
  picks for gpt-oss (`gpt_oss_renderer`), `model.prompt_renderer` overrides. vLLM 0.34.0 (its gpt-oss chat path,
  `harmony_utils`): a system message of harmony's default content with the request's reasoning effort and the date
  (`$VLLM_SYSTEM_START_DATE` or today; here `conversation_start_date`), a leading system message's text as the
  developer message's instructions, an assistant message with text as a final-channel message (one with empty or null
  content dropped), rendered for completion. The text is rendered here and tokenized by the model's own tokenizer, so
  no second vocabulary is needed on an offline node; tests prove it equal to openai-harmony's tokens.

The configured `conversation_start_date` is both passed to the template (templates such as llm-jp-4's read it) and
returned by the template's clock: a template that calls `strftime_now(...)` (gpt-oss's does) gets the configured date
instead of today's. transformers rebuilds every template kwarg as plain data, so a Python function cannot be passed
in; the clock is a Jinja macro placed before the template, which shadows transformers' `strftime_now` global and
answers the formats the template asks for with the configured date.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..chat import HARMONY_MARKERS
from ..compat import Profile
from ..config import HFModel, ReasoningFormat, VLLMModel
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
EFFORT_KWARG = "reasoning_effort"
HARMONY_EFFORTS = ("low", "medium", "high")  # what a Harmony system message can say (openai-harmony, vLLM)
_HARMONY_TOKENS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>")
# openai-harmony's default system content (model identity, knowledge cutoff, required channels), as vLLM sends it.
_HARMONY_SYSTEM = ("<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
                   "Knowledge cutoff: 2024-06\nCurrent date: {date}\n\nReasoning: {effort}\n\n"
                   "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>")


def render_harmony_encoder(messages: Sequence[Mapping[str, str | None]], effort: str | None, date: str) -> str:
    """A conversation as vLLM's OpenAI server renders it for gpt-oss (openai-harmony), ready for the reply."""
    if messages and messages[0]["role"] in ("system", "developer"):
        instructions, rest = messages[0]["content"], messages[1:]
    else:
        instructions, rest = None, messages
    parts = [_HARMONY_SYSTEM.format(date=date, effort=effort or "medium")]
    if instructions:
        parts.append(f"<|start|>developer<|message|># Instructions\n\n{instructions}<|end|>")
    for message in rest:
        role, content = message["role"], message["content"]
        if role == "user":
            parts.append(f"<|start|>user<|message|>{content or ''}<|end|>")
        elif role == "assistant":
            if content:  # vLLM drops an assistant message with empty or null content
                parts.append(f"<|start|>assistant<|channel|>final<|message|>{content}<|end|>")
        else:
            raise ValueError(f"the harmony encoder renders system, user and assistant messages, not {role!r}")
    return "".join(parts) + "<|start|>assistant"


@dataclass(frozen=True)
class ModelFormat:
    """What was decided about the model's prompts and outputs when the run started, and why."""

    reasoning: ReasoningFormat  # resolved: harmony, think or none
    reasoning_why: str
    renderer: str  # chat_template | harmony_encoder
    renderer_why: str

    def describe(self) -> str:
        return (f"reasoning format: {self.reasoning.format} ({self.reasoning_why}); prompts: {self.renderer} "
                f"({self.renderer_why})")

    def facts(self) -> dict[str, str]:
        return {"reasoning_format": self.reasoning.format, "reasoning_format_why": self.reasoning_why,
                "prompt_renderer": self.renderer, "prompt_renderer_why": self.renderer_why}


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
    """`reasoning`: the configured format (`auto` is decided here); `renderer`: `model.prompt_renderer`;
    `gpt_oss_renderer`: the compat profile's renderer for gpt-oss models."""

    def __init__(self, path: str, revision: str | None, trust_remote_code: bool, chat_template_kwargs: dict[str, Any],
                 unchecked_kwargs: Sequence[str] = (), reasoning: ReasoningFormat | None = None, renderer: str = "auto",
                 gpt_oss_renderer: str = "harmony_encoder"):
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
        self.reasoning, reasoning_why = self._reasoning_format(reasoning or ReasoningFormat(), path)
        self.renderer, renderer_why = self._renderer(renderer, gpt_oss_renderer, revision)
        self.format = ModelFormat(self.reasoning, reasoning_why, self.renderer, renderer_why)
        self._check_kwargs(set(unchecked_kwargs))

    # ---------------------------------------------------------------- decisions at the start of a run

    def _reasoning_format(self, configured: ReasoningFormat, path: str) -> tuple[ReasoningFormat, str]:
        """The format the model writes: `auto` decided from the tokenizer; a configured one it cannot write refused."""
        vocab = self.tokenizer.get_vocab()
        missing = [token for token in _HARMONY_TOKENS if token not in vocab]
        if configured.format == "auto":
            if not missing:
                return configured.model_copy(update={"format": "harmony"}), "auto: the tokenizer has the Harmony tokens"
            markers = (configured.think_start, configured.think_end)
            if any(marker in self.template or marker in vocab for marker in markers):
                return (configured.model_copy(update={"format": "think"}),
                        f"auto: the chat template or the vocabulary uses {'/'.join(markers)}")
            return (configured.model_copy(update={"format": "none"}),
                    f"auto: no Harmony tokens and no {'/'.join(markers)} in the tokenizer or its template")
        if configured.format == "harmony" and missing:
            raise UserError(f"model.reasoning.format: harmony, but the tokenizer of {path!r} has no {', '.join(missing)} "
                            "token, so the model cannot write Harmony; remove the key (auto decides from the tokenizer) "
                            "or set it to none or think")
        if configured.format == "think":
            for key, marker in (("think_start", configured.think_start), ("think_end", configured.think_end)):
                written = self.tokenizer.decode(self.tokenizer(marker, add_special_tokens=False)["input_ids"])
                if written != marker:
                    raise UserError(f"model.reasoning.{key}: the tokenizer of {path!r} cannot write {marker!r} (it "
                                    f"comes out as {written!r}); set the model's own marker, or format: none")
        return configured, "configured"

    def _renderer(self, configured: str, gpt_oss_renderer: str, revision: str | None) -> tuple[str, str]:
        """The model's template, or for gpt-oss the renderer of the compat profile (or the one configured)."""
        if configured == "harmony_encoder" and self.reasoning.format != "harmony":
            raise UserError("model.prompt_renderer: harmony_encoder renders Harmony prompts, but this model does not "
                            f"write Harmony (reasoning format {self.reasoning.format}); use chat_template or auto")
        if configured != "auto":
            return configured, "configured"
        if _model_type(self.path, revision) == "gpt_oss":
            return gpt_oss_renderer, ("gpt-oss as vLLM's OpenAI server renders it, the compat profile's choice"
                                      if gpt_oss_renderer == "harmony_encoder"
                                      else "gpt-oss with its own template, the compat profile's choice")
        return "chat_template", "the model's own template"

    # ---------------------------------------------------------------- rendering

    def _render(self, messages: list[dict[str, str]], kwargs: dict[str, Any], clock: str | None = None) -> str:
        """Render with `kwargs`; the template's clock reads `clock` (default: the kwargs' date, else today)."""
        clock = clock or kwargs.get(DATE_KWARG)
        if self.renderer == "harmony_encoder":  # vLLM reads the effort and its start date, no other template kwarg
            date = clock or dt.date.today().isoformat()
            return render_harmony_encoder(messages, kwargs.get(EFFORT_KWARG), date)
        template, extra = self.template, dict[str, Any]()
        if clock is not None:
            day = dt.date.fromisoformat(clock)
            template, extra = _CLOCK + self.template, {_CLOCK_VAR: {f: day.strftime(f) for f in self._clock_formats}}
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      chat_template=template, **kwargs, **extra)
        except TypeError as e:
            raise UserError(f"model.chat_template_kwargs: the chat template rejected them ({e})") from None
        except (jinja2.TemplateError, ValueError) as e:  # includes raise_exception() inside the template
            first_line = (str(e).splitlines() or [""])[0]
            raise UserError(f"model.chat_template_kwargs: the chat template failed to render ({first_line})") from None
        assert isinstance(text, str)  # not tokenized: the text
        return text

    def render(self, messages: list[dict[str, str | None]]) -> str:
        # An earlier turn without an answer (content null) is an empty assistant message to a chat template.
        filled = [{key: "" if value is None else value for key, value in m.items()} for m in messages]
        return self._render(filled, self.kwargs)

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
        effort = self.kwargs.get(EFFORT_KWARG)
        if self.reasoning.format == "harmony" and effort is not None and effort not in HARMONY_EFFORTS:
            raise UserError(f"model.chat_template_kwargs.{EFFORT_KWARG}: {effort!r} is not a reasoning effort a Harmony "
                            f"model knows; use one of {', '.join(HARMONY_EFFORTS)}")
        base = self._render(_PROBE, self.kwargs)
        for key, value in self.kwargs.items():
            if key in unchecked:
                continue
            if not any(self._renders_differently(base, key, other) for other in _other_values(key, value)):
                what, why = (("the chat template", "unknown to the template, or misspelt?")
                             if self.renderer == "chat_template" else
                             ("the harmony encoder", f"vLLM's gpt-oss prompts read only {EFFORT_KWARG} and {DATE_KWARG}"))
                raise UserError(f"model.chat_template_kwargs.{key}: {what} renders the same prompt whatever its value "
                                f"({why}); fix or remove it, or list it in model.unchecked_template_kwargs if the "
                                "template reads it only in cases not probed here")
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

    def stop_rule(self, configured_eos: Any = None) -> StopRule:
        """Harmony models stop at the `<|end|>` of their final message too; every model at its end-of-output ids."""
        eos = frozenset(self.eos_ids(configured_eos))
        if self.reasoning.format != "harmony":
            return StopRule(eos)
        header = self.tokenizer("<|channel|>final<|message|>", add_special_tokens=False)["input_ids"]
        return StopRule(eos, self.special["<|end|>"], tuple(header))

    def decode(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        assert isinstance(text, str)  # one sequence: one text
        return text


def _model_type(path: str, revision: str | None) -> str | None:
    """The `model_type` of the model's config.json (vLLM renders by it), or None where there is none to read."""
    from transformers.utils import cached_file

    try:
        file = cached_file(path, "config.json", revision=revision, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        return json.loads(Path(file).read_text(encoding="utf-8")).get("model_type") if file else None
    except (OSError, ValueError):
        return None


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


class RendersLocally:
    """A backend that renders every prompt itself with the model's template (hf, vllm): its renderer, made from the
    model's config at start-up, and what keys its answers — the model's identity and the hash of each exact prompt
    (the rendered token ids)."""

    name: str

    def __init__(self, cfg: HFModel | VLLMModel, profile: Profile):
        self.cfg = cfg
        self.chat = ChatRenderer(cfg.path, cfg.revision, cfg.trust_remote_code, cfg.chat_template_kwargs,
                                 cfg.unchecked_template_kwargs, cfg.reasoning, cfg.prompt_renderer, profile.gpt_oss_renderer)
        self.format = self.chat.format

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.cfg.path, "revision": self.cfg.revision, "dtype": self.cfg.dtype,
                "template": self.chat.template_hash, "chat_template_kwargs": self.cfg.chat_template_kwargs,
                "reasoning": self.chat.reasoning.model_dump()}

    def prompt_hash(self, messages: list[dict[str, str | None]]) -> str:
        return self.chat.prompt_hash(messages)
