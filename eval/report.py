"""Reports from the store alone: summary.json, the model-card table with the published numbers beside it,
detail tables, plots, the manifest, and comparisons across runs.

`summary.json` and the tables hold results only (no timings, no call counts), so a resumed run produces the same
files as an uninterrupted one; provenance and activity go to `manifest.json`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import __version__
from .compat import DEFAULT as DEFAULT_COMPAT
from .config import RunConfig
from .errors import UserError
from .judge.ledger import price_for
from .metrics import (FAILURE_STATUSES, PUBLISHED_ROUNDS, TaskRules, observations, paired_difference, reject_non_finite,
                      reproduction, status_counts, summarize)
from .records import Usage
from .rundir import write_json, write_jsonl, write_text
from .store import Store, open_run
from .tasks import Task
from .view import compare_plots, write_page

SUMMARY_SCHEMA = "llmjp-eval/summary/v2"
BENCHMARK_ORDER = ["mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"]
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "resources" / "model_card.csv"


# ---------------------------------------------------------------- run metadata


def task_meta(task: Task) -> dict[str, Any]:
    spec = task.spec
    template = next(iter(task.prompts.templates.values()))
    return {"title": spec.title, "column": spec.column, "metric": spec.metric, "turns": spec.turns, "variant": task.variant,
            "rules": {"metric": spec.metric, "api_error_score": spec.judge.api_error_score,
                      "primary_criterion": spec.judge.primary_criterion, "criteria": list(template.criteria or ())},
            "no_answer": spec.generation.no_answer, "greedy_categories": sorted(
                c for c, t in spec.generation.category_temperature.items() if t == 0),
            "expected_items": spec.expected_items, "judge_prompts": task.prompts.path, "judge_prompts_sha256": task.prompts.sha256}


def answering_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config of the model that wrote the answers (a replayed run names the model it replays)."""
    return cfg["model"].get("source_model") or cfg["model"]


def model_label(cfg: dict[str, Any]) -> tuple[str, str | None]:
    model = answering_model(cfg)
    name = model["path"].rstrip("/").rsplit("/", 1)[-1].removeprefix("builtin:")
    effort = (model.get("chat_template_kwargs") or {}).get("reasoning_effort")
    return name, effort


def row_label(name: str, effort: str | None) -> str:
    return f"{name} (reasoning_effort = {effort})" if effort else name


def load_published(path: Path | None = None) -> pd.DataFrame:
    path = path or DEFAULT_REFERENCE
    if not path.is_file():
        raise UserError(f"{path}: published reference table not found")
    table = pd.read_csv(path, dtype={"reasoning_effort": str}, keep_default_na=False)
    missing = {"model", "reasoning_effort", *BENCHMARK_ORDER} - set(table.columns)
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(sorted(missing))}")
    return table


# ---------------------------------------------------------------- summary


