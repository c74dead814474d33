"""The tables of a run, rendered from its summary: `table.md` (the model-card table with the published rows,
counts, per-task detail tables), `table.csv`, and the console version. Columns are the summary's tasks in its
order; a task's detail rows are its metric kind's.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .compat import DEFAULT as DEFAULT_COMPAT
from .kinds import kind
from .results import Counts, MetricStats, RunSummary, TaskResult, VersusPublished
from .statuses import FAILURES, GENERATION_FAILURES, UNJUDGED, GenerationStatus
from .summary import counted, load_published, published_label, published_value, rounds_text


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def cell(metric: MetricStats | None, counts: Counts | None = None) -> str:
    """"mean ± SD [CI low, high]", the missing rounds, and * when the task is unfinished (answers failed or not
    generated, judgments missing or failed on the API)."""
    if not metric:
        return "–"
    text = fmt(metric.mean)
    if metric.sd is not None:
        text += f" ± {fmt(metric.sd)}"
    lo, hi = metric.ci95
    if lo is not None:
        text += f" [{fmt(lo)}, {fmt(hi)}]"
    if metric.missing_rounds:
        text += f" ({rounds_text(metric.missing_rounds)} missing)"
    if counts and sum(counts.unfinished().values()):
        text += " *"
    return text


def published_cells(row: dict[Hashable, Any], entries: Iterable[TaskResult], digits: int = 2) -> list[str]:
    """A published row's values under the given tasks' columns ("–" where the table has none)."""
    return [fmt(published_value(row, entry.published_column), digits) for entry in entries]


def _verdict(published: VersusPublished) -> str:
    """"consistent (p = 0.41)", "lower (p = 0.003)", or "no verdict"."""
    if published.verdict is None or published.p is None:
        return "no verdict"
    p = published.p
    return f"{published.verdict} ({'p < 0.001' if p < 0.001 else f'p = {p:.2g}'})"


def delta_cell(entry: TaskResult) -> str:
    """A task's "Δ · verdict" against its published value, or "–" where there is none to compare with."""
    versus = entry.published
    return f"{versus.delta:+.2f} · {_verdict(versus)}" if versus and versus.delta is not None else "–"


def render_markdown(summary: RunSummary, published: pd.DataFrame, plots: Sequence[str] = (), details: bool = True) -> str:
    entries = list(summary.tasks.values())
    out = [f"# {summary.run}: {summary.label}", ""]
    if not summary.complete:
        planned = sum(t.counts.planned for t in entries)
        left = {what: sum(t.counts.unfinished()[what] for t in entries) for what in entries[0].counts.unfinished()}
        shown = ", ".join(counted(n, what) for what, n in left.items() if n)
        out += [f"**PARTIAL RESULTS: {shown} (of {planned} planned)** (failed on the API: api_error/timeout; cells "
                "marked *; counts below); run the same command again to complete them.", ""]
    out += [f"**WARNING: {warning}**" for warning in summary.warnings]
    if summary.warnings:
        out.append("")
    decoding = " · decoding: greedy (generation.greedy)" if summary.greedy else ""
    out += [f"Judge: `{summary.judge_model}` · rounds: {summary.rounds} · data: {summary.variant} · "
            f"compat: `{summary.compat}`{decoding} · cells: mean over rounds ± SD over rounds [95 % CI over questions]; "
            "verdict: is the published row consistent with this run's rounds (t-test on round means, 5 % level; "
            "README: which interval answers which question)", ""]
    if summary.compat != DEFAULT_COMPAT:
        out += [f"**compat `{summary.compat}`: the harness's own semantics, not llm-jp-judge v2.0.0's; these numbers "
                "are not comparable with the published rows.**", ""]
    out.append("| Model | " + " | ".join(t.column for t in entries) + " | Errors |")
    out.append("|---|" + "---:|" * len(entries) + "---:|")
    errors = sum(sum(t.counts.judged(s) for s in FAILURES) + t.counts.missing for t in entries)
    out.append(f"| **{summary.label}** (measured) | " +
               " | ".join(cell(t.score, t.counts) for t in entries) + f" | {errors} |")
    compared = [(t, t.published) for t in entries if t.published]
    if compared:
        out.append("| Δ vs published · verdict | " + " | ".join(delta_cell(t) for t in entries) + " | |")
    for row in published.to_dict("records"):
        out.append(f"| {published_label(row)} (published) | " + " | ".join(published_cells(row, entries)) + " | |")
    out += ["", "Published rows: the llm-jp-4 model card (judge gpt-5.4-2026-03-05, mean of three rounds); "
            "see eval/resources/model_card.csv."]
    if summary.published_note:
        out += ["", summary.published_note]
    notes = [f"{t.column}: {versus.verdict_note}" for t, versus in compared if versus.verdict_note]
    if notes:
        out += ["", "Verdict notes: " + "; ".join(notes) + "."]
    out += ["", "## Counts", "", "| Benchmark | " + " | ".join(COUNT_HEADERS) + " |", "|---|" + "---:|" * len(COUNT_HEADERS)]
    for t in entries:
        out.append(f"| {t.column} | " + " | ".join(str(n) for n in _count_cells(t.counts)) + " |")
    out += ["", "truncated / no_final: generations that hit max_new_tokens or ended without a final answer; "
            "the judge saw what came back (partial text, or None), an empty answer, or nothing, per the task's "
            "no_answer policy (default: the compat profile's). no answer: answers of which the judge saw None, an "
            "empty text or nothing (no_final, failed, or cut off before the final channel)."]
    if details:
        out += _detail_tables(entries)
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(out) + "\n"


