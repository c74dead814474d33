"""`runs [DIR…]`: the runs found in folders (default `results/`), one row each — model, reasoning effort, compatibility
profile, judge, rounds, complete or what is missing, each benchmark's mean with its Δ vs the published row — read
from each run's summary.json and manifest.json alone, so archives on read-only media list as they are and no store
is opened. `--out` writes index.html: one offline page (no script, the report page's style) linking each run's
report.html.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .results import RunSummary, TaskResult, UnreadableResult, read_summary, tasks_of
from .rundir import write_text
from .view import PAGE_DIR, csp_hash, fill

COLUMNS = ["run", "model", "effort", "profile", "judge", "rounds", "status"]


@dataclass
class Run:
    dir: Path
    summary: RunSummary | None
    manifest: dict[str, Any] | None
    problem: str | None = None  # why there is no summary to show
    remedy: str | None = None  # what to do about it

    @property
    def page(self) -> Path | None:
        page = self.dir / "report.html"
        return page if page.is_file() else None


def find_runs(folders: list[Path]) -> list[Run]:
    """Every run directory (one holding run.sqlite) in or under the folders, in path order; links are not followed."""
    found: dict[Path, None] = {}
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder; give folders that hold runs (default: results/)")
        for root, subfolders, files in os.walk(folder):
            if "run.sqlite" in files:
                found[Path(root)] = None
                subfolders.clear()  # a run's own folders (plots/) hold no runs
            else:
                subfolders.sort()
    return [_read(run_dir) for run_dir in sorted(found)]


def _read(run_dir: Path) -> Run:
    path = run_dir / "summary.json"
    if not path.is_file():
        return Run(run_dir, None, None, "no summary.json (running, or stopped before its reports)",
                   f"`python -m eval report {run_dir}` writes its reports from the store")
    try:
        summary = read_summary(path)
    except UnreadableResult as e:
        return Run(run_dir, None, None, f"summary.json: {e.reason}", e.remedy)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    return Run(run_dir, summary, manifest)


def status(summary: RunSummary) -> str:
    """'complete', or what is missing: judgments never made, calls failed on the judge API, answers that failed."""
    counts = [entry.counts for entry in summary.tasks.values()]
    missing = sum(c.missing for c in counts)
    failed = sum(c.failed_on_the_api() for c in counts)
    gen_errors = sum(c.gen_error for c in counts)
    parts = [f"{n} {what}" for n, what in ((missing, "judgments missing"), (failed, "failed on the judge API"),
                                           (gen_errors, "answers failed")) if n]
    if summary.complete and not parts:
        return "complete"
    return "incomplete: " + ", ".join(parts) if parts else "incomplete"


def task_columns(runs: list[Run]) -> dict[str, str]:
    """Every task of the runs in report order, with its column title (as the first run that has it shows it)."""
    return {task: entry.column for task, entry in tasks_of(run.summary for run in runs if run.summary).items()}


def score_cell(entry: TaskResult | None) -> str:
    """`mean (Δ vs published)`; the mean alone where no published row matched; – where there is no score."""
    if entry is None or entry.score is None:
        return "–"
    delta = entry.published.delta if entry.published else None
    return f"{entry.score.mean:.2f}" + (f" ({delta:+.2f})" if delta is not None else "")


def rows(runs: list[Run], tasks: dict[str, str], names: list[str]) -> list[list[str]]:
    out = []
    for run, name in zip(runs, names, strict=True):
        s = run.summary
        if s is None:
            out.append([name, "–", "–", "–", "–", "–", run.problem or "–", *["–"] * len(tasks)])
            continue
        out.append([name, s.model, s.reasoning_effort or "–", s.compat, s.judge_model, str(s.rounds), status(s),
                    *[score_cell(s.tasks.get(task)) for task in tasks]])
    return out


def runs_command(folders: list[Path], out: Path | None) -> list[Run]:
    runs = find_runs(folders)
    if not runs:
        raise UserError(f"no runs in {', '.join(str(f) for f in folders)} (a run is a folder holding run.sqlite)")
    tasks = task_columns(runs)
    names = [str(run.dir) for run in runs]
    table = [[*COLUMNS, *tasks.values()], *rows(runs, tasks, names)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("\nBenchmark cells: mean over rounds (Δ vs the published row of the model card, where one matched).")
    for run in runs:
        if run.summary is None:
            print(f"{run.dir}: {run.problem}; {run.remedy}")
    if out is not None:
        path = out if out.suffix == ".html" else out / "index.html"
        write_text(path, index_page(runs, tasks, path.parent))
        print(f"Index written to {path}")
    return runs


def index_page(runs: list[Run], tasks: dict[str, str], folder: Path) -> str:
    """The page: the same table, each run's name a link to its report.html by a path relative to `folder`."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*COLUMNS, *tasks.values()])
    lines = []
    for run, (name, *facts) in zip(runs, rows(runs, tasks, [str(run.dir) for run in runs]), strict=True):
        if run.page is not None:
            link = Path(os.path.relpath(run.page, folder)).as_posix()
            first = f'<a href="{html.escape(link, quote=True)}">{html.escape(name)}</a>'
        else:
            first = f'{html.escape(name)} <span class="note">(no report.html)</span>'
        described, state, scores = facts[:len(COLUMNS) - 2], facts[len(COLUMNS) - 2], facts[len(COLUMNS) - 1:]
        marked = "" if state == "complete" else ' class="partial"'
        lines.append(f"<tr><td>{first}</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in described) +
                     f"<td{marked}>{html.escape(state)}</td>" +
                     "".join(f'<td class="num">{html.escape(c)}</td>' for c in scores) + "</tr>")
    style = (PAGE_DIR / "page.css").read_text(encoding="utf-8")
    body = (f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'
            '<p class="note">Benchmark cells: mean over rounds (Δ vs the published row of the model card, where one '
            "matched). A run's name opens its report.html.</p>")
    return fill("index.html", {"CSP": f"default-src 'none'; img-src data:; style-src {csp_hash(style)}; base-uri 'none'; form-action 'none'",
                               "STYLE": style, "BODY": body, "COUNT": f"{len(runs)} run{'s' if len(runs) != 1 else ''}"})
