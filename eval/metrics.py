"""Statistics over rounds and questions, the same for every metric kind.

Every reported metric is a mean of observations (one per judged item-turn; which metrics a judgment gives is its
metric kind's, `eval/kinds/`), computed per round, then averaged over rounds (the model card's "average of three
rounds"). Parse failures and excluded answers are left out of every mean and counted; a score that is not a finite
number is a parse failure.

Two intervals answer two questions:
- `ci95`, how good is the model on this benchmark: a studentized bootstrap over questions (a question's turns and
  rounds move together), so it mostly reflects which questions were sampled;
- `reproduction`, did this run reproduce a published mean on the same questions: a t-test on the round means, so
  it reflects generation and judge noise only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .kinds import CallResult, TaskRules, kind
from .records import SLOT_IN_TASK
from .results import MetricStats, PairedDifference, Verdict, VersusPublished
from .statuses import GENERATION_FAILURES, UNJUDGED, JudgmentStatus, is_valid

N_BOOT = 2000
BOOT_SEED = 12345
ALPHA = 0.05
PUBLISHED_ROUNDS = 3  # the model card's rows are means of three rounds


def observations(rules: TaskRules, judged: pd.DataFrame) -> pd.DataFrame:
    """One row per (round, item, turn, metric) with the value that enters that metric's mean; which metrics and
    values a slot's judgments give is its metric kind's (`eval/kinds/`: `aggregate` over the calls of the slot).

    `judged` has columns round, item_id, turn, category, call, status, scores (dict): one row per judgment of a call
    the task makes (`summary.run_frames`).
    """
    metric = kind(rules.metric)
    slots: dict[tuple, list[Any]] = {}
    for r in judged.itertuples(index=False):
        slots.setdefault(tuple(getattr(r, c) for c in SLOT_IN_TASK), []).append(r)
    rows = [(*slot, name, value)
            for slot, judgments in slots.items()
            for name, value in metric.aggregate(rules, [CallResult(r.call, r.status, r.scores) for r in judgments],
                                                judgments[0].turn, judgments[0].category)]
    return pd.DataFrame(rows, columns=[*SLOT_IN_TASK, "metric", "value"])


def reject_non_finite(judged: pd.DataFrame) -> pd.DataFrame:
    """`ok` judgments holding a score that is not a finite number become `parse_failed`.

    The parser rejects such scores; this keeps them out of every mean and count also for stores written before it
    did, or edited by hand.
    """
    bad = [is_valid(status) and not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (scores or {}).values())
           for status, scores in zip(judged["status"], judged["scores"], strict=True)]
    if not any(bad):
        return judged
    judged = judged.copy()
    judged.loc[bad, "status"] = JudgmentStatus.PARSE_FAILED.value
    return judged


def cluster_arrays(obs: pd.DataFrame, items: list[str], rounds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """sum and count of a metric's observations per (item, round)."""
    index = {item: i for i, item in enumerate(items)}
    col = {r: j for j, r in enumerate(rounds)}
    sums = np.zeros((len(items), len(rounds)))
    counts = np.zeros((len(items), len(rounds)))
    for item, rnd, value in zip(obs["item_id"], obs["round"], obs["value"], strict=True):
        sums[index[item], col[rnd]] += value
        counts[index[item], col[rnd]] += 1
    return sums, counts


