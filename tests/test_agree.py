"""Judge agreement: the statistics on synthetic judgments with known agreement, judge noise and ranking on
synthetic runs, and `rejudge` + `agree` end to end on the smoke run with two mock judges that differ by a known rule
(the second adds 1 to every score, clipped to the scale)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_valid_summary, cli, read_jsonl

from eval.agree import RunData, agreement, confusion, judge_noise, kendall_tau_b, quadratic_kappa, ranking_agreement
from eval.errors import UserError
from eval.kinds import TaskRules
from eval.metrics import paired_difference
from eval.results import read_summary

SCORE_RULES = TaskRules(metric="mt_bench")


# ---------------------------------------------------------------- statistics on synthetic judgments


def _obs(values: np.ndarray, rounds: int = 1) -> pd.DataFrame:
    n = len(values) // rounds
    return pd.DataFrame({"round": np.repeat(np.arange(1, rounds + 1), n), "item_id": [f"q{i}" for i in range(n)] * rounds,
                         "turn": 1, "metric": "score", "value": values.astype(float)})


def test_identical_judgments_agree_perfectly():
    a = np.random.default_rng(1).integers(1, 11, 300)
    stats = agreement(a, a)
    for name in ("pearson", "spearman", "kendall_tau_b", "exact", "within_one", "quadratic_kappa"):
        assert stats[name] == pytest.approx(1.0), name
    assert paired_difference(_obs(a), _obs(a), "score").difference == 0


def test_independent_judgments_agree_at_chance():
    rng = np.random.default_rng(2)
    a, b = rng.integers(1, 11, 5000), rng.integers(1, 11, 5000)
    stats = agreement(a, b)
    for name in ("pearson", "spearman", "kendall_tau_b", "quadratic_kappa"):
        assert abs(stats[name]) < 0.05, name
    assert stats["exact"] == pytest.approx(0.1, abs=0.02)  # ten equally likely scores
    assert stats["within_one"] == pytest.approx(0.28, abs=0.03)  # 28 of the 100 score pairs are within one


def test_a_judge_one_point_more_lenient_never_agrees_exactly_but_always_within_one():
    a = np.random.default_rng(3).integers(1, 10, 400)
    b = a + 1
    stats = agreement(a, b)
    assert stats["exact"] == 0.0
    assert stats["within_one"] == 1.0
    assert stats["pearson"] == pytest.approx(1.0) and stats["kendall_tau_b"] == pytest.approx(1.0)
    # quadratic-weighted kappa penalises the bias: it equals Lin's concordance 2·cov / (var_a + var_b + (Δmean)²)
    concordance = 2 * np.cov(a, b, ddof=0)[0, 1] / (a.var() + b.var() + 1.0)
    assert stats["quadratic_kappa"] == pytest.approx(concordance)
    assert stats["quadratic_kappa"] < 1
    diff = paired_difference(_obs(a, rounds=2), _obs(b, rounds=2), "score")
    assert diff.difference == pytest.approx(1.0)
    assert diff.ci95 == pytest.approx((1.0, 1.0))


def test_kendall_tau_b_counts_ties_as_tau_b_does():
    assert kendall_tau_b(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(1 / 3)
    # pairs: (1,2) tied in a; (1,3) concordant; (2,3) tied in b → 1 / √(2 · 2)
    assert kendall_tau_b(np.array([1.0, 1, 2]), np.array([1.0, 2, 2])) == pytest.approx(0.5)
    assert np.isnan(kendall_tau_b(np.array([2.0, 2, 2]), np.array([1.0, 2, 3])))  # a constant side has no order


def test_confusion_keeps_the_unused_scores_of_an_integer_scale():
    values, counts = confusion(np.array([1.0, 4, 4]), np.array([2.0, 4, 5]))
    assert values.tolist() == [1, 2, 3, 4, 5]
    assert counts[0, 1] == 1 and counts[3, 3] == 1 and counts[3, 4] == 1 and counts.sum() == 3
    assert quadratic_kappa(np.array([1.0, 4, 4]), np.array([2.0, 4, 5])) < 1


def _run(name: str, judged: pd.DataFrame, answers: pd.DataFrame, judge: str = "judge-a", sd: float | None = None) -> RunData:
    """A run of one task "t" (column T) whose summary gives the score's SD over rounds as `sd`."""
    written = read_summary(Path(__file__).parent / "data" / "summary-v2-main.json")
    entry = written.tasks["mt_bench_ja"]
    task = entry.model_copy(update={"column": "T", "rounds": sorted(judged["round"].unique().tolist()),
                                    "metrics": {"score": entry.score.model_copy(update={"sd": sd})}})
    summary = written.model_copy(update={"run": name, "label": name, "judge_model": judge, "tasks": {"t": task}})
    return RunData(Path(name), summary, {"t": SCORE_RULES}, answers, judged)


