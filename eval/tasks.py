"""Task specs: a task file (found by `task_files`) → `TaskSpec`; a spec plus a variant → `Task` with its `Item`s and prompts.

A task file says where the questions come from, how to generate (system prompt, sampling) and how to judge
(prompt set, sampling, parsing policy) and how reports show it. Code exists only per *metric kind* (`eval/kinds/`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from .compat import NoAnswer
from .config import MAX_RETRIES, MAX_TOKENS, Strict
from .errors import UserError
from .judge.prompts import PromptSet, Template, check_fits, read_prompt_set
from .kinds import KINDS, kind
from .records import Generation, Item, Slot
from .sources import FileRef, ResolvedFile, hf_is_cached, is_cached, load_hf_rows, read_jsonl, resolve_file
from .task_files import asset_table, task_dirs, task_file, task_names
from .yaml_limits import read_yaml

PAIRWISE = "pairwise"  # the metric kind of a pairwise comparison (`eval/kinds/pairwise.py`)


def _registered(name: str) -> str:
    if name not in KINDS:
        raise ValueError(f"{name!r} is not a registered metric kind (known: {', '.join(KINDS)})")
    return name


MetricName = Annotated[str, AfterValidator(_registered)]  # a metric kind registered when the task file is read


class FileSpec(Strict):
    """One file: a named pinned asset (`_assets.yaml`), a URL with sha256, or a path (relative to the task file)."""

    asset: str | None = None
    url: str | None = None
    path: str | None = None
    sha256: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FileSpec:
        if not (self.asset or self.url or self.path):
            raise ValueError("give one of asset, url or path")
        return self


class TextSpec(FileSpec):
    """Literal text, or the value at a dotted `key` inside a YAML file."""

    text: str | None = None
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_plain_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            shown = json.dumps(data if len(data) <= 40 else data[:40] + "…", ensure_ascii=False)
            raise ValueError(f"a plain string is not read as the prompt: write {{text: {shown}}} for the text itself, "
                             "or {path: …} (or {asset: …, key: …}) for a file")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> TextSpec:
        if self.text is None and not (self.asset or self.url or self.path):
            raise ValueError("give text, or one of asset, url or path (with key)")
        return self


class PromptsSpec(FileSpec):
    format: Literal["llm_jp_judge", "fastchat"] = "llm_jp_judge"


class DataSpec(Strict):
    format: Literal["mt_bench", "hf"]
    questions: FileSpec | None = None
    references: FileSpec | None = None
    dataset: str | None = None
    config: str | None = None
    split: str = "test"
    revision: str | None = None
    fields: dict[str, str] = Field(default_factory=lambda: {"id": "ID", "question": "text"})

    @model_validator(mode="after")
    def _complete(self) -> DataSpec:
        if self.format == "mt_bench" and self.questions is None:
            raise ValueError("format mt_bench needs questions")
        if self.format == "hf" and not self.dataset:
            raise ValueError("format hf needs dataset")
        if self.format == "hf" and not {"id", "question"} <= set(self.fields):
            raise ValueError("fields must map at least id and question")
        return self


class VariantSpec(Strict):
    data: DataSpec
    system_prompt: TextSpec | None = None
    judge_prompts: PromptsSpec
    pairwise_prompts: PromptsSpec | None = None  # the prompt set a pairwise comparison of two runs uses (`pairwise`)
    judge_system_prompt: TextSpec | None = None
    expected_items: int | None = Field(None, ge=1)


class GenerationSpec(Strict):
    temperature: float = Field(1.0, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    category_temperature: dict[str, float] = Field(default_factory=dict)
    frequency_penalty: float | None = None
    use_system_prompt: bool = True
    no_answer: NoAnswer | None = None  # None: the compat profile's policy


class VerdictLabels(Strict):
    """What a pairwise prompt's `regex` captures for each verdict (FastChat's: A, B, and C for a tie)."""

    a: str = Field("A", min_length=1)
    b: str = Field("B", min_length=1)
    tie: str = Field("C", min_length=1)


class JudgeSpec(Strict):
    temperature: int | float | None = 0  # an int stays an int: upstream sends MT-Bench's `temperature: 0` as 0
    top_p: float | None = Field(None, gt=0, le=1)
    frequency_penalty: float | None = None
    max_tokens: int = Field(2048, ge=1, le=MAX_TOKENS)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    reference_categories: list[str] = Field(default_factory=list)
    use_reference: bool = True
    parse_retries: int = Field(3, ge=0, le=MAX_RETRIES)
    api_error_score: float | None = None
    primary_criterion: str | None = None
    verdict_labels: VerdictLabels = Field(default_factory=lambda: VerdictLabels())


class ReportSpec(Strict):
    """How reports show the task; nothing in the report, plot or compare code names a benchmark."""

    order: int | None = None  # the column's place in tables and plots; tasks without one follow, by name
    published: str | None = None  # the column of eval/resources/model_card.csv with the task's published values
    plot: Literal["categories", "none"] | None = None  # per-category radar or none; unset: the metric kind's


class TaskSpec(Strict):
    name: str
    title: str
    column: str  # the task's column title in tables and plots
    metric: MetricName
    turns: int = Field(1, ge=1, le=2)
    expected_items: int = Field(ge=1)
    variants: dict[str, VariantSpec]
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    def variant(self, name: str) -> VariantSpec:
        if name not in self.variants:
            raise UserError(f"task {self.name}: no variant {name!r} (has {', '.join(self.variants)})")
        return self.variants[name]

    def temperature_for(self, category: str | None) -> float:
        return self.generation.category_temperature.get(category or "", self.generation.temperature)


@dataclass
class Task:
    """A task ready to run: its spec, the chosen variant's items, system prompts and judge prompt set."""

    spec: TaskSpec
    variant: str
    items: list[Item]
    system_prompt: str | None
    judge_system_prompt: str | None
    prompts: PromptSet
    provenance: list[dict[str, Any]]
    warnings: list[str]
    opponent: dict[Slot, Generation] | None = None  # a pairwise run: the other run's answers, by slot

    def __post_init__(self) -> None:
        self._by_id = {item.item_id: item for item in self.items}

    @property
    def name(self) -> str:
        return self.spec.name

    def item(self, item_id: str) -> Item:
        return self._by_id[item_id]