# The counts table: items and slots, the judgments without a score (one column per status, `statuses.py`), and
# the answers that failed, were not generated or gave the judge nothing.
COUNT_HEADERS = ["items", "planned", "valid", *UNJUDGED, "missing",
                 *("gen error" if s == GenerationStatus.ERROR else s for s in GENERATION_FAILURES), "not generated",
                 "no answer"]


def _count_cells(c: Counts) -> list[int]:
    return [c.items, c.planned, c.valid, *(c.judged(s) for s in UNJUDGED), c.missing,
            *(c.generated(s) for s in GENERATION_FAILURES), c.gen_missing, c.no_answer]


def _metric_row(label: str, metric: MetricStats | None, rounds: list[int]) -> str:
    if not metric:
        return f"| {label} | – | – | " + " | ".join("–" for _ in rounds) + " |"
    per_round = [fmt(v) if (v := metric.per_round.get(r)) is not None else "missing" for r in rounds]
    return f"| {label} | {cell(metric)} | {metric.questions} | " + " | ".join(per_round) + " |"


def _detail_tables(entries: list[TaskResult]) -> list[str]:
    out: list[str] = []
    for t in entries:
        rounds = t.rounds
        out += ["", f"## {t.title}", "", "| Metric | mean ± SD [CI] | questions | " +
                " | ".join(f"round {r}" for r in rounds) + " |", "|---|---:|---:|" + "---:|" * len(rounds)]
        out += [_metric_row(label, t.metrics.get(key), rounds) for label, key in kind(t.metric).detail_rows(t)]
        published = t.published
        if published and published.delta is not None:
            interval = (f"; 95 % CI of Δ from round-to-round noise [{published.delta_ci95[0]:+.2f}, "
                        f"{published.delta_ci95[1]:+.2f}]" if published.delta_ci95 else "")
            out.append(f"\nPublished: {fmt(published.value)} (Δ {published.delta:+.2f}: {_verdict(published)}"
                       f"{interval}).")
        if t.greedy_identical_items:
            g = t.greedy_identical_items
            out.append(f"\nGreedy categories: {g.identical} of {g.greedy_items} items gave identical answers in every round.")
    return out


CSV_SUFFIXES = ("sd", "ci_low", "ci_high", "delta", "verdict", "p", "missing", "missing_rounds")


def csv_header(entries: list[TaskResult]) -> list[str]:
    return ["kind", "model", "reasoning_effort"] + [t.column for t in entries] + \
        [f"{t.column} {suffix}" for t in entries for suffix in CSV_SUFFIXES]


def measured_csv_row(summary: RunSummary, tasks: Iterable[str]) -> list[Any]:
    """A run's row under the header of `tasks` (names; empty cells for those the run does not have)."""
    model, effort = summary.label.split(" (reasoning_effort = ")[0], summary.reasoning_effort or ""
    row: list[Any] = ["measured", model, effort]
    entries = [summary.tasks.get(name) for name in tasks]
    row += [fmt(t.score.mean, 4) if t and t.score else "" for t in entries]
    for t in entries:
        if t is None:
            row += [""] * len(CSV_SUFFIXES)
            continue
        score, versus = t.score, t.published
        lo, hi = score.ci95 if score else (None, None)
        p = versus.p if versus else None
        row += [_number(score.sd if score else None), _number(lo), _number(hi),
                _number(versus.delta if versus else None), (versus.verdict if versus else None) or "",
                f"{p:.3g}" if p is not None else "", t.counts.missing,
                ";".join(str(r) for r in score.missing_rounds) if score else ""]
    return row


def published_csv_row(row: dict[Hashable, Any], entries: list[TaskResult]) -> list[Any]:
    cells = [c if c != "–" else "" for c in published_cells(row, entries)]
    return ["published", row["model"], row["reasoning_effort"]] + cells + [""] * (len(CSV_SUFFIXES) * len(entries))


def csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def render_csv(summary: RunSummary, published: pd.DataFrame) -> str:
    entries = list(summary.tasks.values())
    return csv_text([csv_header(entries), measured_csv_row(summary, summary.tasks),
                     *(published_csv_row(row, entries) for row in published.to_dict("records"))])


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def render_console(summary: RunSummary) -> str:
    return render_markdown(summary, load_published(), details=False)
