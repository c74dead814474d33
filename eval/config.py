"""The run configuration: YAML file → validated `RunConfig`, with `--set key=value` overrides.

Every mistake becomes a one-line `UserError` naming the file and the key.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import redact, yaml_limits
from .compat import DEFAULT as DEFAULT_COMPAT
from .compat import Profile, ProfileName, profile
from .errors import UserError
from .task_files import task_names
from .yaml_limits import read_yaml

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Upper bounds: far above any real use, low enough that a typo cannot exhaust memory or open a million sockets.
MAX_ROUNDS = 100
MAX_CONCURRENCY = 1024
MAX_RETRIES = 20
MAX_TOKENS = 1_048_576
MAX_SECONDS = 86_400.0
MAX_REPLY_BYTES = 1 << 30
RUN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReasoningFormat(Strict):
    """How the model writes its reasoning: Harmony channels, `<think>` markers, or not at all. `auto` (the default)
    is decided from the tokenizer when a local engine starts (`backends/template.py`)."""

    format: Literal["auto", "harmony", "think", "none"] = "auto"
    think_start: str = "<think>"
    think_end: str = "</think>"


# The reasoning efforts OpenAI's chat completions API accepts (`reasoning_effort`; a Harmony model accepts fewer, see
# backends/template.py).
API_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
ApiReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class _Generator(Strict):
    path: str = Field(description="hub id, local directory, or builtin:<name>")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    unchecked_template_kwargs: list[str] = Field(
        default_factory=list, description="chat_template_kwargs the start-of-run check lets through although the "
                                          "template renders the same with any value of them (local engines)")
    reasoning: ReasoningFormat = Field(default_factory=ReasoningFormat)

    @field_validator("chat_template_kwargs")
    @classmethod
    def _date_as_text(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        # An unquoted YAML date is a `date`; the template needs the YYYY-MM-DD text.
        date = kwargs.get("conversation_start_date")
        if isinstance(date, datetime.date):
            kwargs = {**kwargs, "conversation_start_date": date.isoformat()}
        return kwargs


def _yaml_switch(on: str, off: str) -> BeforeValidator:
    """YAML 1.1 reads `on`/`off` as booleans; accept them for settings spelled with those words."""
    return BeforeValidator(lambda value: on if value is True else off if value is False else value)


CompileMode = Annotated[Literal["auto", "on", "off"], _yaml_switch("on", "off")]
CacheMode = Annotated[Literal["read_write", "read", "off"], _yaml_switch("read_write", "off")]


PromptRenderer = Literal["auto", "chat_template", "harmony_encoder"]
_RENDERER_HELP = ("how prompts are rendered: the model's chat template, or the openai-harmony encoding as vLLM's "
                  "OpenAI server renders gpt-oss; auto = the compat profile's choice for gpt-oss models, the chat "
                  "template for every other model")


class HFModel(_Generator):
    backend: Literal["hf"]
    prompt_renderer: PromptRenderer = Field("auto", description=_RENDERER_HELP)
    revision: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    trust_remote_code: bool = False
    device: str = "auto"
    engine: Literal["auto", "static", "paged", "dynamic"] = "auto"
    compile: CompileMode = "auto"
    memory_fraction: float = Field(0.9, gt=0, le=1)
    attn_implementation: str | None = None


class VLLMModel(_Generator):
    backend: Literal["vllm"]
    prompt_renderer: PromptRenderer = Field("auto", description=_RENDERER_HELP)
    revision: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    trust_remote_code: bool = False
    tensor_parallel_size: int = Field(1, ge=1, le=1024)
    data_parallel_size: int = Field(1, ge=1, le=1024)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=1, le=MAX_TOKENS)


class OpenAIModel(_Generator):
    backend: Literal["openai"]
    base_urls: list[str] = Field(min_length=1)
    api_key_env: str | None = None
    reasoning_effort: ApiReasoningEffort | None = Field(
        None, description="the request's `reasoning_effort` field (a hosted reasoning model such as gpt-5.4); "
                          "chat_template_kwargs.reasoning_effort (a served model's template reads it) is sent here too")
    concurrency: int = Field(32, ge=1, le=MAX_CONCURRENCY)
    timeout_s: float = Field(3600, gt=0, le=MAX_SECONDS)
    max_retries: int = Field(3, ge=0, le=MAX_RETRIES)
    max_reply_bytes: int = Field(16 << 20, ge=1024, le=MAX_REPLY_BYTES,
                                 description="a reply larger than this is dropped unread: the answer is a failed generation")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return v if v is None else _check_env_name(v)

    @model_validator(mode="after")
    def _one_effort(self) -> OpenAIModel:
        templated = self.chat_template_kwargs.get("reasoning_effort")
        if templated is not None and templated not in API_REASONING_EFFORTS:
            raise ValueError(f"chat_template_kwargs.reasoning_effort {templated!r} is also sent as the request's "
                             f"reasoning_effort, which takes one of {', '.join(API_REASONING_EFFORTS)}")
        if templated is not None and self.reasoning_effort not in (None, templated):
            raise ValueError(f"reasoning_effort {self.reasoning_effort!r} differs from chat_template_kwargs."
                             f"reasoning_effort {templated!r}; give one of them")
        return self
    @field_validator("base_urls")
    @classmethod
    def _no_credentials(cls, v: list[str]) -> list[str]:
        for url in v:
            _check_address(url)
        return v


class ReplayModel(Strict):
    backend: Literal["replay"]
    path: str = Field(description="a generations.jsonl of another run, or a FastChat model_answer .jsonl")
    format: Literal["auto", "harness", "fastchat"] = "auto"
    source_model: dict[str, Any] | None = Field(
        None, description="the model config of the run that wrote these answers (set by `rejudge`); tables name "
                          "this model, so a re-judged row keeps its label")

    @field_validator("source_model")
    @classmethod
    def _names_a_model(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and not isinstance(v.get("path"), str):
            raise ValueError("needs at least 'path' (the model's hub id or name), e.g. {path: llm-jp/llm-jp-4-8b-thinking}")
        return v


ModelConfig = Annotated[HFModel | VLLMModel | OpenAIModel | ReplayModel, Field(discriminator="backend")]


class PairwiseSources(Strict):
    """What a pairwise run compares (`python -m eval pairwise RUN_A RUN_B`): its own answers are run A's (the replay
    `model`); these are run B's, and how the two runs met."""

    run_a: str = Field(description="run A's folder, as given")
    run_b: str = Field(description="run B's folder, as given")
    answers_b: str = Field(description="run B's answers to the questions both runs have (the folder's answers_b.jsonl)")
    model_b: dict[str, Any] = Field(description="the model config of the run that wrote B's answers")
    rounds_a: int = Field(ge=1, description="the rounds run A planned")
    rounds_b: int = Field(ge=1, description="the rounds run B planned")
    only_in_a: dict[str, int] = Field(default_factory=dict, description="per task, questions run B lacks")
    only_in_b: dict[str, int] = Field(default_factory=dict, description="per task, questions run A lacks")
    skipped: dict[str, str] = Field(default_factory=dict, description="tasks of both runs not compared, and why")


