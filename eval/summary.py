"""`summary.json` from the store alone: per task its metrics over rounds and questions, the status counts, and the
verdict against the published row; plus the published table (`eval/resources/model_card.csv`) and the names of
the measured row.

The summary holds everything the tables, plots, `compare` and the page need to show a task — its column, order,
scale, plot and published column come from its task file through the run store — so none of them names a benchmark.
Results only (no timings, no call counts): a resumed run produces the same summary as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from .compat import NoAnswer, Profile, answer_for
from .config import RunConfig
from .errors import UserError
from .kinds import kind
from .metrics import observations, reject_non_finite, reproduction, status_counts, summarize
from .outcome import NO_ANSWER_WARN
from .published import answering_model, card_row, model_identity, reasoning_effort
from .records import SLOT_COLUMNS, CallSlot, Planned, SlotRow, TaskMeta
from .results import (
    Counts,
    GreedyIdentical,
    MetricStats,
    NoAnswers,
    RunSummary,
    TaskResult,
    VersusPublished,
    report_order,
)
from .run_meta import CONFIG, MODEL_FORMAT, TASKS
from .statuses import TRANSIENT_GENERATION
from .store import Store

DEFAULT_REFERENCE = Path(__file__).resolve().parent / "resources" / "model_card.csv"


# ---------------------------------------------------------------- names of rows


def model_label(cfg: RunConfig) -> tuple[str, str | None]:
    """The measured row's model name (its identity where known, else the last part of its path) and effort."""
    return model_name(answering_model(cfg))


def model_name(model: dict[str, Any]) -> tuple[str, str | None]:
    """A model config's name and effort, as `model_label` gives them for a run."""
    name = model_identity(model)[0] or model["path"].rstrip("/").rsplit("/", 1)[-1].removeprefix("builtin:")
    return name, reasoning_effort(model)


def row_label(name: str, effort: str | None) -> str:
    return f"{name} (reasoning_effort = {effort})" if effort else name


# ---------------------------------------------------------------- the published table


def load_published(path: Path | None = None) -> pd.DataFrame:
    """The published rows: `model`, `reasoning_effort`, and one column per benchmark that a task file names as its
    `report.published` column (any other column is text: judge, source)."""
    path = path or DEFAULT_REFERENCE
    if not path.is_file():
        raise UserError(f"{path}: published reference table not found")
    table = pd.read_csv(path, dtype={"reasoning_effort": str}, keep_default_na=False)
    missing = {"model", "reasoning_effort"} - set(table.columns)
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(sorted(missing))}")
    return table


def published_value(row: dict[Hashable, Any], column: str | None) -> float | None:
    """A published row's value in a task's column (None: the table has no such column, or the cell is empty)."""
    value = row.get(column) if column else None
    return None if value is None or value == "" else float(value)


def published_label(row: dict[Hashable, Any]) -> str:
    return row_label(row["model"], row["reasoning_effort"] or None)


# ---------------------------------------------------------------- from the store


@dataclass(frozen=True)
class GeneratedRow(SlotRow):
    status: str
    final: str | None


@dataclass(frozen=True)
class JudgedRow(CallSlot):
    status: str
    scores: dict[str, float]


def _frame(rows: list[Any], row_type: type) -> pd.DataFrame:
    """Rows of a dataclass as a frame with one column per field (also when there are none)."""
    columns = [f.name for f in fields(row_type)]
    return pd.DataFrame([[getattr(row, c) for c in columns] for row in rows], columns=columns)


