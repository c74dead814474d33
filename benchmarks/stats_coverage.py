"""Coverage study of the table's statistics, by simulation with fixed seeds.

1. The reproduction verdict (`eval.metrics.reproduction`): how often it calls a run that reproduces the card
   "higher"/"lower" (false alarms), and how often it catches a published value shifted by 2 or 3 run-to-run SDs,
   with and without a judge shift shared by every judgment of a round. Beside it, the alternatives it was chosen
   over, on the same simulated runs: the same statistic with a normal quantile, a noise estimate from questions
   within rounds, a two-way bootstrap over rounds and questions, and the old flag "published value outside the CI
   over questions".
2. The 95 % CI over questions (`eval.metrics` studentized bootstrap) at 10 questions (an MT-Bench category) and at
   80 (a benchmark), beside the percentile bootstrap it replaced and a t-interval on question means.

Simulated MT-Bench: 80 fixed questions × 2 turns, integer scores 1–10 around each question's quality (SD 2 over
questions), answer + judge noise SD 1.5 per judgment, plus a per-round judge shift. The published value is the
mean of 3 rounds of the same process on the same questions, rounded to 2 decimals as the card prints it. SD units:
σ_round = SD of one round's mean (what the table's "± SD" estimates); σ_run = σ_round / √3, the SD of a
3-round mean.

    python benchmarks/stats_coverage.py            # full study, a few minutes on 2 cores
    python benchmarks/stats_coverage.py --quick    # tiny shape, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval.metrics import _studentized_interval, reproduction  # noqa: E402

QUESTIONS, TURNS, PUBLISHED_ROUNDS = 80, 2, 3
Z = stats.norm.ppf(0.975)


def simulate_runs(rng, quality: np.ndarray, reps: int, rounds: int, judge_shift_sd: float) -> np.ndarray:
    """Scores (reps, rounds, questions, turns)."""
    shift = rng.normal(0, judge_shift_sd, (reps, rounds, 1, 1))
    noise = rng.normal(0, 1.5, (reps, rounds, len(quality), TURNS))
    return np.clip(np.round(quality[None, None, :, None] + shift + noise), 1, 10)


def verdict_study(reps: int, rounds: int, judge_shift_sd: float, seed: int, question_ci_reps: int) -> dict:
    rng = np.random.default_rng(seed)
    quality = np.clip(rng.normal(7.5, 2.0, QUESTIONS), 1, 10)
    round_sd = float(simulate_runs(rng, quality, 1, 4000, judge_shift_sd)[0].mean(axis=(1, 2)).std(ddof=1))
    measured = simulate_runs(rng, quality, reps, rounds, judge_shift_sd)
    published = np.round(simulate_runs(rng, quality, reps, PUBLISHED_ROUNDS, judge_shift_sd).mean(axis=(1, 2, 3)), 2)
    round_means = measured.mean(axis=(2, 3))
    mean = round_means.mean(axis=1)
    scale = math.sqrt(1 / rounds + 1 / PUBLISHED_ROUNDS)
    se_rounds = round_means.std(axis=1, ddof=1) * scale
    # Noise from questions within rounds: each question's spread over rounds (many degrees of freedom), blind to a
    # shift shared by a whole round.
    question_means = measured.mean(axis=3)  # (reps, rounds, questions)
    se_items = np.sqrt(question_means.var(axis=1, ddof=1).mean(axis=1) / QUESTIONS) * scale
    # Bootstraps: the SD of the resampled mean, scaled for the published run's own rounds. Over rounds only (three
    # values to resample), and over rounds and questions (adds question sampling, which cancels between two runs on
    # the same questions).
    se_round_boot, se_two_way = np.empty(reps), np.empty(reps)
    for i in range(reps):
        r = rng.integers(0, rounds, (200, rounds))
        q = rng.integers(0, QUESTIONS, (200, QUESTIONS))
        se_round_boot[i] = round_means[i][r].mean(axis=1).std(ddof=1)
        se_two_way[i] = question_means[i][r[:, :, None], q[:, None, :]].mean(axis=(1, 2)).std(ddof=1)
    se_round_boot *= math.sqrt(1 + rounds / PUBLISHED_ROUNDS)
    se_two_way *= math.sqrt(1 + rounds / PUBLISHED_ROUNDS)
    # The old flag: the published value outside the 95 % CI over questions (now the studentized bootstrap).
    question_ci = []
    for i in range(min(question_ci_reps, reps)):
        sums = measured[i].sum(axis=2).T  # (questions, rounds)
        counts = np.full_like(sums, TURNS)
        question_ci.append(_studentized_interval([(sums, counts)], (1.0,), 500, seed + i, bounds=(1.0, 10.0)))

    shifts = {"none": 0.0, "2 σ_run": 2 * round_sd / math.sqrt(3), "3 σ_run": 3 * round_sd / math.sqrt(3),
              "2 σ_round": 2 * round_sd, "3 σ_round": 3 * round_sd}
    methods: dict[str, dict[str, float]] = {m: {} for m in (
        "t on round means, R−1 df (chosen)", "same SE, normal quantile", "noise from questions within rounds",
        "bootstrap over rounds", "two-way bootstrap (rounds, questions)", "published outside CI over questions")}
    for name, shift in shifts.items():
        pub = published + shift
        delta = mean - pub
        chosen = [reproduction(list(m), p).verdict != "consistent" for m, p in zip(round_means, pub, strict=True)]
        rows = methods.keys()
        rates = [np.mean(chosen), np.mean(np.abs(delta) > Z * se_rounds), np.mean(np.abs(delta) > Z * se_items),
                 np.mean(np.abs(delta) > Z * se_round_boot), np.mean(np.abs(delta) > Z * se_two_way),
                 np.mean([not lo <= p <= hi for (lo, hi), p in zip(question_ci, pub, strict=True)])]
        for method, rate in zip(rows, rates, strict=True):
            methods[method][name] = float(rate)
    return {"rounds": rounds, "judge_shift_sd": judge_shift_sd, "round_sd": round_sd, "reps": reps, "rates": methods}


def category_draw(rng, kind: str, n: int, rounds: int, turns: int) -> np.ndarray:
    if kind == "symmetric (writing-like)":
        x = np.clip(rng.normal(8.3, 1.0, n), 1, 10)[:, None, None] + rng.normal(0, 1.0, (n, rounds, turns))
        return np.clip(np.round(x), 1, 10)
    if kind == "near the ceiling (many questions all 10)":
        x = rng.normal(9.5, 0.8, n)[:, None, None] + rng.normal(0, 0.6, (n, rounds, turns))
        return np.clip(np.round(x), 1, 10)
    a, b = {"skewed: most solved (math-like)": (5, 1), "bimodal: half solved": (1, 1),
            "skewed: most failed": (1, 5)}[kind]
    solve = rng.beta(a, b, n)[:, None, None]
    ok = rng.random((n, rounds, turns)) < solve
    x = np.where(ok, rng.normal(9, 0.8, (n, rounds, turns)), rng.normal(2, 1, (n, rounds, turns)))
    return np.clip(np.round(x), 1, 10)


KINDS = ("symmetric (writing-like)", "near the ceiling (many questions all 10)", "skewed: most solved (math-like)",
         "bimodal: half solved", "skewed: most failed")


def coverage_study(n: int, reps: int, seed: int, rounds: int = 3) -> dict:
    out = {}
    for k, kind in enumerate(KINDS):
        rng = np.random.default_rng(seed + k)
        truth = category_draw(rng, kind, 1_000_000, 1, 1).mean()
        hits = {"studentized bootstrap (chosen)": 0, "percentile bootstrap (before)": 0, "t on question means": 0}
        for _ in range(reps):
            scores = category_draw(rng, kind, n, rounds, TURNS)
            sums, counts = scores.sum(axis=2), np.full((n, rounds), float(TURNS))
            lo, hi = _studentized_interval([(sums, counts)], (1.0,), 2000, int(rng.integers(1 << 31)),
                                           bounds=(scores.min(), scores.max()))
            hits["studentized bootstrap (chosen)"] += lo <= truth <= hi
            question_means = scores.mean(axis=(1, 2))
            boot = question_means[rng.integers(0, n, (2000, n))].mean(axis=1)
            plo, phi = np.percentile(boot, [2.5, 97.5])
            hits["percentile bootstrap (before)"] += plo <= truth <= phi
            half = stats.t.ppf(0.975, n - 1) * question_means.std(ddof=1) / math.sqrt(n)
            hits["t on question means"] += abs(question_means.mean() - truth) <= half
        out[kind] = {m: h / reps for m, h in hits.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=4000, help="simulated runs per verdict scenario")
    parser.add_argument("--ci-reps", type=int, default=2000, help="simulated categories per coverage scenario (10 questions)")
    parser.add_argument("--quick", action="store_true", help="tiny shape (seconds): 100 runs, 30 categories")
    args = parser.parse_args()
    reps, ci_reps = (100, 30) if args.quick else (args.reps, args.ci_reps)
    started = time.time()
    machine = f"{platform.machine()} {platform.python_version()}, numpy {np.__version__}"
    print(f"# Verdict and interval coverage by simulation ({machine})\n")

    scenarios = [(3, 0.0), (3, 0.12)] + ([] if args.quick else [(3, 0.3), (5, 0.12)])
    verdicts = [verdict_study(reps, rounds, shift_sd, seed=10 + i, question_ci_reps=min(reps, 1000))
                for i, (rounds, shift_sd) in enumerate(scenarios)]
    for v in verdicts:
        print(f"## Verdict: {v['rounds']} rounds, per-round judge shift SD {v['judge_shift_sd']} "
              f"(σ_round = {v['round_sd']:.3f}), {v['reps']} runs; rate of 'higher'/'lower'\n")
        names = list(next(iter(v["rates"].values())))
        print("| method | " + " | ".join(f"shift {n}" for n in names) + " |")
        print("|---|" + "---:|" * len(names))
        for method, rates in v["rates"].items():
            print(f"| {method} | " + " | ".join(f"{rates[n]:.3f}" for n in names) + " |")
        print()

    samples = {10: ci_reps, 80: max(ci_reps // 4, 10)}
    coverage = {n: coverage_study(n, k, seed=100 * n) for n, k in samples.items()}
    for n, result in coverage.items():
        print(f"## 95 % CI over questions: coverage at {n} questions × 2 turns × 3 rounds ({samples[n]} samples each)\n")
        methods = list(next(iter(result.values())))
        print("| scores | " + " | ".join(methods) + " |")
        print("|---|" + "---:|" * len(methods))
        for kind, row in result.items():
            print(f"| {kind} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " |")
        print()
    seconds = time.time() - started
    print(f"{seconds:.0f} s")
    print(json.dumps({"machine": machine, "seconds": round(seconds, 1), "verdict": verdicts,
                      "coverage": {str(n): r for n, r in coverage.items()}}))


if __name__ == "__main__":
    main()