class GenerationConfig(Strict):
    max_new_tokens: int = Field(16384, ge=1, le=MAX_TOKENS)
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=65536)] = "auto"
    greedy: bool = Field(False, description="greedy decoding for every task: temperature 0 (category temperatures "
                                            "included) and no top_p; part of every generation key")


class Price(Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class AzureSettings(Strict):
    endpoint: str
    api_version: str = "2024-10-21"
    deployment: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        return _check_address(v)


class MockSettings(Strict):
    """Behaviour of the built-in mock server (`judge.mock: true` or `python -m eval mock-judge`)."""

    seed: int = 0
    latency_s: float = Field(0.0, ge=0, le=MAX_SECONDS)
    latency_jitter_s: float = Field(0.0, ge=0, le=MAX_SECONDS)
    rate_429: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0, le=MAX_SECONDS)
    rate_500: float = Field(0.0, ge=0, le=1)
    rate_503: float = Field(0.0, ge=0, le=1)
    rate_hang: float = Field(0.0, ge=0, le=1)
    hang_s: float = Field(30.0, ge=0, le=MAX_SECONDS)
    rate_drop: float = Field(0.0, ge=0, le=1)
    rate_malformed: float = Field(0.0, ge=0, le=1)
    rate_empty: float = Field(0.0, ge=0, le=1)
    rate_content_filter: float = Field(0.0, ge=0, le=1)
    rate_length: float = Field(0.0, ge=0, le=1)
    batch_polls_to_complete: int = Field(2, ge=0, le=10_000_000)
    score_shift: int = Field(0, ge=-100, le=100, description="add this to every score (clipped to the scale): a second judge that "
                                            "differs from the first by a known rule")
    pairwise_rule: Literal["draw", "longer", "position_a"] = Field(
        "draw", description="how the mock picks between two answers (pairwise): a draw from the prompt, the longer answer "
                            "of the turn judged (a tie when equal), or always the answer in position A")