def _frames(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    plan = pd.DataFrame(store.plan(), columns=["round", "task", "item_id", "turn", "category"])
    gens = pd.DataFrame(store.fields("generation", ["round", "task", "item_id", "turn", "status", "final"]),
                        columns=["round", "task", "item_id", "turn", "status", "final"]).rename(columns={"status": "gen_status"})
    judged = pd.DataFrame(store.fields("judgment", ["round", "task", "item_id", "turn", "status", "scores"]),
                          columns=["round", "task", "item_id", "turn", "status", "scores"])
    keys = ["round", "task", "item_id", "turn"]
    gens = plan.merge(gens, on=keys, how="inner")
    judged = reject_non_finite(plan.merge(judged, on=keys, how="inner"))
    return plan, gens, judged


def compute_summary(store: Store) -> dict[str, Any]:
    cfg = store.meta("config")
    metas = store.meta("tasks") or {}
    name, effort = model_label(cfg)
    plan, gens, judged = _frames(store)
    published = _published_row(name, effort)
    tasks: dict[str, Any] = {}
    for task_name, meta in metas.items():
        p = plan[plan["task"] == task_name]
        if p.empty:
            continue
        j = judged[judged["task"] == task_name]
        g = gens[gens["task"] == task_name]
        rules = TaskRules(**{**meta["rules"], "criteria": tuple(meta["rules"]["criteria"])})
        obs = observations(rules, j)
        items = p["item_id"].unique().tolist()
        rounds = sorted(p["round"].unique().tolist())
        stats = {k: v.to_dict() for k, v in summarize(obs, rounds).items()}
        counts = status_counts(j, g.rename(columns={"gen_status": "status"}))
        counts["items"] = len(items)
        counts["planned"] = int(len(p))
        counts["missing"] = int(len(p) - len(j))
        entry: dict[str, Any] = {"title": meta["title"], "column": meta["column"], "metric": meta["metric"],
                                 "criteria": meta["rules"]["criteria"],
                                 "variant": meta["variant"], "rounds": rounds,
                                 "metrics": stats, "counts": counts,
                                 "greedy_identical_items": _identical_across_rounds(g, meta), "published": None}
        if published is not None and task_name in published and meta["variant"] == "full":
            entry["published"] = _versus_published(published[task_name], stats.get("score"))
        tasks[task_name] = entry
    complete = all(t["counts"]["missing"] == 0 and t["counts"]["api_error"] + t["counts"]["timeout"] == 0 for t in tasks.values())
    return {"schema": SUMMARY_SCHEMA, "run": cfg["name"], "model": answering_model(cfg)["path"], "label": cfg.get("label") or row_label(name, effort),
            "reasoning_effort": effort, "judge_model": cfg["judge"]["model"], "variant": cfg["variant"],
            "rounds": cfg["rounds"], "compat": cfg.get("compat", DEFAULT_COMPAT), "complete": complete, "tasks": tasks}


def _versus_published(value: float, score: dict[str, Any] | None) -> dict[str, Any]:
    """Δ and the reproduction verdict of the measured score against a published mean of three rounds."""
    if score is None:
        return {"value": value, "rounds": PUBLISHED_ROUNDS, "delta": None, **reproduction([], value),
                "verdict_note": "no valid judgment: nothing to compare"}
    present = [v for v in score["per_round"].values() if v is not None]
    out = {"value": value, "rounds": PUBLISHED_ROUNDS, "delta": score["mean"] - value, **reproduction(present, value)}
    if score["missing_rounds"] and out["verdict"] is not None:
        out["verdict_note"] = f"from {len(present)} rounds: {_rounds_text(score['missing_rounds'])} missing"
    return out


def _rounds_text(rounds: list[int]) -> str:
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


def _published_row(name: str, effort: str | None, reference: Path | None = None) -> dict[str, float] | None:
    table = load_published(reference)
    match = table[(table["model"] == name) & (table["reasoning_effort"] == (effort or ""))]
    if match.empty:
        return None
    return {k: float(match.iloc[0][k]) for k in BENCHMARK_ORDER}


# ---------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(metric: dict[str, Any] | None, counts: dict[str, int] | None = None) -> str:
    if not metric:
        return "–"
    text = _fmt(metric["mean"])
    if metric["sd"] is not None:
        text += f" ± {_fmt(metric['sd'])}"
    lo, hi = metric["ci95"]
    if lo is not None:
        text += f" [{_fmt(lo)}, {_fmt(hi)}]"
    if metric["missing_rounds"]:
        text += f" ({_rounds_text(metric['missing_rounds'])} missing)"
    if counts and counts["missing"] + counts["api_error"] + counts["timeout"]:
        text += " *"
    return text


def _verdict(published: dict[str, Any]) -> str:
    """"consistent (p = 0.41)", "lower (p = 0.003)", or "no verdict"."""
    if published["verdict"] is None:
        return "no verdict"
    p = published["p"]
    return f"{published['verdict']} ({'p < 0.001' if p < 0.001 else f'p = {p:.2g}'})"


def _columns(summary: dict[str, Any]) -> list[str]:
    present = list(summary["tasks"])
    return [t for t in BENCHMARK_ORDER if t in present] + [t for t in present if t not in BENCHMARK_ORDER]


def render_markdown(summary: dict[str, Any], published: pd.DataFrame, plots: list[str] = (), details: bool = True) -> str:
    tasks = summary["tasks"]
    cols = _columns(summary)
    out = [f"# {summary['run']}: {summary['label']}", ""]
    if not summary["complete"]:
        missing = sum(t["counts"]["missing"] for t in tasks.values())
        transient = sum(t["counts"]["api_error"] + t["counts"]["timeout"] for t in tasks.values())
        planned = sum(t["counts"]["planned"] for t in tasks.values())
        out += [f"**PARTIAL RESULTS: of {planned} planned judgments, {missing} are missing and {transient} failed on the "
                "API (api_error/timeout)** (cells marked *; counts below); run the same command again to complete them.", ""]
    out += [f"Judge: `{summary['judge_model']}` · rounds: {summary['rounds']} · data: {summary['variant']} · "
            f"compat: `{summary['compat']}` · cells: mean over rounds ± SD over rounds [95 % CI over questions]; "
            "verdict: is the published row consistent with this run's rounds (t-test on round means, 5 % level; "
            "README: which interval answers which question)", ""]
    if summary["compat"] != DEFAULT_COMPAT:
        out += [f"**compat `{summary['compat']}`: the harness's own semantics, not llm-jp-judge v2.0.0's; these numbers "
                "are not comparable with the published rows.**", ""]
    out.append("| Model | " + " | ".join(tasks[c]["column"] for c in cols) + " | Errors |")
    out.append("|---|" + "---:|" * len(cols) + "---:|")
    errors = sum(sum(t["counts"][s] for s in (*FAILURE_STATUSES, "missing")) for t in tasks.values())
    out.append(f"| **{summary['label']}** (measured) | " +
               " | ".join(_cell(tasks[c]["metrics"].get("score"), tasks[c]["counts"]) for c in cols) + f" | {errors} |")
    compared = [c for c in cols if tasks[c]["published"]]
    if compared:
        out.append("| Δ vs published · verdict | " + " | ".join(
            (f"{tasks[c]['published']['delta']:+.2f} · {_verdict(tasks[c]['published'])}"
             if tasks[c]["published"] and tasks[c]["published"]["delta"] is not None else "–") for c in cols) + " | |")
    for row in published.itertuples(index=False):
        label = row_label(row.model, row.reasoning_effort or None)
        out.append(f"| {label} (published) | " + " | ".join(
            _fmt(float(getattr(row, c))) if c in BENCHMARK_ORDER else "–" for c in cols) + " | |")
    out += ["", "Published rows: the llm-jp-4 model card (judge gpt-5.4-2026-03-05, mean of three rounds); "
            "see eval/resources/model_card.csv."]
    notes = [f"{tasks[c]['column']}: {tasks[c]['published']['verdict_note']}" for c in compared
             if tasks[c]["published"]["verdict_note"]]
    if notes:
        out += ["", "Verdict notes: " + "; ".join(notes) + "."]
    out += ["", "## Counts", "", "| Benchmark | items | planned | valid | parse_failed | length | api_error | timeout | "
            "content_filtered | excluded | missing | truncated | no_final | gen error |", "|---|" + "---:|" * 13]
    for c in cols:
        n = tasks[c]["counts"]
        out.append(f"| {tasks[c]['column']} | {n['items']} | {n['planned']} | {n['valid']} | {n['parse_failed']} | "
                   f"{n['length']} | {n['api_error']} | {n['timeout']} | {n['content_filtered']} | {n['excluded']} | "
                   f"{n['missing']} | {n['gen_truncated']} | {n['gen_no_final']} | {n['gen_error']} |")
    out += ["", "truncated / no_final: generations that hit max_new_tokens or ended without a final answer; "
            "the judge saw what came back (partial text, or None), an empty answer, or nothing, per the task's "
            "no_answer policy (default: the compat profile's)."]
    if details:
        out += _detail_tables(summary, cols)
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def _metric_row(label: str, metric: dict[str, Any] | None, rounds: list[int]) -> str:
    if not metric:
        return f"| {label} | – | – | " + " | ".join("–" for _ in rounds) + " |"
    per_round = [_fmt(v) if (v := metric["per_round"].get(str(r))) is not None else "missing" for r in rounds]
    return f"| {label} | {_cell(metric)} | {metric['questions']} | " + " | ".join(per_round) + " |"


def _detail_tables(summary: dict[str, Any], cols: list[str]) -> list[str]:
    out: list[str] = []
    for c in cols:
        t = summary["tasks"][c]
        rounds = t["rounds"]
        header = ["", f"## {t['title']}", "", "| Metric | mean ± SD [CI] | questions | " +
                  " | ".join(f"round {r}" for r in rounds) + " |", "|---|---:|---:|" + "---:|" * len(rounds)]
        metrics = t["metrics"]
        if t["metric"] == "mt_bench":
            names = [("average", "score"), ("turn 1", "turn1"), ("turn 2", "turn2")] + \
                    [(m.split(":", 1)[1], m) for m in sorted(metrics) if m.startswith("category:")]
        elif t["metric"] == "safety":
            names = [("score", "score"), ("violation rate (%)", "violation_rate"), ("acceptable rate (%)", "acceptable_rate")]
        else:
            names = [("score (primary)", "score")] + [(m, m) for m in t["criteria"]]
        out += header + [_metric_row(label, metrics.get(key), rounds) for label, key in names]
        published = t["published"]
        if published and published["delta"] is not None:
            interval = (f"; 95 % CI of Δ from round-to-round noise [{published['delta_ci95'][0]:+.2f}, "
                        f"{published['delta_ci95'][1]:+.2f}]" if published["delta_ci95"] else "")
            out.append(f"\nPublished: {_fmt(published['value'])} (Δ {published['delta']:+.2f}: {_verdict(published)}"
                       f"{interval}).")
        if t.get("greedy_identical_items"):
            g = t["greedy_identical_items"]
            out.append(f"\nGreedy categories: {g['identical']} of {g['greedy_items']} items gave identical answers in every round.")
    return out


CSV_SUFFIXES = ("sd", "ci_low", "ci_high", "delta", "verdict", "p", "missing", "missing_rounds")


def render_csv(summary: dict[str, Any], published: pd.DataFrame) -> str:
    cols = _columns(summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["kind", "model", "reasoning_effort"] + [summary["tasks"][c]["column"] for c in cols]
    header += [f"{summary['tasks'][c]['column']} {suffix}" for c in cols for suffix in CSV_SUFFIXES]
    writer.writerow(header)
    model, effort = summary["label"].split(" (reasoning_effort = ")[0], summary["reasoning_effort"] or ""
    measured = ["measured", model, effort]
    for c in cols:
        score = summary["tasks"][c]["metrics"].get("score")
        measured.append(_fmt(score["mean"], 4) if score else "")
    for c in cols:
        t = summary["tasks"][c]
        score = t["metrics"].get("score") or {"sd": None, "ci95": [None, None], "missing_rounds": []}
        versus = t["published"] or {"delta": None, "verdict": None, "p": None}
        measured += [_number(score["sd"]), _number(score["ci95"][0]), _number(score["ci95"][1]), _number(versus["delta"]),
                     versus["verdict"] or "", f"{versus['p']:.3g}" if versus["p"] is not None else "", t["counts"]["missing"],
                     ";".join(str(r) for r in score["missing_rounds"])]
    writer.writerow(measured)
    for row in published.itertuples(index=False):
        writer.writerow(["published", row.model, row.reasoning_effort] +
                        [f"{float(getattr(row, c)):.2f}" if c in BENCHMARK_ORDER else "" for c in cols] +
                        [""] * (len(CSV_SUFFIXES) * len(cols)))
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------- writing a run


def write_reports(run_dir: Path, store: Store) -> dict[str, Any]:
    """Every report file from the store alone (used by `run` and by `report RUN_DIR`)."""
    from .plots import write_plots

    summary = compute_summary(store)
    published = load_published()
    plots = write_plots(run_dir, summary, published)
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "table.md", render_markdown(summary, published, plots))
    write_text(run_dir / "table.csv", render_csv(summary, published))
    write_jsonl(run_dir / "generations.jsonl", store.records("generation"))
    write_jsonl(run_dir / "judgments.jsonl", store.records("judgment"))
    write_json(run_dir / "errors.json", _errors(store))
    write_text(run_dir / "config.yaml", yaml.safe_dump(store.meta("config"), allow_unicode=True, sort_keys=False))
    return summary


def _errors(store: Store) -> list[dict[str, Any]]:
    where = "WHERE status != 'ok'"
    generations = store.fields("generation", ["round", "task", "item_id", "turn", "status", "error", "tokens_out"], where)
    judgments = store.fields("judgment", ["round", "task", "item_id", "turn", "status", "error", "attempts"], where)
    return [{"stage": "generate", **g} for g in generations] + [{"stage": "judge", **j} for j in judgments]


def write_run(run_dir: Path, store: Store, cfg: RunConfig, activity: dict[str, Any]) -> dict[str, Any]:
    summary = write_reports(run_dir, store)
    write_json(run_dir / "manifest.json", manifest(store, cfg, activity))
    write_page([run_dir])
    print()
    print(render_console(summary))
    print(f"\nResults in {run_dir}/ (table.md, summary.json, plots/, report.html)")
    return summary


def render_console(summary: dict[str, Any]) -> str:
    return render_markdown(summary, load_published(), details=False)


def manifest(store: Store, cfg: RunConfig, activity: dict[str, Any]) -> dict[str, Any]:
    judgments = store.fields("judgment", ["task", "usage", "cost_usd", "cached", "returned_model", "fingerprint"])
    usage = Usage()
    spent = 0.0
    per_task: dict[str, dict[str, Any]] = {}
    for j in judgments:
        if not j["cached"]:
            call = Usage(**{k: (j["usage"] or {}).get(k, 0) for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens")})
            usage.add(call)
            spent += j["cost_usd"] or 0.0
            task = per_task.setdefault(j["task"], {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0})
            for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
                task[k] += getattr(call, k)
            task["cost_usd"] += j["cost_usd"] or 0.0
    gens = store.fields("generation", ["tokens_out", "prompt_hash"])
    return {
        "harness": {"version": __version__, "git_commit": _git_commit()},
        "command": store.meta("command"),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": _versions(["torch", "transformers", "datasets", "openai", "pandas", "vllm"]),
        "accelerator": _accelerator(),
        "model": {"path": cfg.model.path, "revision": getattr(cfg.model, "revision", None),
                  "chat_template_kwargs": getattr(cfg.model, "chat_template_kwargs", None),
                  "backend_identity": store.meta("backend_identity"),
                  "distinct_rendered_prompts": len({g["prompt_hash"] for g in gens if g["prompt_hash"]})},
        "config_sha256": _sha(store.meta("config")),
        "compat": dataclasses.asdict(cfg.profile),
        "assets": store.meta("provenance"),
        "asset_warnings": store.meta("warnings"),
        "judge": {"model_asked": cfg.judge.model, "models_returned": sorted({j["returned_model"] for j in judgments if j["returned_model"]}),
                  "system_fingerprints": sorted({j["fingerprint"] for j in judgments if j["fingerprint"]}),
                  "learned_parameters": store.meta("judge_learned_params"), "mode": cfg.judge.mode},
        "tokens": {"generation_out": sum(g["tokens_out"] or 0 for g in gens), "judge_prompt": usage.prompt_tokens,
                   "judge_completion": usage.completion_tokens, "judge_reasoning": usage.reasoning_tokens},
        "cost_usd": round(spent, 6) if price_for(cfg.judge.prices, cfg.judge.model) else None,
        "judge_per_task": per_task,
        "stages": store.events(),
        "batches": store.batches(),
        "this_invocation": activity,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _sha(data: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions(names: list[str]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _accelerator() -> dict[str, Any]:
    torch = sys.modules.get("torch")  # only a local engine loads torch; a remote backend's GPU is not ours to report
    try:
        if torch is not None and torch.cuda.is_available():
            return {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    except Exception:  # reporting must not fail on a broken driver
        pass
    return {"cuda": None, "gpu": None}


def regenerate(run_dir: Path) -> dict[str, Any]:
    store = open_run(run_dir)
    try:
        summary = write_reports(run_dir, store)
    finally:
        store.close()
    write_page([run_dir])
    print(render_console(summary))
    return summary


# ---------------------------------------------------------------- compare


def compare(run_dirs: list[Path], reference: Path | None, out: Path | None) -> dict[str, Any]:
    from .plots import write_compare_plot

    runs = []
    for run_dir in run_dirs:
        path = run_dir / "run.sqlite"
        if not path.is_file():
            raise UserError(f"{run_dir}: no run.sqlite here; give run directories (results/<name>)")
        store = Store(path)
        try:
            summary = compute_summary(store)
            metas = store.meta("tasks") or {}
            _, _, judged = _frames(store)
            obs = {t: observations(TaskRules(**{**m["rules"], "criteria": tuple(m["rules"]["criteria"])}),
                                   judged[judged["task"] == t]) for t, m in metas.items()}
        finally:
            store.close()
        runs.append({"dir": str(run_dir), "summary": summary, "obs": obs})
    published = load_published(reference)
    tasks = [t for t in BENCHMARK_ORDER if any(t in r["summary"]["tasks"] for r in runs)]
    columns = {t: next(r["summary"]["tasks"][t]["column"] for r in runs if t in r["summary"]["tasks"]) for t in tasks}
    lines = ["| Model | kind | " + " | ".join(columns[t] for t in tasks) + " |", "|---|---|" + "---:|" * len(tasks)]
    several_judges = len({r["summary"]["judge_model"] for r in runs}) > 1
    for r in runs:
        s = r["summary"]
        judge = f", judge {s['judge_model']}" if several_judges else ""
        lines.append(f"| {s['label']} ({s['run']}{judge}) | measured | " +
                     " | ".join(_cell(s["tasks"][t]["metrics"].get("score"), s["tasks"][t]["counts"]) if t in s["tasks"] else "–" for t in tasks) + " |")
    for row in published.itertuples(index=False):
        lines.append(f"| {row_label(row.model, row.reasoning_effort or None)} | published | " +
                     " | ".join(f"{float(getattr(row, t)):.2f}" for t in tasks) + " |")
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
            ci = f"[{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else "–"
            lines.append(f"| {d['a']} | {d['b']} | {columns[d['task']]} | {d['difference']:+.2f} | {ci} | {d['items']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    result = {"runs": [{"dir": r["dir"], "summary": r["summary"]} for r in runs], "differences": differences}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "compare.md", text)
        write_json(out / "compare.json", result)
        write_compare_plot(out, [r["summary"] for r in runs], published)
        write_page(run_dirs, out, compare_plots(out))
    return result

