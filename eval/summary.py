"""`summary.json` from the store alone: per task its metrics over rounds and questions, the status counts, and the
verdict against the published row; plus the published table (`eval/resources/model_card.csv`) and the names of
the measured row.

The summary holds everything the tables, plots, `compare` and the page need to show a task — its column, order,
scale, plot and published column come from its task file through the run store — so none of them names a benchmark.
Results only (no timings, no call counts): a resumed run produces the same summary as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .compat import DEFAULT as DEFAULT_COMPAT, answer_for, profile
from .errors import UserError
from .kinds import TaskRules, kind
from .metrics import PUBLISHED_ROUNDS, observations, reject_non_finite, reproduction, status_counts, summarize
from .outcome import NO_ANSWER_WARN
from .published import answering_model, card_row, model_identity, reasoning_effort
from .statuses import TRANSIENT_GENERATION, TRANSIENT_JUDGMENT
from .store import Store

SUMMARY_SCHEMA = "llmjp-eval/summary/v2"
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "resources" / "model_card.csv"


# ---------------------------------------------------------------- names of rows


def model_label(cfg: dict[str, Any]) -> tuple[str, str | None]:
    """The measured row's model name (its identity where known, else the last part of its path) and effort."""
    model = answering_model(cfg)
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


def published_value(row: dict[str, Any], column: str | None) -> float | None:
    """A published row's value in a task's column (None: the table has no such column, or the cell is empty)."""
    value = row.get(column) if column else None
    return None if value is None or value == "" else float(value)


def published_label(row: dict[str, Any]) -> str:
    return row_label(row["model"], row["reasoning_effort"] or None)


# ---------------------------------------------------------------- from the store