class JudgeConfig(Strict):
    model: str
    provider: Literal["openai", "azure"] = "openai"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    azure: AzureSettings | None = None
    mock: bool = False
    mock_settings: MockSettings = Field(default_factory=MockSettings)
    mode: Literal["sync", "batch"] = "sync"
    concurrency: int = Field(32, ge=1, le=MAX_CONCURRENCY)
    requests_per_minute: float | None = Field(None, gt=0, le=1e7)
    tokens_per_minute: float | None = Field(None, gt=0, le=1e10)
    max_retries: int = Field(6, ge=0, le=MAX_RETRIES)
    timeout_s: float = Field(300, gt=0, le=MAX_SECONDS)
    max_reply_bytes: int = Field(4 << 20, ge=1024, le=MAX_REPLY_BYTES,
                                 description="a judge reply larger than this is dropped unread (a malformed reply)")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    cache: CacheMode = "read_write"
    cache_path: str | None = None
    shared_budget: str | None = Field(
        None, description="a file (SQLite, on a local disk) through which every run naming it shares one judge "
                          "budget: requests_per_minute, tokens_per_minute, concurrency and budget_usd then hold for the "
                          "sum of their judge calls (`card` sets it for its rows)")
    budget_usd: float | None = Field(None, gt=0)
    prices: dict[str, Price] = Field(default_factory=dict)
    batch_discount: float = Field(0.5, ge=0, le=1)
    batch_poll_s: float = Field(30.0, gt=0, le=MAX_SECONDS)
    estimate_answer_tokens: int = Field(800, ge=1, le=MAX_TOKENS)
    estimate_output_tokens: int = Field(600, ge=1, le=MAX_TOKENS)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        return _check_env_name(v)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        return v if v is None else _check_address(v)

    @model_validator(mode="after")
    def _complete(self) -> JudgeConfig:
        if self.provider == "azure" and self.azure is None:
            raise ValueError("provider 'azure' needs judge.azure.endpoint (and api_version, deployment)")
        if self.budget_usd is not None and not any(self.model.startswith(name) for name in self.prices):
            raise ValueError(f"budget_usd needs a price for {self.model} in judge.prices (USD per million tokens)")
        return self


class PublishedRow(Strict):
    """A row of the published table (`eval/resources/model_card.csv`): its `model` and `reasoning_effort` cells."""

    model: str = Field(min_length=1)
    reasoning_effort: str | None = None