def _judged(scores: dict[tuple[int, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"task": "t", "round": r, "item_id": i, "turn": 1, "category": None, "call": "single", "status": "ok",
                          "scores": {"score": v}} for (r, i), v in scores.items()])


def _answers(texts: dict[tuple[int, str], str]) -> pd.DataFrame:
    return pd.DataFrame([{"task": "t", "round": r, "item_id": i, "turn": 1, "category": None, "answer": a}
                         for (r, i), a in texts.items()])


def test_judge_noise_measures_test_retest_and_the_judge_share_of_the_variance():
    # q0, q1: the same answer in all three rounds, the judge wavers (5, 6, 5): variance 1/3 each.
    # q2, q3: a new answer each round, scored 3, 6, 9: variance 9 each (judge and generation together).
    scores, texts = {}, {}
    for r, (judge_wobble, new_answer) in enumerate([(5, 3), (6, 6), (5, 9)], 1):
        for item in ("q0", "q1"):
            scores[(r, item)], texts[(r, item)] = judge_wobble, "same"
        for item in ("q2", "q3"):
            scores[(r, item)], texts[(r, item)] = new_answer, f"answer {r}"
    result = judge_noise(_run("run", _judged(scores), _answers(texts), sd=1.5))
    noise = result["tasks"]["t"]["metrics"]["score"]
    assert noise["identical_slots"] == 2 and noise["slots"] == 4
    assert noise["within_slot_variance"]["identical_answers"] == pytest.approx(1 / 3)
    assert noise["within_slot_variance"]["all_answers"] == pytest.approx((1 / 3 + 9) / 2)
    share = (1 / 3) / ((1 / 3 + 9) / 2)
    assert noise["judge_share_of_variance"] == pytest.approx(share)
    assert noise["judge_sd"] == pytest.approx(np.sqrt(share) * 1.5)
    # test–retest on identical answers: 3 pairs of rounds × 2 items; the rounds (1, 3) agree, the others differ by 1
    assert noise["identical_answers"]["n"] == 6
    assert noise["identical_answers"]["exact"] == pytest.approx(1 / 3)
    assert noise["identical_answers"]["within_one"] == 1.0
    assert noise["all_answers"]["n"] == 12


def test_a_deterministic_judge_has_no_share_of_the_variance():
    scores = {(r, i): (7 if i == "q0" else r * 2) for r in (1, 2) for i in ("q0", "q1")}
    texts = {(r, i): ("same" if i == "q0" else f"answer {r}") for r in (1, 2) for i in ("q0", "q1")}
    noise = judge_noise(_run("run", _judged(scores), _answers(texts), sd=0.7))["tasks"]["t"]["metrics"]["score"]
    assert noise["judge_share_of_variance"] == 0.0
    assert noise["identical_answers"]["exact"] == 1.0


def test_the_same_judge_twice_gives_its_share_of_the_variance_on_every_answer():
    from eval.agree import compare_judges

    # run A: each question scores 2 points higher in round 2 (variance over rounds 2 per slot); the second judgment
    # of every answer is one point off (judge variance = 1² / 2)
    first = {(r, f"q{i}"): 2.0 * i + 2 * (r - 1) + 1 for r in (1, 2) for i in range(4)}
    second = {k: v + (1 if (k[0] + int(k[1][1:])) % 2 else -1) for k, v in first.items()}
    texts = _answers({k: f"answer {k}" for k in first})
    result = compare_judges(_run("a", _judged(first), texts, judge="j", sd=1.0),
                            _run("b", _judged(second), texts, judge="j"))
    retest = result["tasks"]["t"]["metrics"]["score"]["retest"]
    assert retest["judge_variance"] == pytest.approx(0.5)
    assert retest["variance_over_rounds"] == pytest.approx(2.0)
    assert retest["judge_share_of_variance"] == pytest.approx(0.25)
    assert retest["judge_sd"] == pytest.approx(0.5)
    other_judge = compare_judges(_run("a", _judged(first), texts, judge="j"), _run("b", _judged(second), texts, judge="k"))
    assert "retest" not in other_judge["tasks"]["t"]["metrics"]["score"]


