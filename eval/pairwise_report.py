"""The reports of a pairwise folder, from its store alone: `summary.json` (`results.PairwiseSummary`), `table.md`,
`table.csv`, `plots/pairwise.png` (win / tie / inconsistent / loss per benchmark) and `report.html` (each pair: both
answers side by side and the verdict of each order), beside the record dumps, errors, config and manifest every run
writes (`report.py`).

The statistics are the pairwise kind's observations through `metrics.summarize` (per round, mean over rounds, the
bootstrap over questions), taken from the run's ordinary summary; the counts are FastChat's, per benchmark, round
and category (`kinds.pairwise.pair_outcome`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .config import ReplayModel, RunConfig
from .kinds import CallResult
from .kinds.pairwise import AB, BA, Outcome, adjusted, pair_outcome
from .pairwise import read_opponent
from .records import SLOT_IN_TASK, Judgment, Slot
from .results import Outcomes, PairwiseSummary, PairwiseTask, SourceRun, read_result, write_result
from .run_meta import CONFIG, ITEMS
from .rundir import atomic_write, write_text
from .store import Store
from .summary import compute_summary, model_name, row_label, run_frames
from .view import csp_hash

PLOT = "plots/pairwise.png"


def compute_pairwise(store: Store) -> PairwiseSummary:
    cfg = store.meta(CONFIG)
    assert cfg is not None and cfg.pairwise is not None, "a pairwise folder's store"
    sources = cfg.pairwise
    run = compute_summary(store)  # the pairwise kind's statistics and the judge calls' counts
    plan, _, judged = run_frames(store)
    tasks = {}
    for task, entry in run.tasks.items():
        p, j = plan[plan["task"] == task], judged[judged["task"] == task]
        pairs = _pair_outcomes(p, j)
        rounds = sorted(p["round"].unique().tolist())
        tasks[task] = PairwiseTask(
            title=entry.title, column=entry.column, variant=entry.variant, questions=p["item_id"].nunique(),
            only_in_a=sources.only_in_a.get(task, 0), only_in_b=sources.only_in_b.get(task, 0), rounds=rounds,
            outcomes=outcomes(pairs["outcome"]),
            per_round={r: outcomes(pairs.loc[pairs["round"] == r, "outcome"]) for r in rounds},
            per_category={c: outcomes(group["outcome"]) for c, group in pairs.groupby("category", sort=True)},
            metrics=entry.metrics, counts=entry.counts, no_answer=entry.no_answer)
    assert isinstance(cfg.model, ReplayModel)  # a pairwise run replays A's answers (pairwise.pairwise_config)
    name_a, effort_a = model_name(cfg.model.source_model or {"path": cfg.model.path})
    name_b, effort_b = model_name(sources.model_b)
    return PairwiseSummary(
        run=cfg.name, judge_model=cfg.judge.model, compat=cfg.compat, rounds=cfg.rounds, complete=run.complete,
        a=SourceRun(run=sources.run_a, name=Path(sources.run_a).name, model=name_a, label=row_label(name_a, effort_a),
                    reasoning_effort=effort_a, rounds=sources.rounds_a),
        b=SourceRun(run=sources.run_b, name=Path(sources.run_b).name, model=name_b, label=row_label(name_b, effort_b),
                    reasoning_effort=effort_b, rounds=sources.rounds_b),
        skipped=sources.skipped, tasks=tasks)


def _pair_outcomes(plan: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """One row per planned pair (its slot and category) with its outcome for run A (None: left out)."""
    calls: dict[tuple, list[CallResult]] = {}
    for r in judged.to_dict("records"):
        calls.setdefault(tuple(r[c] for c in SLOT_IN_TASK), []).append(CallResult(r["call"], r["status"], r["scores"]))
    rows = [(*row[:-1], row[-1], pair_outcome(calls.get(row[:-1], [])))
            for row in plan[[*SLOT_IN_TASK, "category"]].itertuples(index=False, name=None)]
    return pd.DataFrame(rows, columns=[*SLOT_IN_TASK, "category", "outcome"])


def outcomes(results: Iterable[Outcome | None]) -> Outcomes:
    """FastChat's counts and rates over some pairs (`show_result.display_result_pairwise`: pairs with an error left
    out, an inconsistent pair a tie)."""
    results = list(results)
    count = {o: sum(r == o for r in results) for o in Outcome}
    pairs = sum(count.values())

    def share(n: float) -> float | None:
        return n / pairs if pairs else None

    return Outcomes(pairs=pairs, win=count[Outcome.WIN], loss=count[Outcome.LOSS], tie=count[Outcome.TIE],
                    inconsistent=count[Outcome.INCONSISTENT], errors=len(results) - pairs,
                    win_rate=share(count[Outcome.WIN]), loss_rate=share(count[Outcome.LOSS]),
                    adjusted_win_rate=share(sum(adjusted(o) * n for o, n in count.items())),
                    consistency=share(pairs - count[Outcome.INCONSISTENT]))


# ---------------------------------------------------------------- tables


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ci(task: PairwiseTask, metric: str) -> str:
    stats = task.metrics.get(metric)
    if stats is None or stats.ci95[0] is None or stats.ci95[1] is None:
        return "–"
    return f"[{stats.ci95[0]:.3f}, {stats.ci95[1]:.3f}]"


HEADER = ["Benchmark", "Group", "Pairs", "Win", "Tie", "Inconsistent", "Loss", "Errors", "Win rate", "Loss rate",
          "Adjusted win rate", "95 % CI", "Consistency"]


def table_rows(summary: PairwiseSummary) -> list[list[str]]:
    """Per benchmark: all pairs (with the bootstrap interval of the adjusted win rate), then each round, then each
    category."""
    rows = []
    for task in summary.tasks.values():
        groups = [("all", task.outcomes, _ci(task, "score"))]
        if len(task.per_round) > 1:
            groups += [(f"round {r}", o, "") for r, o in task.per_round.items()]
        groups += [(f"category {c}", o, _ci(task, f"category:{c}")) for c, o in task.per_category.items()]
        for group, o, ci in groups:
            rows.append([task.column, group, str(o.pairs), str(o.win), str(o.tie), str(o.inconsistent), str(o.loss),
                         str(o.errors), _rate(o.win_rate), _rate(o.loss_rate), _rate(o.adjusted_win_rate), ci,
                         _rate(o.consistency)])
    return rows


def render_markdown(summary: PairwiseSummary, plot: bool) -> str:
    lines = [f"# Pairwise: {summary.a.label} (A) vs {summary.b.label} (B)", "",
             f"Judge: {summary.judge_model} · rounds compared: {summary.rounds} · profile: {summary.compat}"
             + ("" if summary.complete else " · INCOMPLETE (run the same command again)"), "",
             "Each pair (a question's turn in one round) is judged twice, A's answer first and then second; the same "
             "winner in both orders is a win, loss or tie for A, different winners are inconsistent and count as a "
             "tie (FastChat's rules). Adjusted win rate = (win + ½ tie + ½ inconsistent) / pairs; its 95 % CI "
             "resamples questions.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summary)]
    for task in summary.tasks.values():
        if task.only_in_a or task.only_in_b:
            lines.append(f"\n{task.column}: {task.questions} questions compared; run B lacks {task.only_in_a} of A's, "
                         f"run A lacks {task.only_in_b} of B's.")
    for task_name, why in summary.skipped.items():
        lines.append(f"\nSkipped {task_name}: {why}.")
    if plot:
        lines += ["", f"![win / tie / loss]({PLOT})"]
    return "\n".join(lines) + "\n"


def render_csv(summary: PairwiseSummary) -> str:
    return pd.DataFrame(table_rows(summary), columns=HEADER).to_csv(index=False)


def render_console(summary: PairwiseSummary) -> str:
    lines = [f"{summary.a.label} (A) vs {summary.b.label} (B), judged by {summary.judge_model}"]
    for task in summary.tasks.values():
        o = task.outcomes
        lines.append(f"  {task.column}: {o.win} win / {o.tie} tie / {o.inconsistent} inconsistent / {o.loss} loss"
                     f" of {o.pairs} pairs — win rate {_rate(o.win_rate)}, adjusted {_rate(o.adjusted_win_rate)} "
                     f"{_ci(task, 'score')}, consistency {_rate(o.consistency)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def write_plot(run_dir: Path, summary: PairwiseSummary) -> bytes:
    """Stacked shares of win, tie, inconsistent and loss per benchmark (A's view); the PNG's bytes."""
    from .plots import plt

    tasks = list(summary.tasks.values())
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(tasks) + 1.6))
    parts = [("win", "#2e7d32"), ("tie", "#9e9e9e"), ("inconsistent", "#ffb300"), ("loss", "#c62828")]
    left = [0.0] * len(tasks)
    for part, color in parts:
        shares = [getattr(t.outcomes, part) / t.outcomes.pairs if t.outcomes.pairs else 0.0 for t in tasks]
        ax.barh([t.column for t in tasks], shares, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel(f"share of pairs ({summary.a.label} vs {summary.b.label})")
    ax.legend(ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(tasks) < 3 else -0.15), frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write(run_dir / PLOT, buffer.getvalue())
    return buffer.getvalue()


# ---------------------------------------------------------------- page

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
td:first-child,td:nth-child(2){text-align:left}details{border:1px solid #ddd;margin:4px 0;padding:4px 8px}
summary{cursor:pointer}.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:6px;margin:4px 0;max-height:30em;overflow:auto}
.win{color:#2e7d32}.loss{color:#c62828}.inconsistent{color:#b26a00}img{max-width:100%}"""


def _pre(text: str | None) -> str:
    return f"<pre>{html.escape('None' if text is None else text)}</pre>"


def render_page(summary: PairwiseSummary, store: Store, cfg: RunConfig, png: bytes | None) -> str:
    """Every pair: the question, A's and B's answers side by side, both orders' verdicts and replies. Text only (no
    script; every stored text escaped), the plot inlined."""
    escape = html.escape
    ours = {g.slot: g for g in store.records("generation")}
    theirs = {slot: g for by_slot in read_opponent(cfg).values() for slot, g in by_slot.items()}
    judgments: dict[Slot, dict[str, Judgment]] = {}
    for judgment in store.records("judgment"):
        judgments.setdefault(judgment.slot, {})[judgment.call] = judgment
    items = {(task, item.item_id): item for task, listed in (store.meta(ITEMS) or {}).items() for item in listed}
    body = [f"<h1>Pairwise: {escape(summary.a.label)} (A) vs {escape(summary.b.label)} (B)</h1>",
            f"<p>Judge {escape(summary.judge_model)}; A = {escape(summary.a.run)}, B = {escape(summary.b.run)}; rounds "
            f"compared: {summary.rounds}.</p>",
            "<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in HEADER) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(summary))
            + "</table>"]
    if png is not None:
        body.append(f'<img alt="win / tie / loss per benchmark" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    for task_name, task in summary.tasks.items():
        body.append(f"<h2>{escape(task.title)}</h2>")
        for slot in sorted((s for s in ours if s.task == task_name), key=lambda s: (s.round, s.item_id, s.turn)):
            item = items.get((task_name, slot.item_id))
            calls = judgments.get(slot, {})
            outcome = pair_outcome([CallResult(j.call, j.status, j.scores) for j in calls.values()])
            shown = outcome.value if outcome is not None else "left out"
            question = item.turns[slot.turn - 1] if item is not None else ""
            verdicts = "".join(
                f"<div><b>{'A first' if call == AB else 'B first'}</b>: {escape(calls[call].status)} {_verdict(calls[call])}"
                f"{_pre(calls[call].raw)}</div>" for call in (AB, BA) if call in calls)
            body.append(
                f'<details><summary>round {slot.round} · {escape(slot.item_id)} · turn {slot.turn}'
                f'{" · " + escape(item.category) if item is not None and item.category else ""} · '
                f'<span class="{escape(shown)}">{escape(shown)}</span></summary>{_pre(question)}'
                f'<div class="pair"><div><b>A</b>{_pre(ours[slot].final)}</div>'
                f'<div><b>B</b>{_pre(theirs[slot].final if slot in theirs else None)}</div></div>{verdicts}</details>')
    csp = f"default-src 'none'; img-src data:; style-src {csp_hash(STYLE)}; base-uri 'none'; form-action 'none'"
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{csp}"><title>Pairwise {escape(summary.run)}</title><style>{STYLE}</style></head><body>'
            + "\n".join(body) + "</body></html>\n")


def _verdict(judgment: Judgment) -> str:
    share = judgment.scores.get("position_a")
    return "" if share is None else f"(position {'A' if share == 1 else 'B' if share == 0 else 'tie'} preferred)"


# ---------------------------------------------------------------- files


def write_reports(run_dir: Path, store: Store) -> PairwiseSummary:
    """summary.json, table.md, table.csv, the plot and report.html (the record dumps are `report.py`'s)."""
    cfg = store.meta(CONFIG)
    assert cfg is not None
    summary = compute_pairwise(store)
    png = write_plot(run_dir, summary) if summary.tasks else None
    write_result(run_dir / "summary.json", summary)
    write_text(run_dir / "table.md", render_markdown(summary, png is not None))
    write_text(run_dir / "table.csv", render_csv(summary))
    write_text(run_dir / "report.html", render_page(summary, store, cfg, png))
    return summary


def read_pairwise(path: Path) -> PairwiseSummary:
    return read_result(path, PairwiseSummary)