class RunConfig(Strict):
    name: str
    model: ModelConfig
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    compat: ProfileName = Field(DEFAULT_COMPAT, description="llm-jp-judge-2.0.0 (upstream's behaviour) or strict")
    label: str | None = Field(None, min_length=1, max_length=200, description="the table's row name (default: the model's)")
    published: Literal["none"] | PublishedRow | None = Field(
        None, description="the published row this run reproduces: {model, reasoning_effort}, or none; unset: the row "
                          "of the model's identity (hub id, snapshot path, config.json, served model name)")
    rounds: int = Field(3, ge=1, le=MAX_ROUNDS)
    seed: int = Field(1234, ge=-(2**63), lt=2**63)
    tasks: list[str] = Field(min_length=1)
    variant: Literal["full", "sample"] = "full"
    task_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    asset_mirrors: dict[str, str] = Field(default_factory=dict)
    judge: JudgeConfig
    output_dir: str = "results"
    pairwise: PairwiseSources | None = Field(None, description="set by `pairwise`: the answers this run's answers are "
                                                               "compared with, each pair in both orders")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not RUN_NAME.match(v):
            raise ValueError("must be a plain folder name (letters, digits, '.', '_', '-', not starting with '.'); "
                             "it names the run directory under output_dir")
        return v

    @model_validator(mode="after")
    def _batch_size_is_hf_only(self) -> RunConfig:
        if self.generation.batch_size != "auto" and self.model.backend != "hf":
            raise ValueError("generation.batch_size applies to the hf backend only; leave it 'auto'")
        return self

    @property
    def profile(self) -> Profile:
        return profile(self.compat)

    def snapshot(self) -> dict[str, Any]:
        """The resolved config as written to `config.yaml`: plain data, with no secret in it (keys live in env; a
        credential in a server address is masked)."""
        redact.register_config(self)
        return redact.data(self.model_dump(mode="json"))

    def identity(self) -> dict[str, Any]:
        """The settings that stored answers and judgments are made from, by config key: continuing a run directory
        made with other values would replace them, which needs `--force` (`resume.refusal`). Settings that change no
        record (concurrency, rate limits, retries, rounds, tasks, output) are not here."""
        model = self.model
        ident: dict[str, Any] = {"model.backend": model.backend, "model.path": model.path}
        if not isinstance(model, ReplayModel):
            ident.update({"model.revision": getattr(model, "revision", None), "model.dtype": getattr(model, "dtype", None),
                          "model.chat_template_kwargs": model.chat_template_kwargs,
                          "model.reasoning": model.reasoning.model_dump(),
                          "model.prompt_renderer": getattr(model, "prompt_renderer", None),
                          "model.reasoning_effort": getattr(model, "reasoning_effort", None)})
        ident.update({"generation.max_new_tokens": self.generation.max_new_tokens,
                      "generation.greedy": self.generation.greedy, "seed": self.seed,
                      "compat": self.compat, "variant": self.variant, "task_options": self.task_options,
                      "judge.model": self.judge.model, "judge.reasoning_effort": self.judge.reasoning_effort})
        return ident

    def identity_changes(self, stored: dict[str, Any] | None) -> list[str]:
        """The settings of `identity` that differ from a stored identity, as `key (old → new)`, leaves of mappings
        named one by one. A setting the stored identity does not hold (a run made before it was recorded) is not
        compared."""
        previous = {_LEGACY_IDENTITY.get(k, k): v for k, v in (stored or {}).items()}
        current = self.identity()
        return [change for key in sorted(set(previous) & set(current)) for change in _changes(key, previous[key], current[key])]


# Names of identity settings in run stores written before they were named by their config keys.
_LEGACY_IDENTITY = {"backend": "model.backend", "path": "model.path", "revision": "model.revision",
                    "chat_template_kwargs": "model.chat_template_kwargs", "judge_model": "judge.model"}
_UNSET = object()


def _changes(key: str, old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    if isinstance(old, dict) or isinstance(new, dict):  # a mapping that appeared or went: its leaves one by one
        old, new = ({} if v is _UNSET else v for v in (old, new))
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for k in sorted(set(old) | set(new), key=str)
                for change in _changes(f"{key}.{k}", old.get(k, _UNSET), new.get(k, _UNSET))]
    return [f"{key} ({_shown(old)} → {_shown(new)})"]


def _shown(value: Any) -> str:
    text = "unset" if value is _UNSET else json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "…"


def _check_address(url: str) -> str:
    """A server address without user-info: the HTTP library would send `user:pass` as Basic auth in place of the
    API key (and the server may echo it back). Keys come from the environment (api_key_env)."""
    if "@" in urlsplit(url).netloc:
        # Never echo the address: it holds a credential.
        raise ValueError("holds credentials (user:password@host); remove them and give the key through the "
                         "environment variable named by api_key_env")
    return url


def _check_env_name(v: str) -> str:
    if not ENV_NAME.match(v):
        # Never echo the value: a user may have pasted a key here.
        raise ValueError("must name an environment variable (e.g. OPENAI_API_KEY), not hold a key or URL")
    return v


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value, e.g. --set judge.concurrency=8")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {text!r}: the key is empty or malformed")
    try:
        value = yaml_limits.load(raw) if raw.strip() else ""
    except yaml_limits.YAMLLimitError as e:
        raise UserError(f"--set {key}: the value is refused ({e.problem})") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {'.'.join(path)}: '{part}' is not a mapping in the config")
        node = child
    node[path[-1]] = value


