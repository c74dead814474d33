"""Keys decide what is recomputed: a changed setting recomputes exactly the records it affects, older records are kept
as superseded; the no-answer policy; the judge stage overlapping generation."""

from __future__ import annotations

import json
import sqlite3

from helpers import cli, read_jsonl

BASE = ["run", "configs/smoke.yaml", "--rounds", "1", "--limit", "1"]


def activity(out):
    return json.loads((out / "manifest.json").read_text())["this_invocation"]


def test_a_changed_generation_setting_regenerates_and_rejudges_only_changed_answers(tmp_path):
    """strict: a cut-off answer is judged as empty, so answers cut off both times leave the judge's input unchanged
    (under the default profile the partial text is judged, and it differs with the budget)."""
    out = tmp_path / "run"
    strict = ["--set", "compat=strict"]
    assert cli(*BASE, *strict, "--out", str(out)).returncode == 0
    before = {(j["task"], j["item_id"], j["turn"]): j for j in read_jsonl(out / "judgments.jsonl")}
    shorter = [*BASE, *strict, "--out", str(out), "--set", "generation.max_new_tokens=40"]
    # Paid work is not redone by surprise: refused, naming the change and what --force would redo; the dry run
    # says the same, and neither touches the store.
    stored = (out / "run.sqlite").stat().st_mtime_ns
    counts = "continuing would regenerate 6 stored answers and re-judge up to 6 stored judgments"
    refused = cli(*shorter)
    assert refused.returncode == 2 and "made with other settings: generation.max_new_tokens (96 → 40)" in refused.stderr
    assert counts in refused.stderr and "--force" in refused.stderr
    dry = cli(*shorter, "--dry-run")
    assert dry.returncode == 2 and counts in dry.stderr
    total = next(line.split() for line in dry.stdout.splitlines() if line.strip().startswith("total"))
    assert total[:3] == ["total", "6", "6"]  # generations, judge requests
    assert (out / "run.sqlite").stat().st_mtime_ns == stored
    again = cli(*shorter, "--force")
    assert again.returncode == 3, again.stderr[-2000:]  # reported; 40 tokens leave the answers without a final answer
    after = {(j["task"], j["item_id"], j["turn"]): j for j in read_jsonl(out / "judgments.jsonl")}
    changed = sum(after[k]["messages"] != before[k]["messages"] for k in before)
    assert 0 < changed < 6  # a shorter budget cuts some answers; the judge's input for the others is unchanged
    assert activity(out)["generation_calls"] == 6 and activity(out)["judge_calls"] == changed
    db = sqlite3.connect(out / "run.sqlite")
    assert db.execute("SELECT kind, COUNT(*) FROM superseded GROUP BY kind").fetchall() == [("generation", 6), ("judgment", changed)]
    gens = {(g["task"], g["item_id"], g["turn"]): g["key"] for g in read_jsonl(out / "generations.jsonl")}
    assert all(after[k]["generation_key"] == gens[k] for k in after)  # every judgment links to its current answer


def test_a_changed_judge_setting_rejudges_without_regenerating(tmp_path):
    out = tmp_path / "run"
    assert cli(*BASE, "--out", str(out)).returncode == 0
    again = cli(*BASE, "--out", str(out), "--set", "task_options.llm_jp_instructions.judge.max_tokens=512", "--force")
    assert again.returncode == 0, again.stderr[-2000:]
    assert activity(out)["generation_calls"] == 0 and activity(out)["judge_calls"] == 1
    judged = [j for j in read_jsonl(out / "judgments.jsonl") if j["task"] == "llm_jp_instructions"]
    assert judged[0]["params"]["max_tokens"] == 512


def test_exclude_policy_records_unanswered_items_as_excluded_and_leaves_them_out(tmp_path):
    out = tmp_path / "run"
    options = [f"--set=task_options.{t}.generation.no_answer=exclude" for t in ("mt_bench_ja", "answer_carefully")]
    result = cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "1", "--set", "generation.max_new_tokens=24", *options)
    assert result.returncode == 3, result.stderr[-2000:]  # reported, and said loudly: no answer had a final answer
    gens = {(g["task"], g["item_id"], g["turn"]): g for g in read_jsonl(out / "generations.jsonl")}
    judgments = read_jsonl(out / "judgments.jsonl")
    excluded = [j for j in judgments if j["status"] == "excluded"]
    assert excluded, "24 new tokens cannot finish the tiny model's analysis + final"
    for j in judgments:
        gen = gens[(j["task"], j["item_id"], j["turn"])]
        if j["task"] in ("mt_bench_ja", "answer_carefully"):
            assert (j["status"] == "excluded") == (gen["status"] != "ok")
        else:
            assert j["status"] != "excluded"  # the profile's judge_as_is: the judge saw what came back
    summary = json.loads((out / "summary.json").read_text())
    ja = summary["tasks"]["mt_bench_ja"]
    assert ja["counts"]["excluded"] == sum(j["task"] == "mt_bench_ja" for j in excluded)
    assert ja["metrics"].get("score", {"n": 0})["n"] == ja["counts"]["valid"]
    assert summary["complete"] is True


