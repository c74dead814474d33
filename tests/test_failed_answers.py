"""Runs whose answers fail: a generation server killed mid-run, every server down, failed answers generated again.

A judgment belongs to the answer it judged: a run that generates a slot's answer again judges the new answer in the
same run, the store never holds a judgment of an answer it no longer has, and `complete` is true only when every
slot has an answer that did not fail and a judgment of it. Every run here is the smoke configuration through the
openai backend against local mock generators (`mock-gen`), judged by the in-process mock judge; commands run in
this process."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers import cli, counters, read_jsonl, wait_until

from eval.backends import fleet
from eval.config import MockSettings

CONFIG = "configs/smoke.yaml"


def run(out: Path, servers, *extra: str, max_retries: int = 3, concurrency: int = 4):
    urls = ", ".join(f"'{s.url}'" for s in servers)
    model = (f"{{backend: openai, path: mock-gen, base_urls: [{urls}], concurrency: {concurrency}, "
             f"max_retries: {max_retries}}}")
    return cli("run", CONFIG, "--out", str(out), "--set", f"model={model}", *extra)


def records(out: Path, table: str) -> dict[tuple, dict]:
    db = sqlite3.connect(out / "run.sqlite")
    try:
        rows = [json.loads(r) for (r,) in db.execute(f"SELECT record FROM {table}")]
    finally:
        db.close()
    return {(r["round"], r["task"], r["item_id"], r["turn"]): r for r in rows}


def judgments_of_other_answers(out: Path) -> list[tuple]:
    """Slots whose stored judgment did not see the answers the store now holds for its conversation."""
    gens, judged = records(out, "generations"), records(out, "judgments")
    stale = []
    for slot, judgment in judged.items():
        text = "\n".join(m["content"] for m in judgment["messages"])
        answers = [gens.get((*slot[:3], turn)) for turn in range(1, slot[3] + 1)]
        if any(g is None or (g["status"] == "ok" and g["final"] not in text) for g in answers):
            stale.append(slot)
    return stale


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def kill_after(server, requests: int, *also) -> threading.Thread:
    def kill() -> None:
        wait_until(lambda: counters(server).get("requests", 0) >= requests)
        for victim in (server, *also):
            victim.kill()

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_a_generation_server_killed_mid_run_leaves_every_answer_ok_from_the_survivor(tmp_path, mock_server):
    survivor, victim = (mock_server(settings=MockSettings(latency_s=0.02)) for _ in range(2))
    out = tmp_path / "run"
    killer = kill_after(victim, 10)
    result = run(out, [survivor, victim], "--rounds", "2")
    killer.join()
    assert result.returncode == 0, result.stderr[-3000:]
    gens = records(out, "generations")
    assert len(gens) == 48 and {g["status"] for g in gens.values()} == {"ok"}
    assert summary(out)["complete"] is True
    servers = json.loads((out / "manifest.json").read_text())["this_invocation"]["generation_servers"]
    assert [s["url"] for s in servers] == [survivor.url, victim.url]
    assert servers[1]["failed"] >= 1 and servers[1]["taken_out"] >= 1 and servers[0]["failed"] == 0
    assert servers[0]["answered"] + servers[1]["answered"] == 48
    assert servers[0]["answered"] == counters(survivor)["requests"]


def test_every_server_down_stops_generating_with_one_line_and_a_resume_completes_after_one_restarts(
        tmp_path, mock_server, monkeypatch):
    from eval.judge.mock_server import MockServer

    monkeypatch.setattr(fleet, "COOLDOWN_S", 0.05)
    first, second = (mock_server(settings=MockSettings(latency_s=0.02)) for _ in range(2))
    out = tmp_path / "run"
    killer = kill_after(first, 6, second)
    down = run(out, [first, second], "--rounds", "2")
    killer.join()
    assert down.returncode == 4, down.stderr[-3000:]
    said = [line for line in down.stderr.splitlines() if "generation stopped" in line]
    assert len(said) == 1 and first.url in said[0] and second.url in said[0] and "run the same command again" in said[0]
    state = summary(out)
    assert state["complete"] is False
    not_generated = sum(t["counts"]["gen_missing"] for t in state["tasks"].values())
    assert 0 < not_generated < 48 and len(records(out, "generations")) == 48 - not_generated
    last = down.stderr.strip().splitlines()[-2:]
    assert last[0].startswith("INCOMPLETE: ") and "not generated" in last[0]
    assert last[1].startswith("Run the same command again to retry them: python -m eval run configs/smoke.yaml")

    restarted = MockServer(MockSettings(), port=second.port).start()
    try:
        resumed = run(out, [first, second], "--rounds", "2")
    finally:
        restarted.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(out)["complete"] is True and judgments_of_other_answers(out) == []
    gens = records(out, "generations")
    assert len(gens) == 48 and {g["status"] for g in gens.values()} == {"ok"}


@pytest.fixture
def failed_run(tmp_path, mock_server):
    """One round whose generator answers 500 to about a third of the requests, with no attempts left for them; the
    default profile judges each failed answer as None in the same run."""
    generator = mock_server(settings=MockSettings(rate_500=0.3, seed=3))
    out = tmp_path / "run"
    first = run(out, [generator], "--rounds", "1", max_retries=0, concurrency=1)  # one at a time: the same faults
    failed = {slot for slot, g in records(out, "generations").items() if g["status"] == "error"}
    assert any(task.startswith("mt_bench") and turn == 1 for _, task, _, turn in failed)  # the scenario needs one
    return generator, out, first, failed


def test_a_run_with_failed_answers_says_so_per_task_with_the_retry_command_and_is_not_complete(failed_run):
    _, out, first, failed = failed_run
    assert first.returncode == 4
    state = summary(out)
    assert state["complete"] is False
    per_task = {t: sum(1 for _, task, _, _ in failed if task == t) for t in state["tasks"]}
    assert {t: e["counts"]["gen_error"] for t, e in state["tasks"].items()} == per_task
    incomplete, retry = first.stderr.strip().splitlines()[-2:]
    columns = {t: e["column"] for t, e in state["tasks"].items()}
    expected = "; ".join(f"{columns[t]}: {n} answer{'s' if n > 1 else ''} failed" for t, n in per_task.items() if n)
    assert incomplete == f"INCOMPLETE: {expected}."
    assert retry.startswith("Run the same command again to retry them: python -m eval run configs/smoke.yaml --out")
    table = (out / "table.md").read_text(encoding="utf-8")
    assert f"PARTIAL RESULTS: {len(failed)} answers failed (of 24 planned)" in table
    # Upstream's behaviour, kept: each failed answer is judged as it came back (None) in the run that got it.
    judged = records(out, "judgments")
    assert all(slot in judged and "None" in judged[slot]["messages"][-1]["content"] for slot in failed)


def test_answers_generated_again_are_judged_in_the_same_run_and_no_judgment_of_none_is_left(failed_run):
    generator, out, _, failed = failed_run
    before = records(out, "judgments")
    generator.state.settings = MockSettings()  # the server is healthy now
    again = run(out, [generator], "--rounds", "1", max_retries=0, concurrency=1)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary(out)["complete"] is True
    gens, judged = records(out, "generations"), records(out, "judgments")
    assert {g["status"] for g in gens.values()} == {"ok"} and len(judged) == 24
    assert judgments_of_other_answers(out) == []
    # A new turn-1 answer changes turn 2's history: turn 2 is generated again from it, and judged with both answers.
    follow_ups = {(r, t, i, 2) for r, t, i, turn in failed if turn == 1 and t.startswith("mt_bench")} - failed
    assert follow_ups
    for slot in follow_ups:
        first_answer = gens[(*slot[:3], 1)]["final"]
        assert [m["content"] for m in gens[slot]["messages"] if m["role"] == "assistant"] == [first_answer]
        assert first_answer in judged[slot]["messages"][-1]["content"]
    regenerated = failed | follow_ups
    assert {slot for slot in judged if judged[slot]["key"] != before[slot]["key"]} == regenerated
    manifest = json.loads((out / "manifest.json").read_text())["this_invocation"]
    assert manifest["generation_calls"] == manifest["judge_calls"] == len(regenerated)


def test_a_summary_is_never_written_from_a_judgment_of_an_answer_that_was_replaced(failed_run, monkeypatch):
    """Killed right after the first answer generated again is stored: the store holds no judgment of the answer it
    replaced, so a report written from it counts that judgment as missing."""
    from eval import pipeline

    class Killed(BaseException):
        pass

    def crash(name: str) -> None:
        if name == "generation_stored":
            raise Killed()

    generator, out, _, failed = failed_run
    generator.state.settings = MockSettings()
    monkeypatch.setattr(pipeline, "checkpoint", crash)
    with pytest.raises(Killed):
        run(out, [generator], "--rounds", "1", max_retries=0, concurrency=1)
    monkeypatch.undo()
    replaced = [slot for slot, g in records(out, "generations").items() if slot in failed and g["status"] == "ok"]
    assert len(replaced) == 1
    assert judgments_of_other_answers(out) == []
    assert replaced[0] not in records(out, "judgments")  # moved to `superseded`, as a replaced record is
    cli("report", str(out))
    state = summary(out)
    assert state["tasks"][replaced[0][1]]["counts"]["missing"] >= 1 and state["complete"] is False
    assert replaced[0] not in {(j["round"], j["task"], j["item_id"], j["turn"]) for j in read_jsonl(out / "judgments.jsonl")}
