"""Can the judge be trusted? Agreement between two judges on the same answers, the noise of one judge over
rounds, and whether two judges order several model rows alike.

- Two runs over the same answers (`rejudge` makes the second): per task and metric, Pearson, Spearman, Kendall τ-b,
  exact and within-one agreement, quadratic-weighted Cohen's kappa, the mean difference B − A with a paired
  bootstrap CI over questions (metrics.paired_difference), confusion matrices and the largest disagreements.
- One run: the round-to-round (test–retest) agreement of its judge on answers that were identical in both rounds,
  and the share of the row's variance over rounds that comes from the judge (see `judge_noise`). Two runs with the
  same judge (a rejudge with the cache off) measure that share on every answer (see `_retest`).
- Rows A1:B1 A2:B2 …: Kendall τ between the orders the two judges give the rows, with a bootstrap over questions.

Statistics work on observations (metrics.observations): one value per judged (round, item, turn) and metric.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from .errors import UserError
from .kinds import TaskRules, kind
from .metrics import bootstrap_means, cluster_arrays, observations, paired_difference, round_means
from .plots import write_confusion_plot
from .records import SLOT_IN_TASK
from .results import RunSummary
from .run_meta import TASKS
from .rundir import write_json, write_text
from .store import open_run
from .summary import compute_summary, run_frames
from .view import compare_link, page_plots, write_page

SLOT = list(SLOT_IN_TASK)


# ---------------------------------------------------------------- statistics on paired scores


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b (ties counted as τ-b does); NaN when either side is constant."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b, variant="b").statistic)


def confusion(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts): counts[i, j] = how often A gave values[i] and B gave values[j]. An integer scale keeps
    its unused scores, so the matrix reads as the scale does."""
    values = np.union1d(a, b)
    if len(values) and np.all(values == np.round(values)) and values[-1] - values[0] <= 20:
        values = np.arange(values[0], values[-1] + 1)
    counts = np.zeros((len(values), len(values)), dtype=int)
    np.add.at(counts, (np.searchsorted(values, a), np.searchsorted(values, b)), 1)
    return values, counts


def quadratic_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (the distance between the scores, squared)."""
    values, counts = confusion(a, b)
    observed = counts / counts.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    weights = np.subtract.outer(values, values) ** 2
    denominator = float(np.sum(weights * expected))
    return 1.0 - float(np.sum(weights * observed)) / denominator if denominator else float("nan")


def agreement(scores_a: ArrayLike, scores_b: ArrayLike, rate: bool = False) -> dict[str, Any]:
    """Agreement statistics of paired scores; a statistic that is undefined (a constant side) is None."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    frame = pd.DataFrame({"a": a, "b": b})
    stats = {"n": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
             "pearson": frame.corr(method="pearson").iloc[0, 1], "spearman": frame.corr(method="spearman").iloc[0, 1],
             "kendall_tau_b": kendall_tau_b(a, b), "exact": float(np.mean(a == b)),
             "within_one": None if rate else float(np.mean(np.abs(a - b) <= 1)), "quadratic_kappa": quadratic_kappa(a, b)}
    return {k: (None if np.isnan(v) else float(v)) if isinstance(v, float) else v for k, v in stats.items()}


# ---------------------------------------------------------------- runs


@dataclass
class RunData:
    dir: Path
    summary: RunSummary
    rules: dict[str, TaskRules]
    answers: pd.DataFrame  # task, round, item_id, turn, category, answer (hash of what the judge saw as this answer)
    judged: pd.DataFrame   # task, round, item_id, turn, category, status, scores

    @property
    def name(self) -> str:
        return f"{self.summary.run} (judge {self.summary.judge_model})"

    def observations(self, task: str) -> pd.DataFrame:
        return observations(self.rules[task], self.judged[self.judged["task"] == task])


def load_run(run_dir: Path) -> RunData:
    store = open_run(run_dir, "run directories")
    try:
        summary = compute_summary(store)
        metas = store.meta(TASKS) or {}
        _, gens, judged = run_frames(store)
    finally:
        store.close()
    rules = {t: m.rules for t, m in metas.items()}
    gens = gens.copy()
    gens["answer"] = [_answer_hash(s, f) for s, f in zip(gens["gen_status"], gens["final"], strict=True)]
    return RunData(run_dir, summary, rules, gens[["task", *SLOT, "category", "answer"]], judged)


