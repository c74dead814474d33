"""`compare`, and the card's table: several runs in the model card's row order — each measured row beside the
published row it reproduces, with Δ and the verdict per task, the published rows no run measured shown as published
only, runs without a published row after them — and the paired difference of every pair of runs on every task they
share (on the questions both judged, 95 % paired bootstrap CI). Tasks come from the runs' summaries, in report order.

A row's status is how `run` ends for its summary (`outcome.py`), so the table says the same wherever it is built:
`compare` over run folders, `card` over its rows, `card --collect` over rows that ran elsewhere.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .metrics import paired_difference
from .outcome import COMPLETE, NO_ANSWERS, Outcome, outcome
from .results import (
    ComparedRun,
    CompareResult,
    MeasuredLine,
    PublishedLine,
    RunSummary,
    TableLine,
    TaskDifference,
    TaskResult,
    tasks_of,
    write_result,
)
from .rundir import write_text
from .store import open_run
from .summary import compute_summary, load_published, published_label, task_observations
from .tables import cell, csv_header, csv_text, delta_cell, fmt, measured_csv_row, published_cells, published_csv_row

STATUS = {COMPLETE: "complete", NO_ANSWERS: "not measured (exit 3)"}  # anything else: incomplete (exit 4)


@dataclass
class MeasuredRun:
    dir: Path
    summary: RunSummary
    observations: dict[str, pd.DataFrame]  # per task (`summary.task_observations`)
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        self.outcome = outcome(self.summary)

    @property
    def name(self) -> str:
        return self.summary.run

    @property
    def status(self) -> str:
        return STATUS.get(self.outcome.code, f"incomplete (exit {self.outcome.code})")


@dataclass
class Comparison:
    runs: list[MeasuredRun]  # in table order
    layout: list[MeasuredRun | dict[Hashable, Any]]  # the table's rows top to bottom: a run, or a published row
    entries: dict[str, TaskResult]  # every task in report order, each as the first run that has it shows it
    differences: list[TaskDifference]


def load_runs(run_dirs: list[Path]) -> list[MeasuredRun]:
    runs = []
    for run_dir in run_dirs:
        store = open_run(run_dir, "run directories")
        try:
            runs.append(MeasuredRun(run_dir, compute_summary(store), task_observations(store)))
        finally:
            store.close()
    return runs


def build(runs: list[MeasuredRun], published: pd.DataFrame) -> Comparison:
    layout = _layout(runs, published)
    runs = [r for r in layout if isinstance(r, MeasuredRun)]
    entries = tasks_of(r.summary for r in runs)
    differences = []
    for i in range(len(runs)):
        for k in range(i + 1, len(runs)):
            for t in entries:
                if t in runs[i].observations and t in runs[k].observations:
                    paired = paired_difference(runs[i].observations[t], runs[k].observations[t], "score")
                    if paired:
                        differences.append(TaskDifference(**paired.model_dump(), a=runs[i].name, b=runs[k].name, task=t))
    return Comparison(runs, layout, entries, differences)


def _layout(runs: list[MeasuredRun], published: pd.DataFrame) -> list[MeasuredRun | dict[Hashable, Any]]:
    """The card's rows in order, each preceded by the runs that reproduce it; runs without a row at the end."""
    rows = published.to_dict("records")
    matched: dict[int, list[MeasuredRun]] = {i: [] for i in range(len(rows))}
    unmatched: list[MeasuredRun] = []
    for r in runs:
        wanted = r.summary.published_row
        index = next((i for i, row in enumerate(rows) if wanted and row["model"] == wanted.model
                      and row["reasoning_effort"] == (wanted.reasoning_effort or "")), None)
        (matched[index] if index is not None else unmatched).append(r)
    layout: list[MeasuredRun | dict[Hashable, Any]] = []
    for i, row in enumerate(rows):
        layout += [*matched[i], row]
    return layout + unmatched