def test_judging_starts_while_generation_is_still_running(tmp_path):
    out = tmp_path / "run"
    assert cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "2").returncode == 0
    db = sqlite3.connect(out / "run.sqlite")
    last_generation = db.execute("SELECT MAX(created) FROM generations").fetchone()[0]
    first_judgment = db.execute("SELECT MIN(created) FROM judgments").fetchone()[0]
    assert first_judgment < last_generation


def test_a_run_says_what_it_computed_and_the_label_names_the_tables_row(tmp_path):
    """A run whose judgments all come from the shared judge cache says so; `label` names the measured row."""
    common = ["--tasks", "mt_bench_en", "--set", "judge.cache=read_write", "--set", f"judge.cache_path={tmp_path / 'cache.sqlite'}"]
    first = cli(*BASE, "--out", str(tmp_path / "a"), *common)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"{tmp_path / 'a'}: this run generated 2 answers and made 2 judgments." in first.stdout
    second = cli(*BASE, "--out", str(tmp_path / "b"), *common, "--set", "label=tiny (second try)")
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{tmp_path / 'b'}: this run generated 2 answers and made 0 judgments; 2 judgments came from the shared judge cache." \
        in second.stdout
    assert "| **tiny (second try)** (measured) |" in (tmp_path / "b" / "table.md").read_text()
    third = cli(*BASE, "--out", str(tmp_path / "b"), *common, "--set", "label=tiny (second try)")
    assert f"{tmp_path / 'b'}: nothing to compute — every answer was already stored and judged." in third.stdout


def test_a_request_identical_to_one_being_judged_waits_for_it_and_stands_when_the_run_is_resumed(tmp_path):
    """Greedy answers repeat across rounds, so rounds 2 and 3 send round 1's judge request bodies. Released while
    round 1's judgment is still in flight (the judge answers slowly, four workers), they wait for it and take it from
    the shared cache instead of paying for the same call three times; stored under their own rounds' keys, they stand
    when the finished run is run again (under round 1's keys the resume refused to go on without --force)."""
    out = tmp_path / "run"
    args = ["run", "configs/smoke.yaml", "--rounds", "3", "--limit", "1", "--tasks", "mt_bench_en", "--out", str(out),
            "--set", "generation.greedy=true", "--set", "judge.concurrency=4", "--set", "judge.cache=read_write",
            "--set", "judge.mock_settings.latency_s=0.3", "--set", f"judge.cache_path={tmp_path / 'cache.sqlite'}"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "made 2 judgments; 4 judgments came from the shared judge cache" in first.stdout
    judgments = read_jsonl(out / "judgments.jsonl")
    by_turn = {turn: {j["round"]: j for j in judgments if j["turn"] == turn} for turn in (1, 2)}
    for rounds in by_turn.values():
        assert not rounds[1]["cached"] and rounds[2]["cached"] and rounds[3]["cached"]
        assert len({j["key"] for j in rounds.values()}) == 3
        assert rounds[1]["scores"] == rounds[2]["scores"] == rounds[3]["scores"]
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to compute" in again.stdout


def test_requests_that_waited_on_a_failed_judgment_are_asked_themselves(tmp_path):
    """A failure is never shared (the cache keeps no transient error), so what waited on it is not settled by it: each
    of the three identical requests is asked, one after the other, and each failure is its own."""
    out = tmp_path / "run"
    run = cli("run", "configs/smoke.yaml", "--rounds", "3", "--limit", "1", "--tasks", "mt_bench_en", "--out", str(out),
              "--set", "generation.greedy=true", "--set", "judge.concurrency=4", "--set", "judge.cache=read_write",
              "--set", "judge.mock_settings.latency_s=0.3", "--set", "judge.mock_settings.rate_500=1.0", "--set", "judge.max_retries=0",
              "--set", f"judge.cache_path={tmp_path / 'cache.sqlite'}")
    assert run.returncode == 4, run.stderr[-2000:]
    assert "made 6 judgments." in run.stdout
    judgments = read_jsonl(out / "judgments.jsonl")
    assert sorted((j["round"], j["turn"]) for j in judgments) == [(r, t) for r in (1, 2, 3) for t in (1, 2)]
    assert {j["status"] for j in judgments} == {"api_error"} and not any(j["cached"] for j in judgments)
