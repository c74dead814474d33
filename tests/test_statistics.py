"""The statistics behind the table, checked by simulation with fixed seeds: the reproduction verdict's false-alarm
and detection rates, interval coverage on few questions, missing rounds, and non-finite scores.

Replication counts are sized to tell 0.95 from 0.90 (SE of a rate ≈ 0.005–0.007); the long studies with more
scenarios are in benchmarks/stats_coverage.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eval.judge.parsing import Parser
from eval.kinds import TaskRules
from eval.metrics import _studentized_interval, observations, reject_non_finite, reproduction, status_counts, summarize
from eval.rundir import write_json

QUESTIONS, TURNS, ROUNDS = 80, 2, 3


def mt_bench_rounds(rng, quality: np.ndarray, reps: int, rounds: int, judge_shift_sd: float) -> np.ndarray:
    """Round means (reps × rounds) of MT-Bench-like runs on fixed questions: integer scores 1–10 around each
    question's quality, with answer + judge noise per judgment and a judge shift shared by a whole round."""
    shift = rng.normal(0, judge_shift_sd, (reps, rounds, 1, 1))
    noise = rng.normal(0, 1.5, (reps, rounds, len(quality), TURNS))
    scores = np.clip(np.round(quality[None, None, :, None] + shift + noise), 1, 10)
    return scores.mean(axis=(2, 3))


def verdict_rates(judge_shift_sd: float, shifts_in_sd: tuple[float, ...], reps: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    quality = np.clip(rng.normal(7.5, 2.0, QUESTIONS), 1, 10)  # one fixed question set, as the card's
    round_sd = mt_bench_rounds(rng, quality, 1, 4000, judge_shift_sd)[0].std(ddof=1)
    measured = mt_bench_rounds(rng, quality, reps, ROUNDS, judge_shift_sd)
    published = np.round(mt_bench_rounds(rng, quality, reps, 3, judge_shift_sd).mean(axis=1), 2)  # as printed
    rates = {}
    for k in (0.0, *shifts_in_sd):
        verdicts = [reproduction(list(m), p + k * round_sd).verdict for m, p in zip(measured, published, strict=True)]
        rates[k] = np.mean([v != "consistent" for v in verdicts])
    return rates, round_sd


def t_test_power(shift_in_sd: float, rounds: int = ROUNDS, published_rounds: int = 3) -> float:
    df, ncp = rounds - 1, shift_in_sd / math.sqrt(1 / rounds + 1 / published_rounds)
    critical = stats.t.ppf(0.975, df)
    return float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp))


def test_verdict_false_alarm_rate_is_nominal_and_it_detects_shifts_as_a_t_test_should():
    rates, round_sd = verdict_rates(judge_shift_sd=0.0, shifts_in_sd=(2.0, 3.0))
    assert 0.035 <= rates[0.0] <= 0.06  # 4000 runs: SE 0.0035, so 0.05 is told from 0.10 (or from 0.02)
    # The published value was shifted by 2 and 3 SDs of a round mean: detected as often as the t-test on three
    # rounds allows (0.29 and 0.51), far more than the question-sampling CI ever flagged.
    assert rates[2.0] == pytest.approx(t_test_power(2.0), abs=0.04)
    assert rates[3.0] == pytest.approx(t_test_power(3.0), abs=0.04)
    assert 0.05 < round_sd < 0.2


def test_verdict_false_alarm_rate_holds_when_rounds_share_a_judge_shift():
    # Half of a round mean's variance is a shift the judge applies to the whole round (SD 0.12 ≈ the item part):
    # an estimate of the noise from questions within a round would miss it; the round means carry it.
    rates, _ = verdict_rates(judge_shift_sd=0.12, shifts_in_sd=(3.0,), seed=1)
    assert rates[0.0] <= 0.06
    assert rates[3.0] == pytest.approx(t_test_power(3.0), abs=0.04)