def render_markdown(c: Comparison) -> str:
    entries = list(c.entries.values())
    lines = ["| Model | run | status | " + " | ".join(e.column for e in entries) + " |",
             "|---|---|---|" + "---:|" * len(entries)]
    several_judges = len({r.summary.judge_model for r in c.runs}) > 1
    for row in c.layout:
        if not isinstance(row, MeasuredRun):
            lines.append(f"| {published_label(row)} | published | | " + " | ".join(published_cells(row, entries)) + " |")
            continue
        s = row.summary
        judge = f", judge {s.judge_model}" if several_judges else ""
        lines.append(f"| **{s.label}** | {s.run}{judge} | {row.status} | " +
                     " | ".join(cell(s.tasks[t].score, s.tasks[t].counts) if t in s.tasks else "–" for t in c.entries)
                     + " |")
        if any(t.published for t in s.tasks.values()):
            lines.append("| Δ vs published · verdict | | | " +
                         " | ".join(delta_cell(s.tasks[t]) if t in s.tasks else "–" for t in c.entries) + " |")
    lines += ["", "Cells: mean over rounds ± SD over rounds [95 % CI over questions], * where a task is unfinished; "
              "Δ · verdict: is the published row consistent with the run's rounds (README: which interval answers which "
              "question). status: how `run` ends for the row (0 complete; 3 the numbers do not measure the model; 4 "
              "incomplete, the same command again completes it). Published rows: the llm-jp-4 model card (judge "
              "gpt-5.4-2026-03-05, mean of three rounds); see eval/resources/model_card.csv."]
    notes = [f"- {r.name}: " + " ".join(r.outcome.lines) for r in c.runs if r.outcome.lines]
    notes += [f"- {r.name}: {r.summary.published_note}" for r in c.runs if r.summary.published_note]
    if notes:
        lines += [""] + notes
    if c.differences:
        lines += ["", "Paired differences (b − a) on the questions both runs judged, 95 % paired bootstrap CI:", "",
                  "| a | b | benchmark | b − a | 95 % CI | questions |", "|---|---|---|---:|---|---:|"]
        for d in c.differences:
            lo, hi = d.ci95
            ci = f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None else "–"
            lines.append(f"| {d.a} | {d.b} | {c.entries[d.task].column} | {d.difference:+.2f} | {ci} | {d.items} |")
    return "\n".join(lines) + "\n"


def render_csv(c: Comparison) -> str:
    """table.csv's columns (`tables.csv_header`) plus the run and its status, one line per row of the table."""
    entries = list(c.entries.values())
    rows = [csv_header(entries) + ["run", "status"]]
    for row in c.layout:
        if isinstance(row, MeasuredRun):
            rows.append(measured_csv_row(row.summary, c.entries) + [row.name, row.outcome.code])
        else:
            rows.append(published_csv_row(row, entries) + ["", ""])
    return csv_text(rows)


def table_lines(c: Comparison) -> list[TableLine]:
    """The table's rows, top to bottom, as compare.json and the card's summary.json hold them."""
    return [MeasuredLine(run=row.name, dir=str(row.dir), label=row.summary.label, status=row.outcome.code,
                         status_lines=row.outcome.lines) if isinstance(row, MeasuredRun) else
            PublishedLine(label=published_label(row), model=row["model"], reasoning_effort=row["reasoning_effort"] or None)
            for row in c.layout]


def compared_runs(c: Comparison) -> list[ComparedRun]:
    return [ComparedRun(dir=str(r.dir), summary=r.summary) for r in c.runs]


def compare(run_dirs: list[Path], reference: Path | None, out: Path | None) -> CompareResult:
    from .plots import write_compare_plot
    from .view import compare_plots, write_page

    published = load_published(reference)
    comparison = build(load_runs(run_dirs), published)
    text = render_markdown(comparison)
    print(text)
    result = CompareResult(rows=table_lines(comparison), runs=compared_runs(comparison), differences=comparison.differences)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "compare.md", text)
        write_result(out / "compare.json", result)
        write_compare_plot(out, [r.summary for r in comparison.runs], published)
        page = write_page([r.dir for r in comparison.runs], out, compare_plots(out))
        print(f"Comparison written to {out}/: compare.md, compare.json, plots, {page.name}")
    return result
