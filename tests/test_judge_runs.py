"""The judge stage inside whole runs: kill and resume without paying twice, Batch API mode with resume, the budget
cap, dry runs, the shared cache across runs. (The API key never written anywhere: test_reliability.py.)"""

from __future__ import annotations

import json
import signal
from collections import Counter

from eval.config import MockSettings

from helpers import SECRET, body_hash, cli, counters, popen_cli, read_jsonl, smoke_args, stored, wait_until

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
