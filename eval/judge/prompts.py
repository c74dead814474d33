"""Judge prompt sets in the upstream file formats, and the check that a set has the templates a task needs (which
templates a metric kind needs is the kind's: `eval/kinds/`).

Formats:
- `llm_jp_judge`: llm-jp-judge prompt YAML. Either a mapping of named templates (MT-Bench: `single-v1`, … each with
  `regex`, `prompt_template`, `system_prompt`) or one template file (`regex`, `prompt_template` /
  `prompt_template_with_ref` / `prompt_template_wo_ref`, optional `system_prompt`, `metrics`).
- `fastchat`: FastChat `judge_prompts.jsonl` (`name`, `type`, `system_prompt`, `prompt_template`, `output_format`):
  its single-grade templates (`[[rating]]`) and its pairwise ones that ask for `[[A]]`, `[[B]]` or `[[C]]`.

Templates are filled with `str.format`, exactly as upstream does.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import yaml_limits
from ..errors import UserError
from ..sources import read_jsonl

# FastChat llm_judge's rating patterns for single-answer grading (facts of its format): `[[x]]`, else `[x]`.
FASTCHAT_RATING_REGEX = r"\[\[(\d+\.?\d*)\]\]"
FASTCHAT_FALLBACK_REGEX = r"\[(\d+\.?\d*)\]"
# FastChat's pairwise verdicts (output format `[[A]]`): `[[A]]`, `[[B]]` or `[[C]]` (a tie) anywhere in the reply.
FASTCHAT_VERDICT_REGEX = r"\[\[([ABC])\]\]"
FASTCHAT_READ: dict[str | None, tuple[str | None, str]] = {"single": ("[[rating]]", FASTCHAT_RATING_REGEX), "pairwise": ("[[A]]", FASTCHAT_VERDICT_REGEX)}

SINGLE_FILE_KEYS = {"prompt_template": "default", "prompt_template_with_ref": "with_ref", "prompt_template_wo_ref": "wo_ref"}


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    system_prompt: str | None
    regex: str
    criteria: tuple[str, ...] | None = None

    @property
    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.text) if f}

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(self.regex)

    def render(self, list_repr: bool = False, **values: str | None) -> str:
        if list_repr:
            # llm-jp-judge v2.0.0 passes one-element lists to str.format (since its PR #49): ['…'], [None].
            return self.text.format(**{k: [v] for k, v in values.items()})
        return self.text.format(**values)


@dataclass(frozen=True)
class PromptSet:
    label: str
    path: str
    format: str
    sha256: str
    templates: dict[str, Template]

    def get(self, name: str) -> Template:
        if name not in self.templates:
            raise UserError(f"{self.label}: {self.path} has no template {name!r} (has {', '.join(sorted(self.templates))})")
        return self.templates[name]


def _template(label: str, path: Path, name: str, text: Any, system: Any, regex: Any, criteria: Any = None) -> Template:
    where = f"{label}: {path}: {name}"
    if not isinstance(text, str):
        raise UserError(f"{where}: the prompt template is missing or not text")
    if system is not None and not isinstance(system, str):
        raise UserError(f"{where}: system_prompt is not text")
    if not isinstance(regex, str) or not regex:
        raise UserError(f"{where}: regex is missing")
    try:
        compiled = re.compile(regex)
    except re.error as e:
        raise UserError(f"{where}: regex {regex!r} does not compile ({e})") from None
    if compiled.groups < 1:
        raise UserError(f"{where}: regex {regex!r} has no capture group for the score")
    try:
        list(string.Formatter().parse(text))
    except ValueError as e:
        raise UserError(f"{where}: template is not a valid format string ({e})") from None
    if criteria is not None and (not isinstance(criteria, list) or not all(isinstance(c, str) for c in criteria)):
        raise UserError(f"{where}: metrics must be a list of criterion names")
    return Template(name, text, system, regex, tuple(criteria) if criteria else None)


def read_prompt_set(path: Path, fmt: str, label: str) -> PromptSet:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8")
    templates: dict[str, Template] = {}
    if fmt == "llm_jp_judge":
        try:
            data = yaml_limits.load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{label}: {path}: YAML syntax error ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{label}: {path}: expected a YAML mapping")
        if "regex" in data:
            for key, name in SINGLE_FILE_KEYS.items():
                if key in data:
                    templates[name] = _template(label, path, key, data[key], data.get("system_prompt"), data["regex"], data.get("metrics"))
        else:
            for name, entry in data.items():
                if not isinstance(entry, dict):
                    raise UserError(f"{label}: {path}: entry {name!r} is not a mapping")
                templates[name] = _template(label, path, name, entry.get("prompt_template"), entry.get("system_prompt"), entry.get("regex"))
    elif fmt == "fastchat":
        for _, entry in read_jsonl(path, label):
            output_format, regex = FASTCHAT_READ.get(entry.get("type"), (None, ""))
            if output_format is None or entry.get("output_format", output_format) != output_format:
                continue  # a format no kind reads (e.g. pairwise scores [[rating_a,rating_b]])
            templates[entry["name"]] = _template(
                label, path, entry["name"], entry.get("prompt_template"), entry.get("system_prompt"), regex
            )
    else:
        raise UserError(f"{label}: unknown prompt format {fmt!r} (use llm_jp_judge or fastchat)")
    if not templates:
        raise UserError(f"{label}: {path} contains no judge template")
    return PromptSet(label, str(path), fmt, digest, templates)


def check_fits(prompts: PromptSet, needs: dict[str, set[str]], criteria_needed: bool) -> None:
    for name, fields in needs.items():
        template = prompts.get(name)
        missing = sorted(fields - template.fields)
        extra = sorted(template.fields - fields)
        if missing:
            raise UserError(f"{prompts.label}: {prompts.path}: template {name!r} lacks the placeholder(s) {', '.join('{' + m + '}' for m in missing)}")
        if extra:
            raise UserError(f"{prompts.label}: {prompts.path}: template {name!r} uses {', '.join('{' + x + '}' for x in extra)}, which this task does not fill")
        if criteria_needed and not template.criteria:
            raise UserError(f"{prompts.label}: {prompts.path}: template {name!r} needs a 'metrics' list of criteria")