def _answer_hash(status: str, final: str | None) -> str:
    return hashlib.sha256(f"{status}\0{final if final is not None else ''}".encode()).hexdigest()[:16]


def require_same_answers(a: RunData, b: RunData) -> None:
    """Refuse to compare judges on different answers: the difference would mix the judges with the models."""
    merged = a.answers.merge(b.answers, on=["task", *SLOT], suffixes=("_a", "_b"))
    if merged.empty:
        raise UserError(f"{a.dir} and {b.dir} share no generated answer (no common task, item, turn and round)")
    differ = merged[merged["answer_a"] != merged["answer_b"]]
    if len(differ):
        first = differ.iloc[0]
        raise UserError(f"{a.dir} and {b.dir} hold different answers for {len(differ)} of {len(merged)} common slots "
                        f"(first: {first['task']} item {first['item_id']} turn {first['turn']} round {first['round']}); "
                        f"agree compares judges on the same answers: make the second run with "
                        f"`python -m eval rejudge {a.dir} --set judge.model=… --out DIR`")


def _metric_names(obs: pd.DataFrame, rules: TaskRules) -> list[str]:
    """The metrics worth comparing one by one, in reading order: the kind's (categories are too small to say much
    alone)."""
    present = set(obs["metric"].unique().tolist())
    return [m for m in kind(rules.metric).compared_metrics(rules) if m in present]


def _is_rate(rules: TaskRules, metric: str) -> bool:
    """A 0/100 indicator: "within one" means nothing for it."""
    return metric in kind(rules.metric).rate_metrics


# ---------------------------------------------------------------- two judges on the same answers


def compare_judges(a: RunData, b: RunData, top: int = 10) -> dict[str, Any]:
    require_same_answers(a, b)
    tasks: dict[str, Any] = {}
    for task in [t for t in a.summary.tasks if t in b.summary.tasks]:
        obs_a, obs_b = a.observations(task), b.observations(task)
        pairs = obs_a.merge(obs_b, on=[*SLOT, "metric"], suffixes=("_a", "_b"))
        if pairs.empty:
            continue
        metrics = {}
        for metric in _metric_names(pairs, a.rules[task]):
            p = pairs[pairs["metric"] == metric]
            stats = agreement(p["value_a"].to_numpy(), p["value_b"].to_numpy(), rate=_is_rate(a.rules[task], metric))
            diff = paired_difference(obs_a[obs_a["metric"] == metric].merge(p[SLOT], on=SLOT),
                                     obs_b[obs_b["metric"] == metric].merge(p[SLOT], on=SLOT), metric)
            assert diff is not None  # the pairs are questions both judged
            stats.update(difference=diff.difference, ci95=list(diff.ci95), questions=diff.items)
            if a.summary.judge_model == b.summary.judge_model:
                stats["retest"] = _retest(p, obs_a[obs_a["metric"] == metric], _sd(a.summary, task, metric))
            metrics[metric] = stats
        score = pairs[pairs["metric"] == "score"]
        values, counts = confusion(score["value_a"].to_numpy(), score["value_b"].to_numpy())
        tasks[task] = {"column": a.summary.tasks[task].column, "metrics": metrics,
                       "confusion": {"values": values.tolist(), "counts": counts.tolist()},
                       "disagreements": [{**d, "link": compare_link(task, d["item_id"], d["turn"])} for d in
                                         _largest_disagreements(score, a.answers[a.answers["task"] == task], top)]}
    if not tasks:
        raise UserError(f"{a.dir} and {b.dir} share no judged answer: nothing to compare")
    return {"mode": "judges", "a": _describe(a), "b": _describe(b), "tasks": tasks}