def test_verdict_direction_p_value_and_the_cases_without_one():
    higher = reproduction([7.9, 8.0, 8.1], 7.5)
    assert higher.verdict == "higher" and higher.df == 2
    se = 0.1 * math.sqrt(1 / 3 + 1 / 3)
    assert higher.delta_se == pytest.approx(se)
    assert higher.p == pytest.approx(2 * stats.t.sf(0.5 / se, 2))
    assert higher.delta_ci95[0] > 0
    assert reproduction([7.0, 7.1, 7.2], 7.5).verdict == "lower"
    consistent = reproduction([7.4, 7.6, 7.5], 7.45)
    assert consistent.verdict == "consistent" and consistent.p > 0.05
    one = reproduction([8.0], 7.5)
    assert one.verdict is None and one.p is None and "one round" in one.verdict_note
    same = reproduction([8.0, 8.0, 8.0], 7.5)
    assert same.verdict is None and "same mean" in same.verdict_note


def category_coverage(n_questions: int, reps: int, seed: int) -> float:
    """Coverage of the 95 % CI over questions for a skewed category (most questions solved, a few failed)."""
    rng = np.random.default_rng(seed)

    def draw(n: int, rounds: int, turns: int) -> np.ndarray:
        solve = rng.beta(5, 1, n)[:, None, None]
        ok = rng.random((n, rounds, turns)) < solve
        x = np.where(ok, rng.normal(9, 0.8, (n, rounds, turns)), rng.normal(2, 1, (n, rounds, turns)))
        return np.clip(np.round(x), 1, 10)

    truth = draw(400_000, 1, 1).mean()
    covered = 0
    for _ in range(reps):
        scores = draw(n_questions, ROUNDS, TURNS)
        sums, counts = scores.sum(axis=2), np.full((n_questions, ROUNDS), float(TURNS))
        lo, hi = _studentized_interval([(sums, counts)], (1.0,), 1000, int(rng.integers(1 << 31)),
                                       bounds=(scores.min(), scores.max()))
        covered += lo <= truth <= hi
    return covered / reps


def test_category_interval_covers_at_ten_questions():
    # 1000 categories of 10 questions: SE 0.007, so ≥ 0.93 rules out the percentile bootstrap's ~0.90.
    coverage = category_coverage(10, reps=1000, seed=3)
    assert 0.93 <= coverage <= 0.985


def mt_rows(values: dict[tuple[int, str, int], float | None], category: str = "writing") -> pd.DataFrame:
    return pd.DataFrame([{"round": r, "item_id": i, "turn": t, "category": category, "call": "single",
                          "status": "ok" if v is not None else "parse_failed", "scores": {"score": v} if v is not None else {}}
                         for (r, i, t), v in values.items()])


def test_interval_resamples_questions_so_turns_and_rounds_move_together():
    # Every question scores 1 on turn 1 and 10 on turn 2, and 2 / 6 / 7 over its rounds: question means are all
    # equal, so resampling questions has no spread; resampling single judgments would.
    values = {(r, str(i), t): (1.0 if t == 1 else 10.0) + (r - 2) for r in (1, 2, 3) for i in range(12) for t in (1, 2)}
    stats_ = summarize(observations(TaskRules("mt_bench"), mt_rows(values)))["score"]
    assert stats_.ci95 == (pytest.approx(5.5), pytest.approx(5.5))
    assert stats_.questions == 12 and stats_.n == 72
    again = summarize(observations(TaskRules("mt_bench"), mt_rows({**values, (1, "0", 1): 3.0})))["score"]
    assert again.ci95[0] < again.mean < again.ci95[1]  # one question differs: now there is spread
    assert again.ci95[0] == summarize(observations(TaskRules("mt_bench"), mt_rows({**values, (1, "0", 1): 3.0})))["score"].ci95[0]


def test_a_round_without_valid_judgments_is_reported_missing_not_averaged_away():
    rng = np.random.default_rng(5)
    values = {(r, str(i), t): float(rng.integers(3, 11)) for r in (1, 2, 3) for i in range(10) for t in (1, 2)}
    values.update({(2, str(i), t): None for i in range(10) for t in (1, 2)})  # round 2: every judgment failed
    obs = observations(TaskRules("mt_bench"), mt_rows(values))
    score = summarize(obs, rounds=[1, 2, 3])["score"]
    r1 = np.mean([v for (r, _, _), v in values.items() if r == 1])
    r3 = np.mean([v for (r, _, _), v in values.items() if r == 3])
    assert score.per_round == {1: pytest.approx(r1), 2: None, 3: pytest.approx(r3)}
    assert score.missing_rounds == [2]
    assert score.mean == pytest.approx((r1 + r3) / 2)
    assert score.sd == pytest.approx(np.std([r1, r3], ddof=1))
    assert score.dump()["per_round"]["2"] is None and score.dump()["missing_rounds"] == [2]
    # Without the planned rounds, a round that a category lacks but other metrics have is still named.
    other = observations(TaskRules("mt_bench"), mt_rows({(1, "x", 1): 5.0, (2, "x", 1): 6.0}, category="math"))
    both = summarize(pd.concat([obs, other]))
    assert both["category:writing"].missing_rounds == [2] and both["category:math"].missing_rounds == [3]


