"""`compare`: one table over several runs — each run's measured row beside the published rows — and the paired
difference of every pair of runs on every task they share (on the questions both judged, 95 % paired bootstrap
CI). Tasks come from the runs' summaries, in report order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .metrics import paired_difference
from .plots import write_compare_plot
from .results import PairedDifference, RunSummary, tasks_of
from .rundir import write_json, write_text
from .store import open_run
from .summary import compute_summary, load_published, published_label, task_observations
from .tables import cell, fmt, published_cells
from .view import compare_plots, write_page


@dataclass(frozen=True)
class ComparedRun:
    dir: Path
    summary: RunSummary
    observations: dict[str, pd.DataFrame]  # per task (`summary.task_observations`)


@dataclass(frozen=True)
class Difference:
    a: str  # the runs' names
    b: str
    task: str
    difference: PairedDifference


def compare(run_dirs: list[Path], reference: Path | None, out: Path | None) -> dict[str, Any]:
    runs = []
    for run_dir in run_dirs:
        store = open_run(run_dir, "run directories")
        try:
            runs.append(ComparedRun(run_dir, compute_summary(store), task_observations(store)))
        finally:
            store.close()
    published = load_published(reference)
    entries = tasks_of(r.summary for r in runs)
    lines = ["| Model | kind | " + " | ".join(e.column for e in entries.values()) + " |",
             "|---|---|" + "---:|" * len(entries)]
    several_judges = len({r.summary.judge_model for r in runs}) > 1
    for r in runs:
        s = r.summary
        judge = f", judge {s.judge_model}" if several_judges else ""
        lines.append(f"| {s.label} ({s.run}{judge}) | measured | " +
                     " | ".join(cell(s.tasks[t].score, s.tasks[t].counts) if t in s.tasks else "–" for t in entries) + " |")
    for row in published.to_dict("records"):
        lines.append(f"| {published_label(row)} | published | " + " | ".join(published_cells(row, entries.values())) + " |")
    differences = []
    for i in range(len(runs)):
        for k in range(i + 1, len(runs)):
            for t in entries:
                if t in runs[i].observations and t in runs[k].observations:
                    paired = paired_difference(runs[i].observations[t], runs[k].observations[t], "score")
                    if paired:
                        differences.append(Difference(runs[i].summary.run, runs[k].summary.run, t, paired))
    if differences:
        lines += ["", "Paired differences (b − a) on the questions both runs judged, 95 % paired bootstrap CI:", "",
                  "| a | b | benchmark | b − a | 95 % CI | questions |", "|---|---|---|---:|---|---:|"]
        for d in differences:
            lo, hi = d.difference.ci95
            ci = f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None else "–"
            lines.append(f"| {d.a} | {d.b} | {entries[d.task].column} | {d.difference.difference:+.2f} | {ci} | "
                         f"{d.difference.items} |")
    text = "\n".join(lines) + "\n"
    print(text)
    result = {"runs": [{"dir": str(r.dir), "summary": r.summary.dump()} for r in runs],
              "differences": [{"a": d.a, "b": d.b, "task": d.task, **d.difference.dump()} for d in differences]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "compare.md", text)
        write_json(out / "compare.json", result)
        write_compare_plot(out, [r.summary for r in runs], published)
        page = write_page(run_dirs, out, compare_plots(out))
        print(f"Comparison written to {out}/: compare.md, compare.json, plots, {page.name}")
    return result