def _row(name: str, means: list[float], judge: str, shift: float = 0.0, flip: bool = False) -> RunData:
    """A model row: question i scores means[i % len] (+ shift, or reflected on the 1–10 scale with flip)."""
    scores = {}
    for r in (1, 2):
        for i in range(12):
            v = means[i % len(means)] + (i % 3) - 1 + shift
            scores[(r, f"q{i}")] = 11 - v if flip else v
    texts = {k: f"{name} answer {k}" for k in scores}
    return _run(name, _judged(scores), _answers(texts), judge=judge)


def test_ranking_is_kept_by_a_shifted_judge_and_reversed_by_a_mirrored_one():
    bases = [[3.0], [5.0], [7.0]]
    kept = ranking_agreement([(_row(f"m{k}", b, "a"), _row(f"m{k}", b, "b", shift=1)) for k, b in enumerate(bases)])
    t = kept["tasks"]["t"]
    assert t["kendall_tau_b"] == pytest.approx(1.0)
    assert t["ci95"] == pytest.approx([1.0, 1.0])
    assert t["same_order_share"] == 1.0
    assert [r["b"] - r["a"] for r in t["rows"]] == pytest.approx([1.0, 1.0, 1.0])
    mirrored = ranking_agreement([(_row(f"m{k}", b, "a"), _row(f"m{k}", b, "b", flip=True)) for k, b in enumerate(bases)])
    assert mirrored["tasks"]["t"]["kendall_tau_b"] == pytest.approx(-1.0)
    assert mirrored["tasks"]["t"]["same_order_share"] == 0.0


def test_ranking_refuses_rows_judged_by_mixed_judges():
    with pytest.raises(UserError, match="judged by different judges"):
        ranking_agreement([(_row("m0", [3.0], "a"), _row("m0", [3.0], "b")),
                           (_row("m1", [5.0], "other"), _row("m1", [5.0], "b"))])


# ---------------------------------------------------------------- rejudge + agree end to end (offline smoke run)


LENIENT = ["--set", "judge.model=mock-judge-lenient", "--set", "judge.mock_settings.score_shift=1"]
TOP = {"mt_bench": 10, "safety": 5, "quality": 5}


