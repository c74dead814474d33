"""`compare`: one table over several runs — each run's measured row beside the published rows — and the paired
difference of every pair of runs on every task they share (on the questions both judged, 95 % paired bootstrap
CI). Tasks come from the runs' summaries, in report order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metrics import paired_difference
from .plots import write_compare_plot
from .rundir import write_json, write_text
from .store import open_run
from .summary import compute_summary, load_published, published_label, report_order, task_observations
from .tables import cell, fmt, published_cells
from .view import compare_plots, write_page


def compare(run_dirs: list[Path], reference: Path | None, out: Path | None) -> dict[str, Any]:
    runs = []
    for run_dir in run_dirs:
        store = open_run(run_dir, "run directories")
        try:
            runs.append({"dir": str(run_dir), "summary": compute_summary(store), "obs": task_observations(store)})
        finally:
            store.close()
    published = load_published(reference)
    entries: dict[str, dict[str, Any]] = {}  # each task as the first run that has it shows it
    for r in runs:
        for task, entry in r["summary"]["tasks"].items():
            entries.setdefault(task, entry)
    tasks = report_order(entries)
    lines = ["| Model | kind | " + " | ".join(entries[t]["column"] for t in tasks) + " |", "|---|---|" + "---:|" * len(tasks)]
    several_judges = len({r["summary"]["judge_model"] for r in runs}) > 1
    for r in runs:
        s = r["summary"]
        judge = f", judge {s['judge_model']}" if several_judges else ""
        lines.append(f"| {s['label']} ({s['run']}{judge}) | measured | " +
                     " | ".join(cell(s["tasks"][t]["metrics"].get("score"), s["tasks"][t]["counts"]) if t in s["tasks"] else "–" for t in tasks) + " |")
    for row in published.to_dict("records"):
        lines.append(f"| {published_label(row)} | published | " + " | ".join(published_cells(row, [entries[t] for t in tasks])) + " |")
    differences = []
    for i in range(len(runs)):
        for k in range(i + 1, len(runs)):
            for t in tasks:
                if t in runs[i]["obs"] and t in runs[k]["obs"]:
                    d = paired_difference(runs[i]["obs"][t], runs[k]["obs"][t], "score")
                    if d:
                        differences.append({"a": runs[i]["summary"]["run"], "b": runs[k]["summary"]["run"], "task": t, **d})
    if differences:
        lines += ["", "Paired differences (b − a) on the questions both runs judged, 95 % paired bootstrap CI:", "",
                  "| a | b | benchmark | b − a | 95 % CI | questions |", "|---|---|---|---:|---|---:|"]
        for d in differences:
            lo, hi = d["ci95"]
            ci = f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None else "–"
            lines.append(f"| {d['a']} | {d['b']} | {entries[d['task']]['column']} | {d['difference']:+.2f} | {ci} | {d['items']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    result = {"runs": [{"dir": r["dir"], "summary": r["summary"]} for r in runs], "differences": differences}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "compare.md", text)
        write_json(out / "compare.json", result)
        write_compare_plot(out, [r["summary"] for r in runs], published)
        page = write_page(run_dirs, out, compare_plots(out))
        print(f"Comparison written to {out}/: compare.md, compare.json, plots, {page.name}")
    return result
