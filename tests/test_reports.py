"""Statistics over rounds and questions, the reports written from the store alone, plots, compare, added rounds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import cli, read_jsonl

from eval.kinds import TaskRules
from eval.metrics import observations, paired_difference, summarize


def mt_rows(values: dict[tuple[int, str, int], float | None]) -> pd.DataFrame:
    return pd.DataFrame([{"round": r, "item_id": i, "turn": t, "category": "writing", "call": "single",
                          "status": "ok" if v is not None else "parse_failed", "scores": {"score": v} if v is not None else {}}
                         for (r, i, t), v in values.items()])


def test_means_sd_and_exclusions_by_hand():
    values = {(1, "a", 1): 8, (1, "a", 2): 6, (1, "b", 1): 4, (1, "b", 2): None,   # round 1: (8+6+4)/3 = 6
              (2, "a", 1): 9, (2, "a", 2): 7, (2, "b", 1): 5, (2, "b", 2): 3}      # round 2: 24/4 = 6
    values[(2, "a", 1)] = 10                                                        # round 2: 25/4 = 6.25
    stats = summarize(observations(TaskRules("mt_bench"), mt_rows(values)))
    score = stats["score"]
    assert score.per_round == {1: pytest.approx(6.0), 2: pytest.approx(6.25)}
    assert score.mean == pytest.approx(6.125)
    assert score.sd == pytest.approx(np.std([6.0, 6.25], ddof=1))
    assert score.n == 7  # the parse failure is excluded, not counted as a zero
    assert stats["turn2"].per_round == {1: pytest.approx(6.0), 2: pytest.approx(5.0)}


def test_interval_covers_the_mean_and_is_narrow_on_forty_questions():
    rng = np.random.default_rng(0)
    values = {(r, str(i), 1): float(rng.integers(1, 11)) for r in (1, 2, 3) for i in range(40)}
    stats = summarize(observations(TaskRules("mt_bench"), mt_rows(values)))["score"]
    assert stats.ci95[0] < stats.mean < stats.ci95[1]
    assert stats.ci95[1] - stats.ci95[0] < 2.5


def test_paired_difference_uses_the_common_questions():
    a = observations(TaskRules("mt_bench"), mt_rows({(1, "x", 1): 5, (1, "y", 1): 7, (1, "z", 1): 9}))
    b = observations(TaskRules("mt_bench"), mt_rows({(1, "x", 1): 6, (1, "y", 1): 8}))
    d = paired_difference(a, b, "score")
    assert d.items == 2 and d.difference == pytest.approx(1.0)
    assert d.ci95 == (pytest.approx(1.0), pytest.approx(1.0))  # every pair differs by exactly 1


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for effort in ("low", "high"):
        out = root / effort
        result = cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "2", "--limit", "3",
                         "--set", f"model.chat_template_kwargs.reasoning_effort={effort}", "--set", f"name=smoke-{effort}")
        assert result.returncode == 0, result.stderr[-2000:]
        runs[effort] = out
    return runs


def test_report_rebuilds_byte_identical_tables_from_the_store_and_plots_exist(two_runs, tmp_path):
    out = two_runs["low"]
    before = {name: (out / name).read_bytes() for name in ("table.md", "table.csv", "summary.json", "errors.json")}
    for name in ("table.md", "table.csv", "summary.json", "generations.jsonl", "judgments.jsonl"):
        (out / name).unlink()
    result = cli("report", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    for plot in ("plots/categories.png", "plots/benchmarks.png"):
        data = (out / plot).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
        assert f"]({plot})" in before["table.md"].decode()


def test_summary_has_rounds_statistics_counts_and_published_rows(two_runs):
    summary = json.loads((two_runs["low"] / "summary.json").read_text())
    task = summary["tasks"]["mt_bench_ja"]
    score = task["metrics"]["score"]
    assert set(score["per_round"]) == {"1", "2"} and score["sd"] is not None and len(score["ci95"]) == 2
    assert {"turn1", "turn2"} <= set(task["metrics"]) and any(m.startswith("category:") for m in task["metrics"])
    assert set(summary["tasks"]["answer_carefully"]["metrics"]) >= {"score", "violation_rate", "acceptable_rate"}
    assert set(summary["tasks"]["llm_jp_instructions"]["metrics"]) >= {"正確性", "流暢性", "詳細性", "関連性", "総合評価", "score"}
    assert task["counts"]["items"] == 3 and task["counts"]["planned"] == 12
    table = (two_runs["low"] / "table.md").read_text()
    assert "llm-jp-4-8b-thinking (reasoning_effort = medium) (published) | 7.54 | 7.79 | 3.69 | 3.54" in table
    assert "## AnswerCarefully v2.0" in table and "violation rate (%)" in table
    csv = (two_runs["low"] / "table.csv").read_text().splitlines()
    assert csv[1].startswith("measured,tiny-harmony,low,") and sum(line.startswith("published,") for line in csv) == 10


@pytest.fixture
def relabeled(two_runs, tmp_path):
    """A copy of a smoke run's store relabeled as the 8B at medium effort on the full data, so it has a published row."""
    import shutil

    from eval.run_meta import CONFIG, TASKS
    from eval.store import Store

    shutil.copy(two_runs["high"] / "run.sqlite", tmp_path / "run.sqlite")
    store = Store(tmp_path / "run.sqlite")
    config = store.meta(CONFIG)
    model = config.model.model_copy(update={"path": "llm-jp/llm-jp-4-8b-thinking",
                                            "chat_template_kwargs": {"reasoning_effort": "medium"}})
    store.set_meta(CONFIG, config.model_copy(update={"model": model, "variant": "full"}))
    store.set_meta(TASKS, {name: meta.model_copy(update={"variant": "full"}) for name, meta in store.meta(TASKS).items()})
    yield store
    store.close()