def run_frames(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The plan, the generations and the judgments of a run, each row with its slot and category."""
    plan = pd.DataFrame(store.plan(), columns=["round", "task", "item_id", "turn", "category"])
    gens = pd.DataFrame(store.fields("generation", ["round", "task", "item_id", "turn", "status", "final"]),
                        columns=["round", "task", "item_id", "turn", "status", "final"]).rename(columns={"status": "gen_status"})
    judged = pd.DataFrame(store.fields("judgment", ["round", "task", "item_id", "turn", "status", "scores"]),
                          columns=["round", "task", "item_id", "turn", "status", "scores"])
    keys = ["round", "task", "item_id", "turn"]
    gens = plan.merge(gens, on=keys, how="inner")
    judged = reject_non_finite(plan.merge(judged, on=keys, how="inner"))
    return plan, gens, judged


def task_observations(store: Store) -> dict[str, pd.DataFrame]:
    """Per task of the run, its observations (`metrics.observations`)."""
    _, _, judged = run_frames(store)
    return {task: observations(TaskRules.from_meta(meta), judged[judged["task"] == task])
            for task, meta in (store.meta("tasks") or {}).items()}


def report_order(entries: dict[str, dict[str, Any]]) -> list[str]:
    """Tasks in report order: by their files' `report.order`, then those without one, by name."""
    return sorted(entries, key=lambda t: (entries[t].get("order") is None, entries[t].get("order") or 0, t))


def _presentation(task_name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """How reports show a task, from its stored meta; a run stored before task files said so gets its kind's
    defaults (and its own name as the published column, as reports then read it)."""
    metric = kind(meta["metric"])
    return {"order": meta.get("order"), "scale": list(meta.get("scale") or metric.scale),
            "plot": meta.get("plot", metric.plot), "published_column": meta.get("published_column", task_name)}


def compute_summary(store: Store) -> dict[str, Any]:
    cfg = store.meta("config")
    metas = store.meta("tasks") or {}
    name, effort = model_label(cfg)
    plan, gens, judged = run_frames(store)
    card = card_row(cfg)
    published = card.row
    run_profile = profile(cfg.get("compat", DEFAULT_COMPAT))
    tasks: dict[str, Any] = {}
    for task_name, meta in metas.items():
        p = plan[plan["task"] == task_name]
        if p.empty:
            continue
        j = judged[judged["task"] == task_name]
        g = gens[gens["task"] == task_name]
        obs = observations(TaskRules.from_meta(meta), j)
        items = p["item_id"].unique().tolist()
        rounds = sorted(p["round"].unique().tolist())
        stats = {k: v.to_dict() for k, v in summarize(obs, rounds).items()}
        counts = status_counts(j, g.rename(columns={"gen_status": "status"}))
        counts["items"] = len(items)
        counts["planned"] = int(len(p))
        counts["missing"] = int(len(p) - len(j))
        counts["gen_missing"] = int(len(p) - len(g))
        no_answer = _no_answers(g, run_profile, meta.get("no_answer"))
        counts["no_answer"] = int(no_answer.sum())
        shown = _presentation(task_name, meta)
        entry: dict[str, Any] = {"title": meta["title"], "column": meta["column"], "metric": meta["metric"],
                                 **shown, "criteria": meta["rules"]["criteria"],
                                 "variant": meta["variant"], "rounds": rounds,
                                 "metrics": stats, "counts": counts,
                                 "greedy_identical_items": _identical_across_rounds(g, meta),
                                 "no_answer": _no_answer_facts(g, no_answer), "published": None}
        value = published_value(published, shown["published_column"]) if published is not None else None
        if value is not None and meta["variant"] == "full":
            entry["published"] = _versus_published(value, stats.get("score"))
        tasks[task_name] = entry
    tasks = {t: tasks[t] for t in report_order(tasks)}
    complete = not any(sum(unfinished(t["counts"]).values()) for t in tasks.values())
    published_fields = card.summary_fields()
    if published is not None and cfg["variant"] != "full":
        published_fields["published_note"] = (f"Published row {published_label(published)}: not compared, "
                                              f"this run used the {cfg['variant']} data.")
    return {"schema": SUMMARY_SCHEMA, "run": cfg["name"], "model": answering_model(cfg)["path"], "label": cfg.get("label") or row_label(name, effort),
            "reasoning_effort": effort, "judge_model": cfg["judge"]["model"], "variant": cfg["variant"],
            "rounds": cfg["rounds"], "compat": cfg.get("compat", DEFAULT_COMPAT),
            "greedy": bool((cfg.get("generation") or {}).get("greedy")), "complete": complete,
            **published_fields, "warnings": _no_answer_warnings(tasks, cfg, store.meta("model_format")), "tasks": tasks}


def _versus_published(value: float, score: dict[str, Any] | None) -> dict[str, Any]:
    """Δ and the reproduction verdict of the measured score against a published mean of three rounds."""
    if score is None:
        return {"value": value, "rounds": PUBLISHED_ROUNDS, "delta": None, **reproduction([], value),
                "verdict_note": "no valid judgment: nothing to compare"}
    present = [v for v in score["per_round"].values() if v is not None]
    out = {"value": value, "rounds": PUBLISHED_ROUNDS, "delta": score["mean"] - value, **reproduction(present, value)}
    if score["missing_rounds"] and out["verdict"] is not None:
        out["verdict_note"] = f"from {len(present)} rounds: {rounds_text(score['missing_rounds'])} missing"
    return out


def _no_answers(gens: pd.DataFrame, run_profile: Any, policy: str | None) -> pd.Series:
    """Per stored generation: the model gave no answer — the judge (and the next turn) saw None, an empty or blank
    answer, or nothing. A failed call (`error`) is not counted here: it says nothing about the model and is asked
    again (`unfinished`)."""
    def none(row: Any) -> bool:
        if row.gen_status in TRANSIENT_GENERATION:
            return False
        answer = answer_for(run_profile, row.gen_status, None if pd.isna(row.final) else row.final, policy)
        return answer is None or not answer.strip()

    return gens.apply(none, axis=1).astype(bool) if not gens.empty else pd.Series([], dtype=bool)


def _no_answer_facts(gens: pd.DataFrame, no_answer: pd.Series) -> dict[str, Any]:
    """Of the stored answers that did not fail, how many had none (their share), and their statuses (no final channel
    written, out of tokens)."""
    without = gens[no_answer]
    answered = int((~gens["gen_status"].isin(TRANSIENT_GENERATION)).sum()) if not gens.empty else 0
    return {"answers": answered, "count": int(len(without)),
            "share": float(len(without) / answered) if answered else 0.0,
            "statuses": {str(k): int(v) for k, v in without["gen_status"].value_counts().items()}}


def _no_answer_warnings(tasks: dict[str, Any], cfg: dict[str, Any], model_format: dict[str, Any] | None) -> list[str]:
    """One sentence per task whose answers lacked a final answer beyond `outcome.NO_ANSWER_WARN`: what happened and
    what to check."""
    fmt = (model_format or {}).get("reasoning_format")
    check_format = (f"model.reasoning.format (this run: {fmt})" if fmt else
                    "the server's reasoning parser" if cfg["model"].get("backend") == "openai" else
                    "model.reasoning.format")
    budget = (cfg.get("generation") or {}).get("max_new_tokens")
    warnings = []
    for entry in tasks.values():
        facts = entry["no_answer"]
        count, stored = facts["count"], facts["answers"]
        if facts["share"] > NO_ANSWER_WARN:
            statuses = ", ".join(f"{status} {n}" for status, n in sorted(facts["statuses"].items()))
            warnings.append(f"{entry['column']}: {count} of {stored} answers ({facts['share']:.0%}) had no final answer "
                            f"({statuses}), so the judge saw None or an empty answer; check {check_format}, the "
                            f"model's stop tokens, and generation.max_new_tokens ({budget}).")
    return warnings


def failed_on_the_api(counts: dict[str, int]) -> int:
    """Judgments that a later run asks again (api_error, timeout): the task is not complete while there are any."""
    return sum(counts[status] for status in TRANSIENT_JUDGMENT)


def counted(n: int, phrase: str) -> str:
    """"3 answers failed", "1 answer failed": `phrase` starts with a plural noun."""
    return f"{n} {phrase if n != 1 else phrase.replace('s ', ' ', 1)}"


def unfinished(counts: dict[str, int]) -> dict[str, int]:
    """What the same command run again still has to do for a task; it is complete when all are 0: every slot has an
    answer that did not fail and a final judgment of that answer (the store holds no judgment of a replaced answer:
    `Store.put_generation`)."""
    return {"answers failed": sum(counts[f"gen_{status}"] for status in TRANSIENT_GENERATION),
            "answers not generated": counts.get("gen_missing", 0),  # a summary written before it was counted
            "judgments missing": counts["missing"],
            "judgments failed on the API": failed_on_the_api(counts)}


def rounds_text(rounds: list[int]) -> str:
    return ("round " if len(rounds) == 1 else "rounds ") + ", ".join(str(r) for r in rounds)


def _identical_across_rounds(gens: pd.DataFrame, meta: dict[str, Any]) -> dict[str, int] | None:
    """How many items in greedy categories produced the same answers in every round (expected: all)."""
    greedy = set(meta.get("greedy_categories") or ())
    if not greedy or gens.empty or gens["round"].nunique() < 2:
        return None
    subset = gens[gens["category"].isin(greedy)]
    same = subset.groupby(["item_id", "turn"])["final"].nunique(dropna=False)
    items = subset["item_id"].nunique()
    identical_items = int((same.groupby(level="item_id").max() == 1).sum())
    return {"greedy_items": int(items), "identical": identical_items}
