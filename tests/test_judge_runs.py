"""The judge stage inside whole runs: kill and resume without paying twice, Batch API mode with resume, the budget
cap, dry runs, the shared cache across runs. (The API key never written anywhere: test_reliability.py.)"""

from __future__ import annotations

import json
import signal
from collections import Counter

from helpers import SECRET, body_hash, cli, counters, popen_cli, read_jsonl, smoke_args, stored, wait_until

from eval.config import MockSettings

ENV = {"MOCK_JUDGE_KEY": SECRET}


def test_kill_during_judging_then_resume_never_resends_a_stored_judgment(tmp_path, mock_server):
    server = mock_server(settings=MockSettings(latency_s=0.25), api_key=SECRET)
    out = tmp_path / "run"
    proc = popen_cli(*smoke_args(out, server, "--set", "judge.concurrency=4"), env=ENV)
    assert wait_until(lambda: len(stored(out, "judgments")) >= 12 and server.state.in_flight > 0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = stored(out, "judgments")
    result = cli(*smoke_args(out, server, "--set", "judge.concurrency=4"), env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    bodies = server.state.snapshot()["bodies"]
    judgments = read_jsonl(out / "judgments.jsonl")
    # As upstream, the MT-Bench judge gets no seed: a greedy answer gives the same body in every round. Each body is
    # sent once per judgment that has it, so nothing stored before the kill was sent again.
    per_body = Counter(body_hash(j) for j in judgments)
    assert before and all(bodies[body_hash(j)] == per_body[body_hash(j)] for j in before)
    slots = [(j["round"], j["task"], j["item_id"], j["turn"]) for j in judgments]
    assert len(slots) == len(set(slots)) == 72
    assert json.loads((out / "summary.json").read_text())["complete"] is True


def test_shared_cache_lets_another_run_reuse_judgments(tmp_path, mock_server):
    server = mock_server(api_key=SECRET)
    cache = ["--rounds", "1", "--set", "judge.cache=read_write", "--set", f"judge.cache_path={tmp_path / 'judge-cache.sqlite'}"]
    first = cli(*smoke_args(tmp_path / "a", server, *cache), env=ENV)
    assert first.returncode == 0, first.stderr[-2000:]
    sent = counters(server)["requests"]
    second = cli(*smoke_args(tmp_path / "b", server, *cache), env=ENV)
    assert second.returncode == 0, second.stderr[-2000:]
    assert counters(server)["requests"] == sent + 1  # the preflight only
    activity = json.loads((tmp_path / "b" / "manifest.json").read_text())["this_invocation"]
    assert activity["judgments_reused"] == 24 and activity["judge_calls"] == 0
    assert (tmp_path / "a" / "table.md").read_text().split("\n", 1)[1] == (tmp_path / "b" / "table.md").read_text().split("\n", 1)[1]


def test_batch_mode_end_to_end_with_resume_after_a_kill_between_created_and_completed(tmp_path, mock_server):
    server = mock_server(settings=MockSettings(batch_polls_to_complete=10**6), api_key=SECRET)
    out = tmp_path / "run"
    args = smoke_args(out, server, "--rounds", "1", "--set", "judge.mode=batch", "--set", "judge.batch_poll_s=0.05")
    proc = popen_cli(*args, env=ENV)
    assert wait_until(lambda: counters(server).get("batch_polls", 0) >= 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert stored(out, "judgments") == []
    server.state.settings = MockSettings(batch_polls_to_complete=1)
    result = cli(*args, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    c = counters(server)
    assert c["batches_created"] == 1 and c["files_uploaded"] == 1 and c["batch_requests"] == 24
    assert c["requests"] == 2  # two preflights; every judgment came from the one batch
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 24 and {j["status"] for j in judgments} == {"ok"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [b["status"] for b in manifest["batches"]] == ["completed"]


def test_batch_lines_that_fail_are_retried_synchronously(tmp_path, mock_server):
    server = mock_server(settings=MockSettings(batch_polls_to_complete=0, rate_500=0.3, rate_empty=0.2, seed=3), api_key=SECRET)
    out = tmp_path / "run"
    result = cli(*smoke_args(out, server, "--rounds", "1", "--set", "judge.mode=batch", "--set", "judge.batch_poll_s=0.01",
                                 "--set", "judge.max_retries=8"), env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 24
    retried = [j for j in judgments if j["attempts"] > 1]
    assert retried and counters(server)["requests"] > 2


def test_budget_cap_stops_cleanly_and_a_later_run_finishes(tmp_path, mock_server):
    server = mock_server(api_key=SECRET)
    out = tmp_path / "run"
    priced = ["--rounds", "1", "--set", "judge.concurrency=1", "--set", "judge.prices={mock-judge: {input: 1000, output: 1000}}"]
    result = cli(*smoke_args(out, server, *priced, "--set", "judge.budget_usd=1.0"), env=ENV)
    assert result.returncode == 4, result.stderr[-2000:]  # reported, incomplete
    assert "budget_usd reached" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False
    assert "PARTIAL RESULTS" in (out / "table.md").read_text()
    spent = sum(j["cost_usd"] for j in read_jsonl(out / "judgments.jsonl"))
    assert 1.0 <= spent < 1.0 + 0.5  # at most one request over the cap (concurrency 1)
    done = cli(*smoke_args(out, server, *priced, "--set", "judge.budget_usd=100"), env=ENV)
    assert done.returncode == 0 and json.loads((out / "summary.json").read_text())["complete"] is True


def test_dry_run_sends_nothing_and_prints_the_estimate(tmp_path, mock_server):
    server = mock_server(api_key=SECRET)
    result = cli(*smoke_args(tmp_path / "run", server, "--dry-run", "--set", "judge.prices={mock-judge: {input: 2, output: 8}}"),
                     env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert counters(server).get("requests", 0) == 0
    assert "nothing is sent" in result.stdout and "judge_requests" in result.stdout and "$" in result.stdout
    total = next(line for line in result.stdout.splitlines() if line.strip().startswith("total"))
    assert " 72 " in f" {total} "  # 72 generations / judge requests over 3 rounds
    assert not (tmp_path / "run" / "run.sqlite").exists()


def mean_scores(run_dir) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {task: entry["metrics"]["score"]["mean"] for task, entry in summary["tasks"].items()}


def test_a_second_judge_server_with_the_same_model_name_gets_its_own_requests_and_scores(tmp_path, mock_server):
    first = mock_server(api_key=SECRET)
    second = mock_server(settings=MockSettings(score_shift=-1), api_key=SECRET)  # same model name, other verdicts
    cache = ["--rounds", "1", "--set", "judge.cache=read_write", "--set", f"judge.cache_path={tmp_path / 'judge-cache.sqlite'}"]
    a = cli(*smoke_args(tmp_path / "a", first, *cache), env=ENV)
    assert a.returncode == 0, a.stderr[-2000:]
    b = cli(*smoke_args(tmp_path / "b", second, *cache), env=ENV)
    assert b.returncode == 0, b.stderr[-2000:]
    assert counters(second)["requests"] == 1 + 24  # the preflight, then every judgment: nothing came from the cache
    activity = json.loads((tmp_path / "b" / "manifest.json").read_text())["this_invocation"]
    assert activity["judgments_reused"] == 0 and activity["judge_calls"] == 24
    scores_a, scores_b = mean_scores(tmp_path / "a"), mean_scores(tmp_path / "b")
    assert all(scores_b[task] < scores_a[task] for task in scores_a), (scores_a, scores_b)
    again = cli(*smoke_args(tmp_path / "c", second, *cache), env=ENV)  # the second server's own judgments are shared
    assert again.returncode == 0 and counters(second)["requests"] == 1 + 24 + 1
    assert mean_scores(tmp_path / "c") == scores_b


def test_edited_truncated_foreign_and_non_json_cache_records_are_counted_misses_judged_again(tmp_path, mock_server):
    import sqlite3

    server = mock_server(api_key=SECRET)
    path = tmp_path / "judge-cache.sqlite"
    cache = ["--rounds", "1", "--tasks", "mt_bench_en", "--set", "judge.cache=read_write", "--set", f"judge.cache_path={path}"]
    first = cli(*smoke_args(tmp_path / "a", server, *cache), env=ENV)
    assert first.returncode == 0, first.stderr[-2000:]
    db = sqlite3.connect(path)
    (k1, r1), (k2, r2), (k3, _), (k4, _) = db.execute("SELECT key, record FROM entries ORDER BY key LIMIT 4").fetchall()
    edited = json.loads(r1)
    scores = edited["judgment"]["scores"]
    scores["score"] = 1.0 if scores["score"] != 1.0 else 2.0  # a score changed by hand
    foreign = json.loads(r2)["judgment"]
    del foreign["scores"], foreign["status"]  # a record of another version, as the old crash had it
    for key, text in ((k1, json.dumps(edited)), (k2, json.dumps(foreign)), (k3, r2[:100]), (k4, "not json at all")):
        db.execute("UPDATE entries SET record = ? WHERE key = ?", (text, key))
    db.commit()
    db.close()
    verify = cli("cache", "verify", str(path))
    assert verify.returncode == 1 and "8 records, 4 verified, 4 did not (2 unreadable, 1 altered, 1 another version)" \
        in verify.stdout, verify.stdout
    assert all(key in verify.stdout for key in (k1, k2, k3, k4))
    sent = counters(server)["requests"]
    second = cli(*smoke_args(tmp_path / "b", server, *cache), env=ENV)
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert counters(server)["requests"] == sent + 1 + 4  # the preflight and the four records that did not verify
    warnings = [line for line in second.stderr.splitlines() if "did not verify" in line]
    assert len(warnings) == 1 and "4 records did not verify (2 unreadable, 1 altered, 1 another version)" in warnings[0]
    assert mean_scores(tmp_path / "b") == mean_scores(tmp_path / "a")
    assert cli("cache", "verify", str(path)).returncode == 0  # the fresh judgments replaced them
    stats = cli("cache", "stats", str(path))
    assert stats.returncode == 0 and "8 records, 8 verified" in stats.stdout and "ok 8" in stats.stdout


def test_a_task_whose_judgments_all_failed_for_good_exits_3_after_reporting_everything(tmp_path, mock_server):
    """Every reply holds no score: each judgment ends parse_failed (final, asking again would not change it). The
    reports are written and the run says so, with exit code 3 (the numbers do not measure the model)."""
    server = mock_server(settings=MockSettings(rate_empty=1.0), api_key=SECRET)
    out = tmp_path / "run"
    result = cli(*smoke_args(out, server, "--rounds", "1", "--tasks", "mt_bench_en",
                             "--set", "task_options.mt_bench_en.judge.parse_retries=0"), env=ENV)
    assert result.returncode == 3, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("NO SCORES")]
    assert len(lines) == 1 and "MT-Bench (EN): none of its 8 judgments gave a score (8 parse_failed)" in lines[0]
    assert "no score in the format the task's regex reads" in lines[0] and "INCOMPLETE" not in result.stderr
    assert {j["status"] for j in read_jsonl(out / "judgments.jsonl")} == {"parse_failed"}
    assert all((out / name).is_file() for name in ("summary.json", "table.md", "report.html", "manifest.json"))


def test_exit_code_of_a_task_without_scores_follows_whether_asking_again_may_help():
    from pathlib import Path

    from eval.outcome import outcome
    from eval.results import read_summary

    written = read_summary(Path(__file__).parent / "data" / "summary-v2-main.json")
    entry = written.tasks["mt_bench_ja"]  # complete, every answer final: only its judgments' counts decide

    def summary(**counts):
        base = {"judgments": 4, "valid": 0, "parse_failed": 0, "length": 0, "api_error": 0, "timeout": 0,
                "content_filtered": 0, "excluded": 0, "missing": 0, "gen_error": 0, "gen_missing": 0}
        task = entry.model_copy(update={"column": "T", "counts": entry.counts.model_copy(update={**base, **counts})})
        return written.model_copy(update={"tasks": {"t": task}})

    assert outcome(summary(api_error=4)).code == 4  # transient: the same command asks again
    assert outcome(summary(parse_failed=2, api_error=2)).code == 4  # a retry may still score
    ended = outcome(summary(parse_failed=1, length=1, content_filtered=2), "python -m eval run c.yaml")
    assert ended.code == 3 and len(ended.lines) == 1
    assert "(1 parse_failed, 1 length, 2 content_filtered)" in ended.lines[0] and "judge.max_tokens" in ended.lines[0]
    assert outcome(summary(valid=1, parse_failed=3)).code == 0  # one score: the task is measured (its failures counted)