def format_validation_error(source: str, err: ValidationError, overrides: Sequence[str] = ()) -> str:
    first = err.errors()[0]
    # Drop the discriminated-union tag (e.g. 'hf') that pydantic inserts into the location.
    loc = [str(p) for p in first["loc"] if p not in ("hf", "vllm", "openai", "replay")]
    key = ".".join(loc) or "(top level)"
    origin = " (from --set)" if key in overrides else ""
    if first["type"] == "extra_forbidden":
        hint = _suggest(err, loc)
        return f"{source}: unknown key '{key}'{origin}{hint}"
    if first["type"] == "missing":
        return f"{source}: missing required key '{key}'"
    msg = first["msg"].removeprefix("Value error, ")
    shown = first.get("input")
    value = ""
    # An address is never echoed: it may carry a credential (user-info, a key in its query string).
    if isinstance(shown, (int, float, bool)) or (isinstance(shown, str) and "api_key" not in key and len(shown) < 60
                                                 and "://" not in shown):
        value = f" (got {shown!r})"
    return f"{source}: '{key}'{origin}: {msg}{value}"


def _suggest(err: ValidationError, loc: list[str]) -> str:
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    if part_models := _union_members(model):
        names = {n for m in part_models for n in m.model_fields}
    else:
        names = set(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(loc[-1], sorted(names), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    args = getattr(annotation, "__args__", ()) or ()
    members = []
    for a in args:
        inner = getattr(a, "__args__", None)
        for m in inner or (a,):
            if isinstance(m, type) and issubclass(m, BaseModel):
                members.append(m)
    return members


BUNDLED_CONFIGS = Path(__file__).resolve().parent / "resources" / "configs"


def config_path(argument: str | Path) -> Path:
    """The file a config argument names: the path itself when it exists, else the bundled config of that file name
    (so `configs/8b-medium.yaml`, `8b-medium.yaml` and `8b-medium` work from any directory, installed or not)."""
    path = Path(argument).expanduser()
    if path.exists() or path.is_absolute():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    bundled = BUNDLED_CONFIGS / name
    return bundled if bundled.is_file() else path


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    path = config_path(path)
    if not path.exists():
        bundled = ", ".join(sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml")))
        raise UserError(f"{path}: config file not found, and no bundled config has that name (bundled: {bundled})")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a YAML mapping (key: value), not {type(data).__name__}")
    cfg = build_config(_rebase_paths(data, path.resolve().parent), str(path), overrides)
    redact.register_config(cfg)
    known = task_names()
    for name in cfg.tasks:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (registered: {', '.join(known)})"
            raise UserError(f"{path}: 'tasks': unknown task '{name}'{hint}")
    return cfg


def _rebase_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The config with its relative file paths made absolute against `base` (the config file's folder, or the
    working directory for `--set`): a task file's `path:` in task_options (and a `dataset:` that is a folder there),
    a replay file, asset mirrors, the judge cache, the shared judge budget. A model `path` of the hf/vllm backends stays as written: it may be
    a hub id."""
    data = copy.deepcopy(data)

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(base / value)
        return value

    def task_paths(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "path":
                    node[key] = absolute(value)
                elif key == "dataset" and isinstance(value, str) and value and (base / value).is_dir():
                    node[key] = str(base / value)
                else:
                    task_paths(value)
        elif isinstance(node, list):
            for value in node:
                task_paths(value)

    task_paths(data.get("task_options"))
    model = data.get("model")
    if isinstance(model, dict) and model.get("backend") == "replay" and "path" in model:
        model["path"] = absolute(model["path"])
    if isinstance(data.get("asset_mirrors"), dict):
        data["asset_mirrors"] = {prefix: absolute(folder) for prefix, folder in data["asset_mirrors"].items()}
    if isinstance(data.get("judge"), dict):
        for key in ("cache_path", "shared_budget"):
            if key in data["judge"]:
                data["judge"][key] = absolute(data["judge"][key])
    return data


def build_config(data: dict[str, Any], source: str, overrides: Sequence[str] = ()) -> RunConfig:
    data = copy.deepcopy(data)
    override_keys = []
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
        override_keys.append(".".join(parts))
    if overrides:  # what --set names is relative to where the command was typed
        data = _rebase_paths(data, Path.cwd())
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(source, e, override_keys)) from None