def test_published_value_delta_and_reproduction_verdict_for_a_matching_row(relabeled):
    import dataclasses

    from eval.summary import compute_summary, load_published
    from eval.tables import render_csv, render_markdown

    # Rounds whose means are equal give no verdict; move one round-2 score so the run-to-run noise is not zero
    # whatever the smoke model wrote.
    judgment = next(j for j in (relabeled.judgment(r.slot) for r in relabeled.plan() if r.task == "mt_bench_ja" and r.round == 2)
                    if j is not None and j.status == "ok")
    moved = {name: (value - 1 if value > 1 else value + 1) for name, value in judgment.scores.items()}
    relabeled.put_judgment(dataclasses.replace(judgment, scores=moved))
    summary = compute_summary(relabeled)
    ja = summary.tasks["mt_bench_ja"]
    assert summary.label == "llm-jp-4-8b-thinking (reasoning_effort = medium)"
    published, score = ja.published, ja.score
    assert published.value == 7.54 and published.rounds == 3
    assert published.delta == pytest.approx(score.mean - 7.54)
    assert published.df == 1  # two rounds
    assert published.delta_se == pytest.approx(score.sd * (1 / 2 + 1 / 3) ** 0.5)
    expected = "consistent" if published.p >= 0.05 else ("higher" if published.delta > 0 else "lower")
    assert published.verdict == expected
    table = render_markdown(summary, load_published())
    assert f"{published.delta:+.2f} · {expected} (p = " in table or f"{expected} (p < 0.001)" in table
    header, measured = render_csv(summary, load_published()).splitlines()[:2]
    row = dict(zip(header.split(","), measured.split(","), strict=True))
    assert row["MT-Bench (JA) verdict"] == expected and float(row["MT-Bench (JA) p"]) == pytest.approx(published.p, rel=1e-2)


def test_a_round_without_valid_judgments_shows_in_summary_and_tables_and_one_round_gives_no_verdict(relabeled):
    import dataclasses

    from eval.summary import compute_summary, load_published
    from eval.tables import render_markdown

    for row in relabeled.plan():
        if row.task == "mt_bench_ja" and row.round == 2:
            judgment = relabeled.judgment(row.slot)
            relabeled.put_judgment(dataclasses.replace(judgment, status="parse_failed", scores={}))
    summary = compute_summary(relabeled)
    ja = summary.tasks["mt_bench_ja"]
    score = ja.score
    assert ja.rounds == [1, 2] and score.per_round[2] is None and score.missing_rounds == [2]
    assert score.mean == score.per_round[1] and score.sd is None
    assert ja.published.verdict is None and "one round" in ja.published.verdict_note
    table = render_markdown(summary, load_published())
    assert "(round 2 missing)" in table and "no verdict" in table and "MT-Bench (JA): one round" in table
    detail = table.split("## MT-Bench")[1].splitlines()
    average = next(line for line in detail if line.startswith("| average |"))
    assert average.rstrip(" |").endswith("| missing")
    assert json.loads(json.dumps(summary.dump(), allow_nan=False))["tasks"]["mt_bench_ja"]["counts"]["parse_failed"] == 6