# ---------------------------------------------------------------- registry


def asset_ref(name: str, label: str) -> FileRef:
    bases, assets = asset_table()
    if name not in assets:
        raise UserError(f"{label}: unknown asset {name!r} (see eval/resources/tasks/_assets.yaml)")
    entry = assets[name]
    return FileRef(label=f"{label} [{name}]", url=bases[entry["base"]] + entry["path"], sha256=entry.get("sha256"))


SOURCE_KEYS = {"asset", "url", "path", "text"}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`; an override that names a file's source (asset/url/path/text) replaces the old source."""
    out = copy.deepcopy(base)
    if SOURCE_KEYS & set(extra):
        out = {k: v for k, v in out.items() if k not in SOURCE_KEYS}
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _rebase_paths(node: Any, folder: Path) -> Any:
    """A task file's data with its relative file paths, and local dataset folders, made absolute against the file's
    folder (a `dataset` that is no folder there is a hub id and stays as written)."""
    if isinstance(node, list):
        return [_rebase_paths(value, folder) for value in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "path" and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            value = str(folder / value)
        elif key == "dataset" and isinstance(value, str) and value and (folder / value).is_dir():
            value = str(folder / value)
        out[key] = _rebase_paths(value, folder)
    return out


def _included_file(path: Path, name: str) -> Path:
    """An included file: next to the including file, else in the other task folders (so a folder of one's own
    tasks can include the bundled `_mt_bench.yaml`)."""
    for folder in dict.fromkeys([path.parent, *task_dirs()]):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{path}: 'include': {name} not found next to it or in the task folders "
                    f"({', '.join(str(f) for f in task_dirs())})")


def _read_task_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A task file with the files it names in `include:` merged under it (in order; the file's own keys win, and an
    include's `variants` only complete the variants the file itself has), each file's relative paths its own
    folder's, and the names of the included files."""
    data = read_yaml(path, "task")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a task file must be a YAML mapping")
    include = data.pop("include", [])
    names = [include] if isinstance(include, str) else include
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: 'include': expected a file name or a list of file names")
    merged: dict[str, Any] = {}
    for included_name in names:
        included_path = _included_file(path, included_name)
        included = read_yaml(included_path, f"included (by {path.name})")
        if not isinstance(included, dict):
            raise UserError(f"{included_path}: an included task file must be a YAML mapping")
        if "include" in included:
            raise UserError(f"{included_path}: 'include': an included file cannot include others")
        merged = _deep_merge(merged, _rebase_paths(included, included_path.parent))
    own = data.get("variants")
    if isinstance(own, dict) and isinstance(merged.get("variants"), dict):
        # An include completes the variants the file defines; it never adds one (a copy without a sample set has none).
        merged["variants"] = {name: v for name, v in merged["variants"].items() if name in own}
    return _deep_merge(merged, _rebase_paths(data, path.parent)), names


def _source(path: Path, included: list[str], name: str, options: dict[str, Any] | None) -> str:
    """Where a task's settings come from, for error messages: its file, the run's task_options, its includes."""
    text = f"{path} (with task_options.{name})" if options else str(path)
    return text + (f" (+ included {', '.join(included)})" if included else "")


def load_spec(name: str, options: dict[str, Any] | None = None) -> TaskSpec:
    path = task_file(name)
    data, included = _read_task_file(path)
    if options:
        data = _deep_merge(data, options)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        src = _source(path, included, name, options)
        problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise UserError(f"{src}: '{where}': {problem}") from None
    if spec.name != name:
        raise UserError(f"{path}: name {spec.name!r} does not match the file name")
    for variant_name, variant in spec.variants.items():
        metric = kind(spec.metric)
        if metric.templates_carry_system_prompt and variant.judge_system_prompt is not None:
            src = _source(path, included, name, options)
            raise UserError(f"{src}: 'variants.{variant_name}.judge_system_prompt' has no effect on an {metric.title} task "
                            "(each judge template carries its own system prompt); remove it, or change the template's "
                            "system prompt through judge_prompts")
    return spec


# ---------------------------------------------------------------- loading


def file_ref(spec: FileSpec, label: str) -> FileRef:
    if spec.path is not None:
        return FileRef(label=label, path=Path(spec.path).expanduser(), sha256=spec.sha256)
    if spec.url is not None:
        return FileRef(label=label, url=spec.url, sha256=spec.sha256)
    ref = asset_ref(spec.asset or "", label)
    return FileRef(label=ref.label, url=ref.url, sha256=spec.sha256 or ref.sha256)


def task_file_refs(spec: TaskSpec, variant: str) -> list[FileRef]:
    """Every file a task variant needs (for `fetch`, `tasks`, and the manifest)."""
    v = spec.variant(variant)
    refs = []
    for what, f in (("questions", v.data.questions), ("references", v.data.references),
                    ("judge prompts", judge_prompts(spec, variant)),
                    ("system prompt", v.system_prompt), ("judge system prompt", v.judge_system_prompt)):
        if f is not None and (f.asset or f.url or f.path):
            refs.append(file_ref(f, f"task {spec.name}: {what}"))
    return refs


def judge_prompts(spec: TaskSpec, variant: str) -> PromptsSpec:
    """The prompt set a task variant is judged with: its `pairwise_prompts` for a kind that compares two runs."""
    v = spec.variant(variant)
    if not kind(spec.metric).compares:
        return v.judge_prompts
    if v.pairwise_prompts is None:
        raise UserError(f"task {spec.name}: variant {variant!r} gives no pairwise_prompts, so its answers cannot be "
                        f"compared pairwise; add variants.{variant}.pairwise_prompts to its task file (a prompt set with "
                        "the templates pair-v2, pair-math-v1 and, for two turns, their -multi-turn forms)")
    return v.pairwise_prompts


def cache_status(spec: TaskSpec, variant: str, mirrors: dict[str, str]) -> str:
    v = spec.variant(variant)
    files_ok = all(is_cached(r, mirrors) for r in task_file_refs(spec, variant))
    if v.data.format == "hf":
        files_ok = files_ok and hf_is_cached(v.data.dataset or "", v.data.config)
    return "cached" if files_ok else "not cached"


def _read_text(spec: TextSpec | None, label: str, mirrors: dict[str, str], provenance: list) -> str | None:
    if spec is None:
        return None
    if spec.text is not None:
        return spec.text
    resolved = resolve_file(file_ref(spec, label), mirrors)
    provenance.append(resolved.provenance())
    value: Any = read_yaml(resolved.path, label) if spec.key else resolved.path.read_text(encoding="utf-8")
    for part in (spec.key or "").split(".") if spec.key else ():
        if not isinstance(value, dict) or part not in value:
            raise UserError(f"{label}: key {spec.key!r} not found in {resolved.path}")
        value = value[part]
    if value is not None and not isinstance(value, str):
        raise UserError(f"{label}: {spec.key!r} in {resolved.path} is not text")
    return value


def load_task(spec: TaskSpec, variant: str, mirrors: dict[str, str], limit: int | None = None) -> Task:
    v = spec.variant(variant)
    provenance: list[dict[str, Any]] = []
    warnings: list[str] = []
    items = _load_items(spec, v.data, mirrors, provenance)
    expected = v.expected_items or (spec.expected_items if variant == "full" else None)
    if expected is not None and len(items) != expected:
        warnings.append(f"task {spec.name}: expected {expected} items, found {len(items)} — results are not comparable")
    if limit is not None:
        items = items[:limit]
    prompts_spec = judge_prompts(spec, variant)
    prompts_ref = file_ref(prompts_spec, f"task {spec.name}: judge prompts")
    resolved = resolve_file(prompts_ref, mirrors)
    provenance.append(resolved.provenance())
    prompts = read_prompt_set(resolved.path, prompts_spec.format, label=prompts_ref.label)
    system_prompt = _read_text(v.system_prompt, f"task {spec.name}: system prompt", mirrors, provenance)
    judge_system = _read_text(v.judge_system_prompt, f"task {spec.name}: judge system prompt", mirrors, provenance)
    metric = kind(spec.metric)
    check_fits(prompts, metric.templates(spec), criteria_needed=metric.needs_criteria)
    return Task(spec, variant, items, system_prompt, judge_system, prompts, provenance, warnings)


def judge_templates(tasks: Iterable[Task]) -> list[tuple[str, Template]]:
    """(metric kind, template) of every judge template the tasks use: what a mock judge recognises a prompt by."""
    return [pair for task in tasks for pair in _used_templates(task.spec.metric, task.spec, task.prompts)]


def _used_templates(metric: str, spec: TaskSpec, prompts: PromptSet) -> list[tuple[str, Template]]:
    """The templates of `prompts` that the kind `metric` renders for `spec` (a FastChat file holds single-grade and
    pairwise templates side by side: each is answered in its own kind's format)."""
    needed = kind(metric).templates(spec)
    return [(metric, template) for name, template in prompts.templates.items() if name in needed]


def local_judge_templates() -> list[tuple[str, Template]]:
    """(metric kind, template) of every registered task variant whose judge prompt file is on this machine (a path,
    or an asset already in the cache): what a mock judge started on its own recognises."""
    out: list[tuple[str, Template]] = []
    for name in task_names():
        try:
            spec = load_spec(name)
            for variant in spec.variants.values():
                for metric, prompts_spec in ((spec.metric, variant.judge_prompts), (PAIRWISE, variant.pairwise_prompts)):
                    if prompts_spec is None:
                        continue
                    ref = file_ref(prompts_spec, f"task {name}: judge prompts")
                    if is_cached(ref):
                        prompts = read_prompt_set(resolve_file(ref, {}).path, prompts_spec.format, ref.label)
                        out += _used_templates(metric, spec, prompts)
        except UserError:  # a broken task file is reported by the run that uses it, not by the mock
            continue
    return out


def _jsonl(resolved: ResolvedFile) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(resolved.path, resolved.label)]


def _field(row: dict[str, Any], name: str, label: str, where: str) -> Any:
    if name not in row:
        raise UserError(f"{label}: {where} has no field {name!r} (fields found: {', '.join(sorted(row))})")
    return row[name]


def _load_items(spec: TaskSpec, data: DataSpec, mirrors: dict[str, str], provenance: list) -> list[Item]:
    label = f"task {spec.name}"
    items: list[Item] = []
    if data.format == "mt_bench":
        assert data.questions is not None
        q = resolve_file(file_ref(data.questions, f"{label}: questions"), mirrors)
        provenance.append(q.provenance())
        refs: dict[str, list[str]] = {}
        if data.references is not None:
            r = resolve_file(file_ref(data.references, f"{label}: references"), mirrors)
            provenance.append(r.provenance())
            for row in _jsonl(r):
                qid = str(_field(row, "question_id", r.label, "a reference row"))
                choices = _field(row, "choices", r.label, f"reference {qid}")
                refs[qid] = list(choices[0]["turns"])
        for row in _jsonl(q):
            qid = str(_field(row, "question_id", q.label, "a question row"))
            category = _field(row, "category", q.label, f"question {qid}")
            turns = _field(row, "turns", q.label, f"question {qid}")
            if not isinstance(turns, list) or len(turns) != spec.turns or not all(isinstance(t, str) for t in turns):
                raise UserError(f"{q.label}: question {qid}: turns must be a list of {spec.turns} strings")
            reference = None
            if category in spec.judge.reference_categories:
                if qid not in refs:
                    raise UserError(f"{label}: question {qid} ({category}) needs a reference answer and has none")
                reference = tuple(refs[qid])
            items.append(Item(spec.name, qid, tuple(turns), category, reference))
    else:
        assert data.dataset is not None
        rows = load_hf_rows(label, data.dataset, data.config, data.split, data.revision)
        provenance.append({"label": f"{label}: dataset", "dataset": data.dataset, "config": data.config,
                           "split": data.split, "revision": data.revision, "rows": len(rows)})
        where = f"{data.dataset} ({data.config}/{data.split})"
        for i, row in enumerate(rows):
            item_id = str(_field(row, data.fields["id"], label, f"row {i} of {where}"))
            question = _field(row, data.fields["question"], label, f"item {item_id} of {where}")
            reference = None
            if "reference" in data.fields:
                reference = (str(_field(row, data.fields["reference"], label, f"item {item_id} of {where}")),)
            if not isinstance(question, str):
                raise UserError(f"{label}: item {item_id} of {where}: {data.fields['question']!r} is not text")
            items.append(Item(spec.name, item_id, (question,), row.get("category"), reference))
    if not items:
        raise UserError(f"{label}: the dataset is empty")
    seen: set[str] = set()
    for it in items:
        if it.item_id in seen:
            raise UserError(f"{label}: duplicate item id {it.item_id!r}; ids must be unique")
        seen.add(it.item_id)
    return items