def run_frames(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The plan, the generations and the judgments of a run, each row with its slot and category; a judgment's row
    also with its call (only the calls its task makes: `TaskRules.calls`)."""
    keys = list(SLOT_COLUMNS)
    plan = _frame(store.plan(), Planned)
    gens = _frame(store.fields("generation", GeneratedRow), GeneratedRow).rename(columns={"status": "gen_status"})
    judged = _frame(store.fields("judgment", JudgedRow), JudgedRow)
    made = pd.DataFrame([(task, call) for task, meta in (store.meta(TASKS) or {}).items() for call in meta.rules.calls],
                        columns=["task", "call"])
    judged = judged.merge(made, on=["task", "call"], how="inner")
    gens = plan.merge(gens, on=keys, how="inner")
    judged = reject_non_finite(plan.merge(judged, on=keys, how="inner"))
    return plan, gens, judged


def task_observations(store: Store) -> dict[str, pd.DataFrame]:
    """Per task of the run, its observations (`metrics.observations`)."""
    _, _, judged = run_frames(store)
    return {task: observations(meta.rules, judged[judged["task"] == task])
            for task, meta in (store.meta(TASKS) or {}).items()}


def compute_summary(store: Store) -> RunSummary:
    cfg = store.meta(CONFIG)
    if cfg is None:
        raise UserError(f"{store.path}: the store holds no run (it was never planned)")
    metas = store.meta(TASKS) or {}
    name, effort = model_label(cfg)
    plan, gens, judged = run_frames(store)
    card = card_row(cfg)
    published = card.row
    tasks: dict[str, TaskResult] = {}
    for task_name, meta in metas.items():
        p = plan[plan["task"] == task_name]
        if p.empty:
            continue
        j = judged[judged["task"] == task_name]
        g = gens[gens["task"] == task_name]
        obs = observations(meta.rules, j)
        items = p["item_id"].unique().tolist()
        rounds = sorted(p["round"].unique().tolist())
        stats = summarize(obs, rounds)
        no_answer = _no_answers(g, cfg.profile, meta.no_answer)
        counts = Counts(**status_counts(j, g.rename(columns={"gen_status": "status"})), items=len(items),
                        planned=len(p), missing=len(p) * len(meta.rules.calls) - len(j), gen_missing=len(p) - len(g),
                        no_answer=int(no_answer.sum()))
        # A run stored before task files said how to show a task gets its kind's defaults, and its own name as the
        # published column (as reports then read it).
        metric, stored = kind(meta.metric), meta.model_fields_set
        column = meta.published_column if "published_column" in stored else task_name
        value = published_value(published, column) if published is not None else None
        versus = _versus_published(value, stats.get("score")) if value is not None and meta.variant == "full" else None
        tasks[task_name] = TaskResult(title=meta.title, column=meta.column, metric=meta.metric, order=meta.order,
                                      scale=meta.scale or metric.scale,
                                      plot=meta.plot if "plot" in stored else metric.plot, published_column=column,
                                      criteria=list(meta.rules.criteria), variant=meta.variant, rounds=rounds,
                                      metrics=stats, counts=counts,
                                      greedy_identical_items=_identical_across_rounds(g, meta),
                                      no_answer=_no_answer_facts(g, no_answer), published=versus)
    tasks = {t: tasks[t] for t in report_order(tasks)}
    complete = not any(sum(t.counts.unfinished().values()) for t in tasks.values())
    note = card.note
    if published is not None and cfg.variant != "full":
        note = f"Published row {published_label(published)}: not compared, this run used the {cfg.variant} data."
    return RunSummary(run=cfg.name, model=answering_model(cfg)["path"], label=cfg.label or row_label(name, effort),
                      reasoning_effort=effort, judge_model=cfg.judge.model, variant=cfg.variant, rounds=cfg.rounds,
                      compat=cfg.compat, greedy=cfg.generation.greedy, complete=complete, published_row=card.matched,
                      published_note=note, warnings=_no_answer_warnings(tasks, cfg, store.meta(MODEL_FORMAT)),
                      tasks=tasks)


def _versus_published(value: float, score: MetricStats | None) -> VersusPublished:
    """Δ and the reproduction verdict of the measured score against a published mean of three rounds."""
    if score is None:
        return reproduction([], value).model_copy(update={"verdict_note": "no valid judgment: nothing to compare"})
    present = [v for v in score.per_round.values() if v is not None]
    versus = reproduction(present, value)
    if score.missing_rounds and versus.verdict is not None:
        versus = versus.model_copy(update={"verdict_note": f"from {len(present)} rounds: "
                                                           f"{rounds_text(score.missing_rounds)} missing"})
    return versus


def _no_answers(gens: pd.DataFrame, run_profile: Profile, policy: NoAnswer | None) -> pd.Series:
    """Per stored generation: the model gave no answer — the judge (and the next turn) saw None, an empty or blank
    answer, or nothing. A failed call (`error`) is not counted here: it says nothing about the model and is asked
    again (`Counts.unfinished`)."""
    def none(row: Any) -> bool:
        if row.gen_status in TRANSIENT_GENERATION:
            return False
        answer = answer_for(run_profile, row.gen_status, None if pd.isna(row.final) else row.final, policy)
        return answer is None or not answer.strip()

    return gens.apply(none, axis=1).astype(bool) if not gens.empty else pd.Series([], dtype=bool)


def _no_answer_facts(gens: pd.DataFrame, no_answer: pd.Series) -> NoAnswers:
    """Of the stored answers that did not fail, how many had none (their share), and their statuses (no final channel
    written, out of tokens)."""
    without = gens[no_answer]
    answered = int((~gens["gen_status"].isin(TRANSIENT_GENERATION)).sum()) if not gens.empty else 0
    return NoAnswers(answers=answered, count=int(len(without)), share=float(len(without) / answered) if answered else 0.0,
                     statuses={str(k): int(v) for k, v in without["gen_status"].value_counts().items()})


def _no_answer_warnings(tasks: dict[str, TaskResult], cfg: RunConfig, model_format: dict[str, str] | None) -> list[str]:
    """One sentence per task whose answers lacked a final answer beyond `outcome.NO_ANSWER_WARN`: what happened and
    what to check."""
    fmt = (model_format or {}).get("reasoning_format")
    check_format = (f"model.reasoning.format (this run: {fmt})" if fmt else
                    "the server's reasoning parser" if cfg.model.backend == "openai" else
                    "model.reasoning.format")
    budget = cfg.generation.max_new_tokens
    warnings = []
    for entry in tasks.values():
        facts = entry.no_answer
        if facts is not None and facts.share > NO_ANSWER_WARN:
            statuses = ", ".join(f"{status} {n}" for status, n in sorted(facts.statuses.items()))
            warnings.append(f"{entry.column}: {facts.count} of {facts.answers} answers ({facts.share:.0%}) had no final "
                            f"answer ({statuses}), so the judge saw None or an empty answer; check {check_format}, the "
                            f"model's stop tokens, and generation.max_new_tokens ({budget}).")
    return warnings


def counted(n: int, phrase: str) -> str:
    """"3 answers failed", "1 answer failed": `phrase` starts with a plural noun."""
    return f"{n} {phrase if n != 1 else phrase.replace('s ', ' ', 1)}"


def rounds_text(rounds: list[int]) -> str:
    return ("round " if len(rounds) == 1 else "rounds ") + ", ".join(str(r) for r in rounds)


def _identical_across_rounds(gens: pd.DataFrame, meta: TaskMeta) -> GreedyIdentical | None:
    """How many items in greedy categories produced the same answers in every round (expected: all)."""
    greedy = set(meta.greedy_categories)
    if not greedy or gens.empty or gens["round"].nunique() < 2:
        return None
    subset = gens[gens["category"].isin(greedy)]
    same = subset.groupby(["item_id", "turn"])["final"].nunique(dropna=False)
    items = subset["item_id"].nunique()
    identical_items = int((same.groupby(level="item_id").max() == 1).sum())
    return GreedyIdentical(greedy_items=int(items), identical=identical_items)