@pytest.fixture(scope="module")
def judged_twice(tmp_path_factory):
    root = tmp_path_factory.mktemp("agree")
    original, rejudged = root / "run", root / "rejudged"
    first = cli("run", "configs/smoke.yaml", "--out", str(original), "--rounds", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = cli("rejudge", str(original), "--out", str(rejudged), *LENIENT)
    assert second.returncode == 0, second.stderr[-3000:]
    return root, original, rejudged, second


def _by_slot(run_dir: Path, kind: str) -> dict[tuple, dict]:
    return {(r["task"], r["round"], r["item_id"], r["turn"]): r for r in read_jsonl(run_dir / f"{kind}.jsonl")}


def test_rejudge_sends_the_same_judge_prompts_and_keeps_the_row_label(judged_twice):
    _, original, rejudged, result = judged_twice
    before, after = _by_slot(original, "judgments"), _by_slot(rejudged, "judgments")
    assert before.keys() == after.keys() and before
    for slot, judgment in before.items():
        assert after[slot]["messages"] == judgment["messages"], slot
        assert after[slot]["judge_model"] == "mock-judge-lenient"
    answers_before, answers_after = _by_slot(original, "generations"), _by_slot(rejudged, "generations")
    assert {k: (g["final"], g["status"]) for k, g in answers_after.items()} == \
        {k: (g["final"], g["status"]) for k, g in answers_before.items()}
    summary_before = assert_valid_summary(original / "summary.json")
    summary_after = assert_valid_summary(rejudged / "summary.json")  # a rejudge's summary meets the schema too
    assert summary_after.label == summary_before.label == "tiny-harmony (reasoning_effort = medium)"
    assert summary_after.model == summary_before.model
    assert summary_after.judge_model == "mock-judge-lenient"
    assert "| **tiny-harmony (reasoning_effort = medium)** (measured) |" in result.stdout
    assert "Judge: `mock-judge-lenient`" in result.stdout
    planned = len(answers_before)
    assert f"this run replayed {planned} stored answers and made {planned} judgments." in result.stdout  # not "generated"
    activity = json.loads((rejudged / "manifest.json").read_text())["this_invocation"]
    assert (activity["answers_replayed"], activity["generation_calls"], activity["judge_calls"]) == (planned, 0, planned)
    compared = cli("compare", str(original), str(rejudged))
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert f"| **tiny-harmony (reasoning_effort = medium)** | {rejudged.name}, judge mock-judge-lenient | complete |" in compared.stdout
    again = cli("rejudge", str(original), "--out", str(rejudged), *LENIENT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to compute" in again.stdout


def test_agree_measures_the_known_rule_between_the_two_mock_judges(judged_twice):
    root, original, rejudged, _ = judged_twice
    out = root / "agreement"
    result = cli("agree", str(original), str(rejudged), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "agree.json").read_text())
    page = (out / "report.html").read_text()
    assert report["page"] == "report.html" and str(original) in page and str(rejudged) in page
    summary = json.loads((original / "summary.json").read_text())
    before, after = _by_slot(original, "judgments"), _by_slot(rejudged, "judgments")
    assert set(report["tasks"]) == set(summary["tasks"])
    for task, entry in report["tasks"].items():
        top = TOP[summary["tasks"][task]["metric"]]
        primary = "総合評価" if summary["tasks"][task]["metric"] == "quality" else "score"
        a = np.array([j["scores"][primary] for k, j in sorted(before.items()) if k[0] == task and j["status"] == "ok"])
        b = np.array([j["scores"][primary] for k, j in sorted(after.items()) if k[0] == task and j["status"] == "ok"])
        assert b.tolist() == np.minimum(a + 1, top).tolist()  # the rule, judgment by judgment
        score = entry["metrics"]["score"]
        assert score["n"] == len(a)
        assert score["exact"] == pytest.approx(np.mean(a == top))
        assert score["within_one"] == 1.0
        assert score["difference"] == pytest.approx(np.mean(np.minimum(a + 1, top) - a))
        assert score["mean_b"] - score["mean_a"] == pytest.approx(score["difference"])
        counts = np.array(entry["confusion"]["counts"])
        assert counts.sum() == len(a) and np.trace(counts) == np.sum(a == top)
        assert all(d["b"] - d["a"] == 1 for d in entry["disagreements"])
        markdown = (out / "agree.md").read_text()
        assert all(d["link"] == f"#compare/{task}/{d['item_id']}/{d['turn']}" and f"(report.html{d['link']})" in markdown
                   for d in entry["disagreements"])
        assert (out / "plots" / f"confusion_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        column = summary["tasks"][task]["column"]
        assert any(line.startswith(f"| {column} | score | {len(a)} |") for line in result.stdout.splitlines())


def test_agree_on_one_run_finds_the_deterministic_mock_judge_noiseless(judged_twice):
    _, original, _, _ = judged_twice
    result = cli("agree", str(original))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Judge noise" in result.stdout
    from eval.agree import judge_noise, load_run

    noise = judge_noise(load_run(original))
    assert any(m["identical_slots"] for t in noise["tasks"].values() for m in t["metrics"].values())
    for task in noise["tasks"].values():
        for metric in task["metrics"].values():
            if metric["identical_answers"]:
                assert metric["identical_answers"]["exact"] == 1.0
            assert metric["judge_share_of_variance"] in (None, 0.0)


def test_agree_refuses_runs_over_different_answers(judged_twice):
    root, original, rejudged, _ = judged_twice
    tampered = root / "tampered"
    shutil.copytree(rejudged, tampered, ignore=shutil.ignore_patterns("run.lock"))
    db = sqlite3.connect(tampered / "run.sqlite")
    with db:
        db.execute("UPDATE generations SET record = json_set(record, '$.final', 'another answer') "
                   "WHERE task = 'mt_bench_en' AND round = 1 AND turn = 1")
    db.close()
    result = cli("agree", str(original), str(tampered))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "different answers for 4 of" in line and "rejudge" in line


def test_rejudge_changes_only_the_judge(judged_twice, tmp_path):
    _, original, _, _ = judged_twice
    result = cli("rejudge", str(original), "--out", str(tmp_path / "x"), "--set", "model.path=other")
    assert result.returncode == 2
    assert "rejudge changes only the judge" in result.stderr and "Traceback" not in result.stderr
    missing = cli("rejudge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"))
    assert missing.returncode == 2 and "no run.sqlite" in missing.stderr


def test_a_replayed_model_named_after_its_source_needs_the_source_path():
    from eval.config import build_config

    base = {"name": "r", "tasks": ["mt_bench_en"], "judge": {"model": "mock-judge", "mock": True},
            "model": {"backend": "replay", "path": "g.jsonl", "source_model": {"backend": "hf"}}}
    with pytest.raises(UserError, match="source_model.*needs at least 'path'"):
        build_config(base, "cfg.yaml")
    base["model"]["source_model"] = {"backend": "hf", "path": "llm-jp/llm-jp-4-8b-thinking"}
    assert build_config(base, "cfg.yaml").model.source_model["path"] == "llm-jp/llm-jp-4-8b-thinking"
