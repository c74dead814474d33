"""A run's reports, written from its store alone: the task facts the reports need (stored with the run when it
starts), then summary.json (`summary.py`), table.md / table.csv (`tables.py`), plots (`plots.py`), the record
dumps and errors, manifest.json (`manifest.py`) and report.html (`view.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig
from .kinds import kind
from .manifest import manifest
from .records import CallSlot, SlotRow, TaskMeta, TaskRules
from .results import PairwiseSummary, RunSummary, read_result, read_summary, write_summary
from .run_meta import CONFIG
from .rundir import check_links, write_json, write_jsonl, write_text
from .statuses import JudgmentStatus
from .store import Store, open_run
from .summary import compute_summary, load_published
from .tables import render_console, render_csv, render_markdown
from .tasks import Task
from .view import refuse_read_only, write_page

Summary = RunSummary | PairwiseSummary  # what a run reports: a pairwise folder's is its own type


def task_meta(task: Task, greedy: bool = False) -> TaskMeta:
    """What the reports need to know about a task, stored with the run (so reports need no task files). `greedy`: the
    run decodes greedily (`generation.greedy`), so every category is a greedy one."""
    spec = task.spec
    greedy_categories = ({item.category for item in task.items if item.category} if greedy else
                         {c for c, t in spec.generation.category_temperature.items() if t == 0})
    template = next(iter(task.prompts.templates.values()))
    return TaskMeta(title=spec.title, column=spec.column, metric=spec.metric, turns=spec.turns, variant=task.variant,
                    order=spec.report.order, published_column=spec.report.published,
                    plot=spec.report.plot or kind(spec.metric).plot, scale=kind(spec.metric).scale,
                    rules=TaskRules(spec.metric, spec.judge.api_error_score, spec.judge.primary_criterion,
                                    tuple(template.criteria or ()), kind(spec.metric).calls(spec)),
                    no_answer=spec.generation.no_answer, greedy_categories=sorted(greedy_categories),
                    expected_items=spec.expected_items, judge_prompts=task.prompts.path,
                    judge_prompts_sha256=task.prompts.sha256)


def write_reports(run_dir: Path, store: Store) -> Summary:
    """Every report file from the store alone (used by `run` and by `report RUN_DIR`); a pairwise folder's summary,
    tables, plot and page are `pairwise_report`'s."""
    check_links(run_dir)
    config = store.meta(CONFIG)
    summary: Summary
    if config is not None and config.pairwise is not None:
        from .pairwise_report import write_reports as write_pairwise

        summary = write_pairwise(run_dir, store)
    else:
        # matplotlib takes about half a second to import: only the commands that draw load it.
        from .plots import write_plots

        summary = compute_summary(store)
        published = load_published()
        plots = write_plots(run_dir, summary, published)
        write_summary(run_dir / "summary.json", summary)
        write_text(run_dir / "table.md", render_markdown(summary, published, plots))
        write_text(run_dir / "table.csv", render_csv(summary, published))
    write_jsonl(run_dir / "generations.jsonl", (g.to_dict() for g in store.records("generation")))
    write_jsonl(run_dir / "judgments.jsonl", (j.to_dict() for j in store.records("judgment")))
    write_json(run_dir / "errors.json", _errors(store))
    if config is not None:
        write_text(run_dir / "config.yaml", yaml.safe_dump(config.snapshot(), allow_unicode=True, sort_keys=False))
    return summary


def console(summary: Summary) -> str:
    """What a run prints of its summary."""
    if isinstance(summary, PairwiseSummary):
        from .pairwise_report import render_console as pairwise_console

        return pairwise_console(summary)
    return render_console(summary)


def read_run_summary(run_dir: Path, cfg: RunConfig) -> Summary:
    """The summary.json a run of `cfg` wrote, through its type."""
    return read_result(run_dir / "summary.json", PairwiseSummary) if cfg.pairwise is not None else \
        read_summary(run_dir / "summary.json")


@dataclass(frozen=True)
class GenerationError(SlotRow):
    status: str
    error: str | None
    tokens_out: int | None


@dataclass(frozen=True)
class JudgmentError(CallSlot):
    status: str
    error: str | None
    attempts: int


def _errors(store: Store) -> list[dict[str, Any]]:
    where = f"WHERE status != '{JudgmentStatus.OK.value}'"
    return ([{"stage": "generate", **asdict(g)} for g in store.fields("generation", GenerationError, where)] +
            [{"stage": "judge", **asdict(j)} for j in store.fields("judgment", JudgmentError, where)])


def write_run(run_dir: Path, store: Store, cfg: RunConfig, activity: dict[str, Any]) -> Summary:
    summary = write_reports(run_dir, store)
    write_json(run_dir / "manifest.json", manifest(store, cfg, activity))
    if isinstance(summary, RunSummary):
        write_page([run_dir])
    print()
    print(console(summary))
    print(f"\nResults in {run_dir}/ (table.md, summary.json, plots/, report.html)")
    return summary


def regenerate(run_dir: Path, out: Path | None = None) -> Summary:
    """Every report file of a run from its store, into the run directory or `out` (the store is only read, so a
    read-only run can be reported elsewhere; its manifest.json is copied, as only a run can write one)."""
    if out is None:
        refuse_read_only(run_dir, "a folder for the report files")
    store = open_run(run_dir)
    try:
        summary = write_reports(out or run_dir, store)
    finally:
        store.close()
    if out is not None and (run_dir / "manifest.json").is_file():
        write_text(out / "manifest.json", (run_dir / "manifest.json").read_text(encoding="utf-8"))
    if isinstance(summary, RunSummary):
        write_page([run_dir], out, reports=out)
    print(console(summary))
    if out is not None:
        print(f"\nReports of {run_dir} written to {out}/ (table.md, summary.json, plots/, report.html)")
    return summary