def _linearized(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of per-round means, each question's influence on it, and whether every round has an observation.

    Arrays are (..., items, rounds), with any leading bootstrap axes. The influence of question i is its share of
    the estimate's deviation, (1/R) Σ_r (sum_ir − mean_r · count_ir) / count_r (the delta method for this ratio
    estimator, questions as clusters).
    """
    totals, n = sums.sum(axis=-2), counts.sum(axis=-2)
    defined = (n > 0).all(axis=-1)
    n = np.maximum(n, 1)
    means = totals / n
    influence = ((sums - means[..., None, :] * counts) / n[..., None, :]).mean(axis=-1)
    return means.mean(axis=-1), influence, defined


def round_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over items per round (NaN for a round without observations); arrays may carry a leading bootstrap axis."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.sum(axis=-2) / counts.sum(axis=-2)


def bootstrap_means(arrays: list[tuple[np.ndarray, np.ndarray]], n_items: int, n_boot: int = N_BOOT,
                    seed: int = BOOT_SEED) -> list[np.ndarray]:
    """Per run (sums, counts per item and round), its mean over rounds on each of `n_boot` resamples of the
    questions — the same draws for every run, so differences and rankings stay paired. A resample that draws no
    question with an observation in some round has no mean (NaN), never the mean of the other rounds."""
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))
    return [round_means(sums[draws], counts[draws]).mean(axis=-1) for sums, counts in arrays]


def _estimate_and_se(runs: list[tuple[np.ndarray, np.ndarray]], weights: tuple[float, ...]):
    """Σ weight · estimate(run) and its cluster SE; with equal counts per question the SE is sd(question means)/√n."""
    parts = [_linearized(sums, counts) for sums, counts in runs]
    theta = sum(w * p[0] for w, p in zip(weights, parts, strict=True))
    influence = sum(w * p[1] for w, p in zip(weights, parts, strict=True))
    assert isinstance(influence, np.ndarray)  # a sum of at least one run's
    clusters = influence.shape[-1]
    se = np.sqrt(clusters / (clusters - 1) * (influence ** 2).sum(axis=-1))
    return theta, se, np.logical_and.reduce([p[2] for p in parts])


def _studentized_interval(runs: list[tuple[np.ndarray, np.ndarray]], weights: tuple[float, ...], n_boot: int,
                          seed: int, bounds: tuple[float, float] | None = None) -> tuple[float | None, float | None]:
    """95 % studentized (bootstrap-t) interval of Σ weight · estimate(run) over resampled questions.

    The runs' arrays cover the same questions (rows), and only rounds that have observations; a resample draws the
    same questions for every run. The percentile bootstrap is too narrow on few clusters (about 0.90 coverage at 10
    questions); the bootstrap-t keeps near-nominal coverage there, also under skew, and matches it at 80+.
    A resample in which a round has no observation has no estimate (that round's mean is undefined): it is left
    out, and when more than 5 % are, no interval is given. Where a few questions carry all the spread (a rate with
    one or two events), more than 2.5 % of resamples draw only equal questions, the studentized quantile is
    infinite, and the t-interval on question means (n − 1 df) is used instead. `bounds` clips the interval to what
    a mean can be.
    """
    n_items = runs[0][0].shape[0]
    if n_items < 2:
        return None, None
    theta, se, _ = _estimate_and_se(runs, weights)
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))
    boot_theta, boot_se, defined = _estimate_and_se([(sums[draws], counts[draws]) for sums, counts in runs], weights)
    if defined.mean() < 0.95:
        return None, None
    if se == 0:  # every question agrees: no spread to resample
        lo = hi = float(theta)
    else:
        deviation = boot_theta[defined] - theta
        with np.errstate(divide="ignore", invalid="ignore"):  # a resample of identical questions has SE 0
            t = np.where(boot_se[defined] > 0, deviation / boot_se[defined],
                         np.where(deviation == 0, 0.0, np.sign(deviation) * np.inf))
        q_low, q_high = np.quantile(t, [0.025, 0.975], method="inverted_cdf")
        if not np.isfinite(q_low) or not np.isfinite(q_high):  # over 2.5 % of resamples drew only equal questions
            q_high = stats.t.ppf(0.975, n_items - 1)
            q_low = -q_high
        lo, hi = float(theta - q_high * se), float(theta - q_low * se)
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return lo, hi


def summarize(obs: pd.DataFrame, rounds: list[int] | None = None, n_boot: int = N_BOOT,
              seed: int = BOOT_SEED) -> dict[str, MetricStats]:
    """Per metric: per-round means, their mean and SD, and a CI over the metric's questions.

    `rounds` are the rounds the task planned (default: every round in `obs`); a round in which a metric has no
    observation stays in `per_round` as None and is named in `missing_rounds`; mean, SD and CI use the others.
    """
    rounds = sorted(rounds if rounds is not None else obs["round"].unique().tolist())
    out: dict[str, MetricStats] = {}
    for metric, group in obs.groupby("metric", sort=True):
        items = sorted(group["item_id"].unique().tolist())
        present = sorted(group["round"].unique().tolist())
        sums, counts = cluster_arrays(group, items, present)
        means = sums.sum(axis=0) / counts.sum(axis=0)
        per_round: dict[int, float | None] = dict.fromkeys(rounds)
        per_round.update({int(r): float(v) for r, v in zip(present, means, strict=True)})
        sd = float(np.std(means, ddof=1)) if len(present) > 1 else None
        lo, hi = _studentized_interval([(sums, counts)], (1.0,), n_boot, seed,
                                       bounds=(float(group["value"].min()), float(group["value"].max())))
        out[str(metric)] = MetricStats(per_round=per_round, missing_rounds=[r for r, v in per_round.items() if v is None],
                                       mean=float(means.mean()), sd=sd, ci95=(lo, hi), questions=len(items),
                                       n=int(counts.sum()))
    return out


def paired_difference(obs_a: pd.DataFrame, obs_b: pd.DataFrame, metric: str, n_boot: int = N_BOOT,
                      seed: int = BOOT_SEED) -> PairedDifference | None:
    """B − A on the questions both runs judged, with a paired studentized bootstrap CI (same questions resampled)."""
    a, b = obs_a[obs_a["metric"] == metric], obs_b[obs_b["metric"] == metric]
    items = sorted(set(a["item_id"]) & set(b["item_id"]))
    if not items:
        return None
    runs = []
    for obs in (a[a["item_id"].isin(items)], b[b["item_id"].isin(items)]):
        runs.append(cluster_arrays(obs, items, sorted(obs["round"].unique().tolist())))
    diff = float(sum(w * (s.sum(axis=0) / c.sum(axis=0)).mean() for w, (s, c) in zip((-1.0, 1.0), runs, strict=True)))
    lo, hi = _studentized_interval(runs, (-1.0, 1.0), n_boot, seed)
    return PairedDifference(metric=metric, difference=diff, ci95=(lo, hi), items=len(items))


def reproduction(round_means: list[float], published: float, published_rounds: int = PUBLISHED_ROUNDS) -> VersusPublished:
    """Is a published mean of `published_rounds` rounds consistent with this run's rounds on the same questions?

    Both means are taken over the same questions with the same judge, so question sampling cancels: what differs is
    generation and judge noise from round to round, including any shift the judge applies to a whole round. That
    variance is estimated from this run's round means (R − 1 degrees of freedom) and assumed equal for the
    published run: SE(measured − published) = sd_rounds · √(1/R + 1/R_pub), and (measured − published) / SE follows
    Student's t with R − 1 degrees of freedom when the runs agree — exact for normal round means whatever part of
    the noise is shared within a round. A bootstrap over three rounds, or a normal quantile, would be too narrow.
    """
    values = np.asarray(round_means, dtype=float)
    delta = float(values.mean() - published) if values.size else None
    verdict: Verdict | None = None
    p, se, df, interval, note = None, None, None, None, None
    sd = float(np.std(values, ddof=1)) if values.size >= 2 else None
    if delta is None or sd is None:
        note = "one round: run-to-run noise cannot be estimated, so no verdict; run 3 or more rounds"
    elif sd == 0:
        note = "every round gave the same mean: run-to-run noise cannot be estimated, so no verdict"
    else:
        df = values.size - 1
        se = sd * math.sqrt(1 / values.size + 1 / published_rounds)
        p = float(2 * stats.t.sf(abs(delta) / se, df))
        half = float(stats.t.ppf(0.975, df) * se)
        verdict = "consistent" if p >= ALPHA else ("higher" if delta > 0 else "lower")
        interval = (delta - half, delta + half)
    return VersusPublished(value=published, rounds=published_rounds, delta=delta, verdict=verdict, p=p, delta_se=se,
                           df=df, delta_ci95=interval, verdict_note=note)


def status_counts(judged: pd.DataFrame, generations: pd.DataFrame) -> dict[str, int]:
    """How many judgments are valid and how many ended in each failure, and how many answers failed."""
    judge_status, gen_status = judged["status"].value_counts(), generations["status"].value_counts()
    counts = {"judgments": int(len(judged)), "valid": int(judge_status.get(JudgmentStatus.OK.value, 0))}
    counts.update({status.value: int(judge_status.get(status.value, 0)) for status in UNJUDGED})
    counts.update({f"gen_{status.value}": int(gen_status.get(status.value, 0)) for status in GENERATION_FAILURES})
    return counts