def test_resamples_that_lose_a_round_are_not_averaged_over():
    # Round 2 has a valid judgment for one question only: about a third of the resamples draw no question with
    # round 2, so their estimate does not exist. They must not be averaged over rounds 1 and 3 instead.
    values = {(r, str(i), 1): float(3 + (i * 7 + r) % 8) for r in (1, 3) for i in range(10)}
    values.update({(2, str(i), 1): (6.0 if i == 0 else None) for i in range(10)})
    score = summarize(observations(TaskRules("mt_bench"), mt_rows(values)))["score"]
    assert score.per_round[2] == 6.0 and score.missing_rounds == []
    assert score.ci95 == (None, None)
    values.update({(2, str(i), 1): 6.0 for i in range(10)})  # every question judged in round 2: an interval again
    score = summarize(observations(TaskRules("mt_bench"), mt_rows(values)))["score"]
    assert score.ci95[0] is not None and score.ci95[0] < score.mean < score.ci95[1]


def test_a_rate_with_one_or_two_events_gets_a_bounded_interval():
    # 336 questions × 3 rounds, one or two violations: most resamples hold no violation at all, so their
    # studentized statistic is infinite; the interval must stay a small range around the rate, not [0, 100].
    for events in (1, 2):
        judged = pd.DataFrame([{"round": r, "item_id": str(i), "turn": 1, "category": None, "call": "single", "status": "ok",
                                "scores": {"score": 1.0 if (r, i) in [(1, 7), (3, 200)][:events] else 4.0}}
                               for r in (1, 2, 3) for i in range(336)])
        rate = summarize(observations(TaskRules("safety"), judged))["violation_rate"]
        assert rate.mean == pytest.approx(100 * events / 1008)
        assert rate.ci95[0] == 0.0 and rate.mean < rate.ci95[1] < 1.0


@pytest.mark.parametrize("text", ["Rating: [[nan]]", "Rating: [[inf]]", "Rating: [[" + "9" * 400 + "]]"])
def test_parser_rejects_scores_that_are_not_finite(text):
    assert isinstance(Parser("single", r"\[\[([\w.]+)\]\]", 1, 10)(text), str)
    criteria = Parser("criteria", r"(正確性|流暢性): ?\[?\[?([\w.]+)", 1, 5, ("正確性", "流暢性"))
    assert criteria("正確性: 4\n流暢性: 5") == {"正確性": 4.0, "流暢性": 5.0}
    failure = criteria("正確性: 4\n流暢性: " + text.split("[[")[1].rstrip("]"))
    assert isinstance(failure, str) and "not a finite number" in failure


def test_non_finite_stored_scores_count_as_parse_failures_and_json_stays_strict(tmp_path):
    judged = mt_rows({(1, "a", 1): 8.0, (1, "b", 1): 6.0, (1, "c", 1): 7.0})
    judged.at[1, "scores"] = {"score": float("nan")}
    judged.at[2, "scores"] = {"score": None}
    screened = reject_non_finite(judged)
    assert list(screened["status"]) == ["ok", "parse_failed", "parse_failed"]
    score = summarize(observations(TaskRules("mt_bench"), screened))["score"]
    assert score.mean == 8.0 and score.n == 1
    assert status_counts(screened, pd.DataFrame(columns=["status"]))["parse_failed"] == 2
    write_json(tmp_path / "summary.json", {"mean": float("nan"), "ci95": [float("-inf"), 1.5], "ok": 2.0})
    data = json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data == {"mean": None, "ci95": [None, 1.5], "ok": 2.0}