def _retest(pairs: pd.DataFrame, obs_a: pd.DataFrame, row_sd: float | None) -> dict[str, Any]:
    """The same judge twice on every answer: its variance is half the mean squared difference of the two
    judgments; run A's variance of a slot over rounds holds that plus the change of answer between rounds."""
    var_judge = float(np.mean((pairs["value_a"] - pairs["value_b"]) ** 2) / 2)
    over_rounds = obs_a.set_index(["item_id", "turn", "round"])["value"].unstack("round").dropna()
    var_total = float(over_rounds.var(axis=1, ddof=1).mean()) if over_rounds.shape[1] > 1 and len(over_rounds) else None
    share = var_judge / var_total if var_total else None
    return {"judge_variance": var_judge, "variance_over_rounds": var_total, "judge_share_of_variance": share,
            "row_sd": row_sd, "judge_sd": float(np.sqrt(share) * row_sd) if share is not None and row_sd is not None else None}


def _sd(summary: RunSummary, task: str, metric: str) -> float | None:
    """A metric's SD over rounds, as the run's summary gives it (None where it has none)."""
    stats = summary.tasks[task].metrics.get(metric)
    return stats.sd if stats else None


def _describe(run: RunData) -> dict[str, Any]:
    return {"dir": str(run.dir), "run": run.summary.run, "label": run.summary.label,
            "judge_model": run.summary.judge_model}


def _largest_disagreements(score: pd.DataFrame, answers: pd.DataFrame, top: int) -> list[dict[str, Any]]:
    rows = score.assign(gap=(score["value_b"] - score["value_a"]).abs())
    rows = rows[rows["gap"] > 0].merge(answers[[*SLOT, "category"]], on=SLOT, how="left")
    rows = rows.sort_values(["gap", "item_id", "turn", "round"], ascending=[False, True, True, True], kind="stable").head(top)
    return [{"round": int(r["round"]), "item_id": r["item_id"], "turn": int(r["turn"]),
             "category": r["category"] if isinstance(r["category"], str) else None, "a": float(r["value_a"]),
             "b": float(r["value_b"])}
            for r in rows.to_dict("records")]


# ---------------------------------------------------------------- one judge over rounds


def judge_noise(run: RunData) -> dict[str, Any]:
    """Per task and metric: how the judge agrees with itself from round to round, and its share of the variance.

    Test–retest: pairs of rounds (r, s) of the same item and turn whose judge input (the answers of turns 1..turn)
    was identical — in practice the greedy categories — against all pairs of rounds.

    Share of the variance: the variance of a slot's value over rounds is judge noise where the answers were
    identical, and judge noise plus the change of answer elsewhere. judge share = (mean within-slot variance on
    identical answers) / (mean within-slot variance on all slots). A row's SD over rounds is the SD of a mean of
    independent slots, so the same share holds for its variance, and √share × SD is the part of the SD the judge
    alone would give. It assumes the judge is as noisy on the other answers as on the identical ones."""
    tasks: dict[str, Any] = {}
    for task, entry in run.summary.tasks.items():
        if len(entry.rounds) < 2:
            continue
        obs = run.observations(task)
        inputs = _judge_inputs(run.answers[run.answers["task"] == task])
        obs = obs.merge(inputs, on=SLOT, how="inner")
        metrics = {}
        for metric in _metric_names(obs, run.rules[task]):
            m = obs[obs["metric"] == metric]
            metrics[metric] = _noise_of_metric(m, _sd(run.summary, task, metric), _is_rate(run.rules[task], metric))
        tasks[task] = {"column": entry.column, "rounds": entry.rounds, "metrics": metrics}
    if not tasks:
        raise UserError(f"{run.dir}: judge noise needs at least two rounds; add rounds with `python -m eval run … --rounds 3`")
    return {"mode": "rounds", "a": _describe(run), "tasks": tasks}


def _judge_inputs(answers: pd.DataFrame) -> pd.DataFrame:
    """Per slot, the answers the judge saw for it (MT-Bench turn 2 is judged with turn 1's answer too)."""
    answers = answers.sort_values(["round", "item_id", "turn"])
    seen: list[str] = []
    inputs: list[str] = []
    conversation = None
    for r in answers.itertuples(index=False):
        if conversation != (r.round, r.item_id):
            conversation, seen = (r.round, r.item_id), []
        seen.append(str(r.answer))  # a hash (RunData.answers)
        inputs.append("/".join(seen))
    return answers.assign(judge_input=inputs)[[*SLOT, "judge_input"]]