def test_compare_prints_measured_and_published_rows_with_paired_differences(two_runs, tmp_path):
    result = cli("compare", str(two_runs["low"]), str(two_runs["high"]), "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    measured = [line for line in lines if line.startswith("| **tiny-harmony")]
    assert measured == [line for line in lines if "| complete |" in line]
    assert [line.split(" | ")[:3] for line in measured] == [["| **tiny-harmony (reasoning_effort = low)**", "smoke-low", "complete"],
                                                            ["| **tiny-harmony (reasoning_effort = high)**", "smoke-high", "complete"]]
    assert sum("| published |" in line for line in lines) == 10
    # Runs without a published row follow the card's rows; each says why it has none.
    assert lines.index(measured[0]) > max(i for i, line in enumerate(lines) if "| published |" in line)
    assert sum(line.startswith("- smoke-") and "No published row" in line for line in lines) == 2
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {d["task"] for d in data["differences"]} == {"mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"}
    low = data["runs"][0]["summary"]["tasks"]["mt_bench_ja"]["metrics"]["score"]["mean"]
    high = data["runs"][1]["summary"]["tasks"]["mt_bench_ja"]["metrics"]["score"]["mean"]
    diff = next(d for d in data["differences"] if d["task"] == "mt_bench_ja")
    assert diff["difference"] == pytest.approx(high - low)
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000


def test_adding_rounds_computes_only_the_new_rounds(tmp_path):
    out = tmp_path / "run"
    first = cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "1", "--limit", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    gens_before = {(g["round"], g["task"], g["item_id"], g["turn"]): g["key"] for g in read_jsonl(out / "generations.jsonl")}
    second = cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "3", "--limit", "2")
    assert second.returncode == 0, second.stderr[-2000:]
    activity = json.loads((out / "manifest.json").read_text())["this_invocation"]
    assert activity["generation_calls"] == 2 * 12 and activity["judge_calls"] == 2 * 12
    gens_after = {(g["round"], g["task"], g["item_id"], g["turn"]): g for g in read_jsonl(out / "generations.jsonl")}
    assert all(gens_after[slot]["key"] == key for slot, key in gens_before.items())
    assert {g["round"] for g in gens_after.values()} == {1, 2, 3}
    seeds = {r: {g["seed"] for s, g in gens_after.items() if s[0] == r} for r in (1, 2, 3)}
    assert seeds[1].isdisjoint(seeds[2]) and seeds[2].isdisjoint(seeds[3])  # each round samples with its own seed


def test_plots_of_long_row_names_lay_out_without_a_warning(two_runs, tmp_path):
    """Before: the benchmark bars of a real row name ('llm-jp-4-8b-thinking (reasoning_effort = medium) (…)') warned
    'Tight layout not applied' on every run."""
    import warnings

    from eval.plots import write_compare_plot, write_plots
    from eval.results import read_summary
    from eval.summary import load_published

    summary = read_summary(two_runs["low"] / "summary.json").model_copy(
        update={"label": "llm-jp-4-8b-thinking (reasoning_effort = medium)", "run": "llm-jp-4-8b-thinking-medium"})
    one_task = summary.model_copy(update={"tasks": {"mt_bench_en": summary.tasks["mt_bench_en"]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_plots(tmp_path / "run", summary, load_published())
        write_plots(tmp_path / "one", one_task, load_published())
        write_compare_plot(tmp_path / "compare", [summary, summary.model_copy(update={"run": "gpt-oss-20b-low-and-a-long-run-name"})],
                           load_published())
    assert (tmp_path / "run" / "plots" / "benchmarks.png").is_file() and (tmp_path / "compare" / "compare.png").is_file()
