"""`compare`, and the card's table: several runs in the model card's row order — each measured row beside the
published row it reproduces, with Δ and the verdict per task, the published rows no run measured shown as published
only, runs without a published row after them — and the paired difference of every pair of runs on every task they
share (on the questions both judged, 95 % paired bootstrap CI). Tasks come from the runs' summaries, in report order.

A row's status is how `run` ends for its summary (`outcome.py`), so the table says the same wherever it is built:
`compare` over run folders, `card` over its rows, `card --collect` over rows that ran elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .metrics import paired_difference
from .outcome import COMPLETE, NO_ANSWERS, Outcome, outcome
from .rundir import write_json, write_text
from .store import open_run
from .summary import compute_summary, load_published, published_label, report_order, task_observations
from .tables import cell, csv_header, csv_text, delta_cell, fmt, measured_csv_row, published_cells, published_csv_row

STATUS = {COMPLETE: "complete", NO_ANSWERS: "no answers (exit 3)"}  # anything else: incomplete (exit 4)


@dataclass
class MeasuredRun:
    dir: Path
    summary: dict[str, Any]
    observations: dict[str, pd.DataFrame]
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        self.outcome = outcome(self.summary)

    @property
    def name(self) -> str:
        return self.summary["run"]

    @property
    def status(self) -> str:
        return STATUS.get(self.outcome.code, f"incomplete (exit {self.outcome.code})")


@dataclass
class Comparison:
    runs: list[MeasuredRun]  # in table order
    layout: list[tuple[str, Any]]  # ("measured", MeasuredRun) or ("published", published row), top to bottom
    tasks: list[str]
    entries: dict[str, dict[str, Any]]  # each task as the first run that has it shows it
    differences: list[dict[str, Any]]


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
    runs = [r for kind, r in layout if kind == "measured"]
    entries: dict[str, dict[str, Any]] = {}
    for r in runs:
        for task, entry in r.summary["tasks"].items():
            entries.setdefault(task, entry)
    tasks = report_order(entries)
    differences = []
    for i in range(len(runs)):
        for k in range(i + 1, len(runs)):
            for t in tasks:
                if t in runs[i].observations and t in runs[k].observations:
                    d = paired_difference(runs[i].observations[t], runs[k].observations[t], "score")
                    if d:
                        differences.append({"a": runs[i].name, "b": runs[k].name, "task": t, **d})
    return Comparison(runs, layout, tasks, entries, differences)


def _layout(runs: list[MeasuredRun], published: pd.DataFrame) -> list[tuple[str, Any]]:
    """The card's rows in order, each preceded by the runs that reproduce it; runs without a row at the end."""
    rows = published.to_dict("records")
    matched: dict[int, list[MeasuredRun]] = {i: [] for i in range(len(rows))}
    unmatched = []
    for r in runs:
        wanted = r.summary.get("published_row")
        index = next((i for i, row in enumerate(rows) if wanted and row["model"] == wanted["model"]
                      and row["reasoning_effort"] == (wanted["reasoning_effort"] or "")), None)
        (matched[index] if index is not None else unmatched).append(r)
    layout: list[tuple[str, Any]] = []
    for i, row in enumerate(rows):
        layout += [("measured", r) for r in matched[i]]
        layout.append(("published", row))
    return layout + [("measured", r) for r in unmatched]


def render_markdown(c: Comparison) -> str:
    entries = [c.entries[t] for t in c.tasks]
    lines = ["| Model | run | status | " + " | ".join(e["column"] for e in entries) + " |",
             "|---|---|---|" + "---:|" * len(entries)]
    several_judges = len({r.summary["judge_model"] for r in c.runs}) > 1
    for kind, row in c.layout:
        if kind == "published":
            lines.append(f"| {published_label(row)} | published | | " + " | ".join(published_cells(row, entries)) + " |")
            continue
        s = row.summary
        judge = f", judge {s['judge_model']}" if several_judges else ""
        lines.append(f"| **{s['label']}** | {s['run']}{judge} | {row.status} | " +
                     " | ".join(cell(s["tasks"][t]["metrics"].get("score"), s["tasks"][t]["counts"]) if t in s["tasks"]
                                else "–" for t in c.tasks) + " |")
        if any(t.get("published") for t in s["tasks"].values()):
            lines.append("| Δ vs published · verdict | | | " +
                         " | ".join(delta_cell(s["tasks"][t]) if t in s["tasks"] else "–" for t in c.tasks) + " |")
    lines += ["", "Cells: mean over rounds ± SD over rounds [95 % CI over questions], * where a task is unfinished; "
              "Δ · verdict: is the published row consistent with the run's rounds (README: which interval answers which "
              "question). status: how `run` ends for the row (0 complete; 3 the numbers do not measure the model; 4 "
              "incomplete, the same command again completes it). Published rows: the llm-jp-4 model card (judge "
              "gpt-5.4-2026-03-05, mean of three rounds); see eval/resources/model_card.csv."]
    notes = [f"- {r.name}: " + " ".join(r.outcome.lines) for r in c.runs if r.outcome.lines]
    notes += [f"- {r.name}: {r.summary['published_note']}" for r in c.runs if r.summary.get("published_note")]
    if notes:
        lines += [""] + notes
    if c.differences:
        lines += ["", "Paired differences (b − a) on the questions both runs judged, 95 % paired bootstrap CI:", "",
                  "| a | b | benchmark | b − a | 95 % CI | questions |", "|---|---|---|---:|---|---:|"]
        for d in c.differences:
            lo, hi = d["ci95"]
            ci = f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None else "–"
            lines.append(f"| {d['a']} | {d['b']} | {c.entries[d['task']]['column']} | {d['difference']:+.2f} | {ci} | {d['items']} |")
    return "\n".join(lines) + "\n"


def render_csv(c: Comparison) -> str:
    """table.csv's columns (`tables.csv_header`) plus the run and its status, one line per row of the table."""
    entries = [c.entries[t] for t in c.tasks]
    rows = [csv_header(entries) + ["run", "status"]]
    for kind, row in c.layout:
        if kind == "published":
            rows.append(published_csv_row(row, entries) + ["", ""])
        else:
            rows.append(measured_csv_row(row.summary, c.tasks) + [row.name, row.outcome.code])
    return csv_text(rows)


def data(c: Comparison) -> dict[str, Any]:
    """compare.json, and the heart of the card's summary.json: the rows in order, each run's summary, the differences."""
    rows = [{"kind": "published", "label": published_label(row), "model": row["model"],
             "reasoning_effort": row["reasoning_effort"] or None} if kind == "published" else
            {"kind": "measured", "run": row.name, "dir": str(row.dir), "label": row.summary["label"],
             "status": row.outcome.code, "status_lines": row.outcome.lines} for kind, row in c.layout]
    return {"rows": rows, "runs": [{"dir": str(r.dir), "summary": r.summary} for r in c.runs],
            "differences": c.differences}


def compare(run_dirs: list[Path], reference: Path | None, out: Path | None) -> dict[str, Any]:
    from .plots import write_compare_plot
    from .view import compare_plots, write_page

    published = load_published(reference)
    comparison = build(load_runs(run_dirs), published)
    text = render_markdown(comparison)
    print(text)
    result = data(comparison)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "compare.md", text)
        write_json(out / "compare.json", result)
        write_compare_plot(out, [r.summary for r in comparison.runs], published)
        page = write_page([r.dir for r in comparison.runs], out, compare_plots(out))
        print(f"Comparison written to {out}/: compare.md, compare.json, plots, {page.name}")
    return result
