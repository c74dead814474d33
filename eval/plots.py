"""Plots (matplotlib, headless), over whatever tasks the summaries hold: per-category scores as a radar chart for
every task whose plot is `categories` (MT-Bench's by default), every task's mean with its confidence interval beside
the published model-card rows, and the confusion matrices of `agree`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .results import RunSummary, TaskResult, tasks_of  # noqa: E402
from .rundir import atomic_write  # noqa: E402
from .summary import published_value  # noqa: E402

# Published table: a fixed date and no software banner keep the PNG bytes reproducible.
_META = {"Software": None}


def _save(fig: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata=_META)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def write_plots(run_dir: Path, summary: RunSummary, published: pd.DataFrame) -> list[str]:
    written = []
    if _category_tasks([summary]):
        _save(_radar([summary]), run_dir / "plots" / "categories.png")
        written.append("plots/categories.png")
    if summary.tasks:
        _save(_bars([summary], published), run_dir / "plots" / "benchmarks.png")
        written.append("plots/benchmarks.png")
    return written


def write_compare_plot(out: Path, summaries: list[RunSummary], published: pd.DataFrame) -> None:
    _save(_bars(summaries, published), out / "compare.png")
    if _category_tasks(summaries):
        _save(_radar(summaries), out / "compare_categories.png")


def _category_tasks(summaries: list[RunSummary]) -> dict[str, TaskResult]:
    return {t: e for t, e in tasks_of(summaries).items() if e.plot == "categories"}


def _radar(summaries: list[RunSummary]) -> plt.Figure:
    """One polar axis per task whose plot is `categories`: its `category:<c>` means, one line per run."""
    tasks = _category_tasks(summaries)
    fig, axes = plt.subplots(1, len(tasks), subplot_kw={"projection": "polar"}, figsize=(6.5 * len(tasks), 6.5))
    fig.subplots_adjust(wspace=0.5)
    axes = [axes] if len(tasks) == 1 else list(axes)
    for ax, (task, entry) in zip(axes, tasks.items(), strict=True):
        categories = sorted({m.split(":", 1)[1] for s in summaries if task in s.tasks
                             for m in s.tasks[task].metrics if m.startswith("category:")})
        if not categories:
            ax.set_title(f"{entry.title}: no category scores")
            continue
        angles = [2 * math.pi * i / len(categories) for i in range(len(categories))] + [0.0]
        for s in summaries:
            if task not in s.tasks:
                continue
            metrics = s.tasks[task].metrics
            values = [m.mean if (m := metrics.get(f"category:{c}")) else float("nan") for c in categories]
            ax.plot(angles, values + values[:1], marker="o", label=f"{s.label} ({s.run})")
            ax.fill(angles, values + values[:1], alpha=0.1)
        ax.set_xticks(angles[:-1], categories)
        ax.set_ylim(0, entry.scale[1])
        ax.tick_params(axis="x", pad=10)
        ax.set_title(entry.title, pad=24)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8)
    fig.suptitle("Scores per category (mean over rounds; the model card publishes no category scores)", fontsize=10, y=1.02)
    return fig


def _bars(summaries: list[RunSummary], published: pd.DataFrame) -> plt.Figure:
    """One panel per task: each run's mean score with its 95 % CI, and the published rows' values. The panels share
    their rows (a row without a value in a task has no bar there), so the labels are written once, on the left, and
    the figure is widened by their length: long model names never squeeze the panels (or defeat the layout)."""
    tasks = tasks_of(summaries)
    rows: list[tuple[str, str, dict[str, tuple[float, float, float]]]] = []  # label, colour, task → (value, −err, +err)
    for s in summaries:
        values = {}
        for task in tasks:
            score = s.tasks[task].score if task in s.tasks else None
            if score:
                lo, hi = score.ci95
                values[task] = (score.mean, score.mean - lo if lo is not None else 0, hi - score.mean if hi is not None else 0)
        rows.append((f"{s.label} ({s.run})", "tab:orange", values))
    for row in published.to_dict("records"):
        values = {task: (v, 0, 0) for task, entry in tasks.items()
                  if (v := published_value(row, entry.published_column)) is not None}
        if values:
            label = f"{row['model']} ({row['reasoning_effort']})" if row["reasoning_effort"] else row["model"]
            rows.append((label, "tab:gray", values))
    label_inches = 0.065 * max((len(label) for label, _, _ in rows), default=10)  # at font size 7
    fig, axes = plt.subplots(1, len(tasks), figsize=(label_inches + 3.4 * len(tasks), 1.2 + 0.3 * max(len(rows), 4)),
                             squeeze=False, sharey=True)
    positions = range(len(rows))
    for ax, (task, entry) in zip(axes[0], tasks.items(), strict=True):
        present = [(i, values[task], colour) for i, (_, colour, values) in enumerate(rows) if task in values]
        ax.barh([i for i, _, _ in present], [v for _, (v, _, _), _ in present],
                xerr=[[lo for _, (_, lo, _), _ in present], [hi for _, (_, _, hi), _ in present]],
                color=[colour for _, _, colour in present], capsize=3)
        ax.set_title(entry.column)
        ax.set_xlim(0, entry.scale[1])
    axes[0][0].set_yticks(positions, [label for label, _, _ in rows], fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle("Measured (orange, 95 % CI) beside the published model-card rows (gray)", fontsize=10)
    fig.tight_layout()
    return fig


def write_confusion_plot(path: Path, values: list[float], counts: list[list[int]], title: str, label_a: str,
                         label_b: str) -> None:
    """A confusion matrix of two judges' scores: rows judge A, columns judge B, the diagonal outlined."""
    n = len(values)
    size = max(3.5, 0.45 * n + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="judgments")
    names = [f"{v:g}" for v in values]
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    ax.set_xlabel(label_b)
    ax.set_ylabel(label_a)
    ax.set_title(title)
    top = max((c for row in counts for c in row), default=0)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if count > top / 2 else "black")
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="darkorange", linewidth=1.2))
    _save(fig, path)