def _noise_of_metric(m: pd.DataFrame, row_sd: float | None, rate: bool) -> dict[str, Any]:
    by_slot = m.set_index(["item_id", "turn", "round"])
    wide_value, wide_input = by_slot["value"].unstack("round"), by_slot["judge_input"].unstack("round")
    same_a, same_b, all_a, all_b = [], [], [], []
    for r, s in combinations(wide_value.columns, 2):
        both = wide_value[[r, s]].dropna()
        identical = wide_input.loc[both.index, r] == wide_input.loc[both.index, s]
        all_a += both[r].tolist()
        all_b += both[s].tolist()
        same_a += both[r][identical].tolist()
        same_b += both[s][identical].tolist()
    complete = wide_value.dropna()
    within = complete.var(axis=1, ddof=1)
    identical_slots = wide_input.loc[complete.index].nunique(axis=1) == 1
    var_total = float(within.mean()) if len(within) else None
    var_judge = float(within[identical_slots].mean()) if identical_slots.any() else None
    share = var_judge / var_total if var_judge is not None and var_total else None
    return {"identical_answers": agreement(same_a, same_b, rate) if same_a else None,
            "all_answers": agreement(all_a, all_b, rate) if all_a else None,
            "slots": int(len(complete)), "identical_slots": int(identical_slots.sum()),
            "within_slot_variance": {"identical_answers": var_judge, "all_answers": var_total},
            "judge_share_of_variance": share, "row_sd": row_sd,
            "judge_sd": float(np.sqrt(share) * row_sd) if share is not None and row_sd is not None else None}


# ---------------------------------------------------------------- ranking of rows under two judges


def ranking_agreement(rows: list[tuple[RunData, RunData]]) -> dict[str, Any]:
    """Per task: the rows' scores under judge A and judge B, Kendall τ-b between the two orders, its 95 % bootstrap
    interval over questions (the same resampled questions for every row and both judges), and how often a
    resample keeps the order of every pair of rows."""
    if len(rows) < 2:
        raise UserError("--rows: give at least two rows A:B (a ranking needs two models)")
    for side, runs in (("A", [a for a, _ in rows]), ("B", [b for _, b in rows])):
        judges = sorted({r.summary.judge_model for r in runs})
        if len(judges) > 1:
            raise UserError(f"--rows: the {side} runs were judged by different judges ({', '.join(judges)}); "
                            f"give A:B pairs with one judge on each side")
    for a, b in rows:
        require_same_answers(a, b)
    runs = [run for pair in rows for run in pair]
    common = [t for t in runs[0].summary.tasks if all(t in r.summary.tasks for r in runs)]
    tasks: dict[str, Any] = {}
    for task in common:
        obs = [r.observations(task) for r in runs]
        obs = [o[o["metric"] == "score"] for o in obs]
        items = sorted(set.intersection(*(set(o["item_id"]) for o in obs)))
        if not items:
            continue
        arrays = [cluster_arrays(o[o["item_id"].isin(items)], items, sorted(o["round"].unique().tolist())) for o in obs]
        means = np.array([round_means(*arr).mean() for arr in arrays])
        score_a, score_b = means[0::2], means[1::2]
        tau = kendall_tau_b(score_a, score_b)
        entry: dict[str, Any] = {"column": runs[0].summary.tasks[task].column, "questions": len(items),
                                 "rows": [{"a_dir": str(a.dir), "b_dir": str(b.dir), "label": a.summary.label,
                                           "a": float(x), "b": float(y)} for (a, b), x, y in zip(rows, score_a, score_b, strict=True)],
                                 "kendall_tau_b": None if np.isnan(tau) else tau, "ci95": [None, None],
                                 "same_order_share": None}
        if len(items) >= 2:
            boot = np.stack(bootstrap_means(arrays, len(items)), axis=1)  # resample × run
            taus = np.array([kendall_tau_b(x[0::2], x[1::2]) for x in boot])
            taus = taus[~np.isnan(taus)]
            if taus.size:
                entry["ci95"] = [float(v) for v in np.percentile(taus, [2.5, 97.5])]
            entry["same_order_share"] = float(np.mean([_same_order(x[0::2], x[1::2]) for x in boot]))
        tasks[task] = entry
    if not tasks:
        raise UserError("--rows: the runs share no task with judged questions")
    return {"mode": "rows", "judges": [rows[0][0].summary.judge_model, rows[0][1].summary.judge_model],
            "tasks": tasks}


def _same_order(a: np.ndarray, b: np.ndarray) -> bool:
    """Every pair of rows is ordered alike (ties count as an order of their own)."""
    return bool(np.all(np.sign(np.subtract.outer(a, a)) == np.sign(np.subtract.outer(b, b))))


# ---------------------------------------------------------------- output


def _f(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _label(metric: str) -> str:
    return {"score": "score", "turn1": "turn 1", "turn2": "turn 2", "violation_rate": "violation rate (%)",
            "acceptable_rate": "acceptable rate (%)"}.get(metric, metric)


def render_judges(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    out = [f"# Judge agreement: {a['label']}", "",
           f"A: `{a['judge_model']}` ({a['dir']}) · B: `{b['judge_model']}` ({b['dir']}) · same answers, "
           "pairs = judged (round, item, turn); B − A with a 95 % paired bootstrap CI over questions", "",
           "| Benchmark | metric | n | Pearson | Spearman | Kendall τ-b | exact | within 1 | QW kappa | mean A | mean B | B − A [95 % CI] |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t in result["tasks"].values():
        for metric, s in t["metrics"].items():
            lo, hi = s["ci95"]
            ci = f" [{_f(lo, sign=True)}, {_f(hi, sign=True)}]" if lo is not None else ""
            out.append(f"| {t['column']} | {_label(metric)} | {s['n']} | {_f(s['pearson'])} | {_f(s['spearman'])} | "
                       f"{_f(s['kendall_tau_b'])} | {_f(s['exact'])} | {_f(s['within_one'])} | {_f(s['quadratic_kappa'])} | "
                       f"{_f(s['mean_a'])} | {_f(s['mean_b'])} | {_f(s['difference'], sign=True)}{ci} |")
    retest = [(t["column"], metric, s["retest"]) for t in result["tasks"].values() for metric, s in t["metrics"].items()
              if "retest" in s]
    if retest:
        out += ["", "## The same judge twice: its share of the variance",
                "", "Judge variance = half the mean squared difference between the two judgments of an answer; variance "
                "over rounds = A's variance of a slot's score over its rounds (judge + changing answers); judge SD = "
                "√share × the row's SD over rounds.", "",
                "| Benchmark | metric | judge variance | variance over rounds | judge share | row SD | of which judge |",
                "|---|---|---:|---:|---:|---:|---:|"]
        out += [f"| {column} | {_label(metric)} | {_f(r['judge_variance'], 3)} | {_f(r['variance_over_rounds'], 3)} | "
                f"{_f(r['judge_share_of_variance'])} | {_f(r['row_sd'])} | {_f(r['judge_sd'])} |" for column, metric, r in retest]
    for t in result["tasks"].values():
        if t["disagreements"]:
            page = result.get("page")
            out += ["", f"## {t['column']}: largest disagreements (score)", "",
                    "| item | turn | round | category | A | B |" + (" side by side |" if page else ""),
                    "|---|---:|---:|---|---:|---:|" + ("---|" if page else "")]
            for d in t["disagreements"]:
                out.append(f"| {d['item_id']} | {d['turn']} | {d['round']} | {d['category'] or ''} | {_f(d['a'], 0)} | "
                           f"{_f(d['b'], 0)} |" + (f" [A and B]({page}{d['link']}) |" if page else ""))
    return "\n".join(out) + "\n"


def render_noise(result: dict[str, Any]) -> str:
    a = result["a"]
    out = [f"# Judge noise: {a['label']} judged by `{a['judge_model']}` ({a['dir']})", "",
           "Round-to-round agreement of the judge on pairs of rounds whose answers were identical (test–retest), and on "
           "all pairs of rounds. Judge share: mean variance over rounds of a slot with identical answers ÷ the same on "
           "all slots; judge SD = √share × the row's SD over rounds.", "",
           "| Benchmark | metric | identical pairs | exact | within 1 | QW kappa | all pairs | exact | QW kappa | "
           "identical slots | judge share of variance | row SD | of which judge |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in result["tasks"].values():
        for metric, s in t["metrics"].items():
            same, every = s["identical_answers"] or {}, s["all_answers"] or {}
            out.append(f"| {t['column']} | {_label(metric)} | {same.get('n', 0)} | {_f(same.get('exact'))} | "
                       f"{_f(same.get('within_one'))} | {_f(same.get('quadratic_kappa'))} | {every.get('n', 0)} | "
                       f"{_f(every.get('exact'))} | {_f(every.get('quadratic_kappa'))} | "
                       f"{s['identical_slots']}/{s['slots']} | {_f(s['judge_share_of_variance'])} | {_f(s['row_sd'])} | "
                       f"{_f(s['judge_sd'])} |")
    out += ["", "A task without identical answers (sampling at temperature > 0) has no test–retest pairs: rejudge the "
            "run with the same judge and `--set judge.cache=off`, then `agree RUN RETEST` measures the judge on every "
            "answer."]
    return "\n".join(out) + "\n"


def render_rows(result: dict[str, Any]) -> str:
    judge_a, judge_b = result["judges"]
    out = [f"# Ranking agreement: judge A `{judge_a}` vs judge B `{judge_b}`", "",
           "Kendall τ-b between the orders of the rows under the two judges; 95 % bootstrap over questions (the same "
           "resampled questions for every row and both judges); same order = share of resamples where every pair of "
           "rows keeps its order.", "",
           "| Benchmark | questions | Kendall τ-b [95 % CI] | same order | rows (A → B) |", "|---|---:|---|---:|---|"]
    for t in result["tasks"].values():
        lo, hi = t["ci95"]
        ci = f" [{_f(lo)}, {_f(hi)}]" if lo is not None else ""
        rows = "; ".join(f"{Path(r['a_dir']).name}: {r['a']:.2f} → {r['b']:.2f}" for r in t["rows"])
        out.append(f"| {t['column']} | {t['questions']} | {_f(t['kendall_tau_b'])}{ci} | {_f(t['same_order_share'])} | {rows} |")
    return "\n".join(out) + "\n"


def agree_command(run_dirs: list[Path], rows: list[str], out: Path | None, top: int) -> dict[str, Any]:
    if top < 0:
        raise UserError(f"--top must be 0 or more (got {top})")
    if rows and run_dirs:
        raise UserError("agree: give either RUN [RUN_B] or --rows A1:B1 A2:B2 …, not both")
    if rows:
        pairs = []
        for text in rows:
            dir_a, sep, dir_b = text.partition(":")
            if not sep or not dir_a or not dir_b:
                raise UserError(f"--rows {text!r}: expected RUN_A:RUN_B (the same model's run under judge A and judge B)")
            pairs.append((load_run(Path(dir_a)), load_run(Path(dir_b))))
        result = ranking_agreement(pairs)
        text = render_rows(result)
    elif len(run_dirs) == 1:
        result = judge_noise(load_run(run_dirs[0]))
        text = render_noise(result)
    elif len(run_dirs) == 2:
        a, b = load_run(run_dirs[0]), load_run(run_dirs[1])
        result = compare_judges(a, b, top)
        if out is not None:
            result["page"] = "report.html"  # A and B side by side, written below; the disagreements link into it
        text = render_judges(result)
    else:
        raise UserError("agree: give RUN_A RUN_B (two judges), one RUN (its judge over rounds), or --rows A1:B1 A2:B2 …")
    print(text)
    if out is not None:
        write_text(out / "agree.md", text)
        write_json(out / "agree.json", result)
        if result["mode"] == "judges":
            for task, t in result["tasks"].items():
                if not t["confusion"]["values"]:
                    continue
                write_confusion_plot(out / "plots" / f"confusion_{task}.png", t["confusion"]["values"],
                                     t["confusion"]["counts"], f"{t['column']}: score",
                                     f"A: {result['a']['judge_model']}", f"B: {result['b']['judge_model']}")
            write_page(run_dirs, out / result["page"], page_plots(out / "plots"))
        print(f"Written to {out}/ (agree.md, agree.json{', plots/, report.html' if result['mode'] == 'judges' else ''})")
    return result
