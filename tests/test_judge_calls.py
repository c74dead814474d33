"""Several judge calls per slot: a judgment is stored by slot and call; a kind with two calls per slot is judged,
killed, resumed with no call asked twice, aggregated by its rule, counted, shown and dropped when its calls change;
and a store written by main (one judgment per slot, no `call` column) opens, resumes without re-judging and reports
byte for byte what main reported."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest
import two_calls
from helpers import SECRET, body_hash, cli, counters, read_jsonl, run_cli, smoke_args, stored

DATA = Path(__file__).resolve().parent / "data"
ENV = {"MOCK_JUDGE_KEY": SECRET}


# ---------------------------------------------------------------- a store written by main


MAIN_RUN = ("--limit", "1", "--rounds", "2", "--set", "task_options.mt_bench_en.generation.no_answer=exclude")
MAIN_REPORTS = ("summary.json", "table.md")


def main_store(folder: Path) -> Path:
    """The run directory main wrote (tests/data/store-main.sql: its store, as `sqlite3 .dump` gives it)."""
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "run.sqlite")
    db.executescript((DATA / "store-main.sql").read_text(encoding="utf-8"))
    db.close()
    return folder


def rows(path: Path, query: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_a_store_written_by_main_resumes_without_rejudging_and_reports_what_main_reported(tmp_path):
    from eval.records import SINGLE_CALL
    from eval.store import Store

    run = main_store(tmp_path / "run")
    path = run / "run.sqlite"
    before = rows(path, "SELECT round, task, item_id, turn, key, generation_key, status, record FROM judgments "
                        "ORDER BY round, task, item_id, turn")
    assert "call" not in [c[1] for c in rows(path, "PRAGMA table_info(judgments)")]

    # Read-only (report, view, runs, agree): the table is read through a view; nothing is written
    store = Store(path, read_only=True)
    assert {j.call for j in store.records("judgment")} == {SINGLE_CALL}
    assert store.judgment(next(p.slot for p in store.plan())).status == "ok"
    store.close()
    assert "call" not in [c[1] for c in rows(path, "PRAGMA table_info(judgments)")]
    reported = tmp_path / "reported"
    assert cli("report", str(run), "--out", str(reported)).returncode == 0
    for name in MAIN_REPORTS:
        assert (reported / name).read_text() == (DATA / f"store-main.{name}").read_text()

    # The run itself: the table gets its call column, nothing is generated or judged again, the reports are main's
    resumed = cli("run", "configs/smoke.yaml", "--out", str(run), *MAIN_RUN)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "nothing to compute" in resumed.stdout
    manifest = json.loads((run / "manifest.json").read_text())["this_invocation"]
    assert (manifest["generation_calls"], manifest["judge_calls"]) == (0, 0)
    for name in MAIN_REPORTS:
        assert (run / name).read_text() == (DATA / f"store-main.{name}").read_text()
    after = rows(path, "SELECT round, task, item_id, turn, key, generation_key, status, record, call FROM judgments "
                       "ORDER BY round, task, item_id, turn")
    assert [r[:-1] for r in after] == before and {r[-1] for r in after} == {SINGLE_CALL}  # records untouched
    assert rows(path, "SELECT COUNT(*) FROM superseded") == [(0,)]

    # main's code writes a judgment as it did (no call): the column's default makes it its slot's one call
    db = sqlite3.connect(path)
    db.execute("INSERT OR REPLACE INTO judgments (round, task, item_id, turn, key, generation_key, status, record, created) "
               "SELECT round, task, item_id, turn, key, generation_key, status, record, created FROM judgments LIMIT 1")
    db.commit()
    db.close()
    assert rows(path, "SELECT COUNT(*), COUNT(DISTINCT call) FROM judgments") == [(len(before), 1)]


# ---------------------------------------------------------------- a kind with two calls per slot


PLANNED_SLOTS = 4  # two MT-Bench EN sample questions × two turns, one round


def two_call_run(out: Path, server, *extra: str) -> list[str]:
    return smoke_args(out, server, "--set", "tasks=[two_calls]", "--rounds", "1", "--limit", "2",
                      "--set", "judge.concurrency=1", "--set", "judge.cache=off", *extra)


@pytest.fixture
def tasks_folder(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    two_calls.task_file(folder)
    return folder


def test_two_calls_per_slot_are_stored_resumed_after_a_kill_without_duplicates_and_averaged(tmp_path, tasks_folder,
                                                                                            mock_server):
    from eval.view import page_data

    server = mock_server(api_key=SECRET)
    env = {**ENV, "LLMJP_EVAL_TASKS": str(tasks_folder)}
    out = tmp_path / "run"
    killed = run_cli(*two_call_run(out, server), env={**env, "LLMJP_EVAL_CRASH_AT": "judgment_stored:3"},
                     preload="two_calls")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(stored(out, "judgments")) == 3

    resumed = cli(*two_call_run(out, server), env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    judgments = read_jsonl(out / "judgments.jsonl")
    places = [(j["round"], j["item_id"], j["turn"], j["call"]) for j in judgments]
    assert len(places) == len(set(places)) == 2 * PLANNED_SLOTS
    assert sorted({p[3] for p in places}) == ["a", "b"] and all(j["status"] == "ok" for j in judgments)
    bodies = server.state.snapshot()["bodies"]
    assert all(bodies[body_hash(j)] == 1 for j in judgments)  # no call was asked twice, across the kill
    assert counters(server)["requests"] == 2 * PLANNED_SLOTS + 2  # and one preflight per invocation
    assert json.loads((out / "manifest.json").read_text())["this_invocation"]["judge_calls"] == 2 * PLANNED_SLOTS - 3
    assert rows(out / "run.sqlite", "SELECT COUNT(*) FROM superseded") == [(0,)]

    # Each slot's observation is the mean of its two calls (the default rule): 4 observations, not 8
    summary = json.loads((out / "summary.json").read_text())["tasks"]["two_calls"]
    by_slot: dict[tuple, dict[str, float]] = {}
    for j in judgments:
        by_slot.setdefault((j["item_id"], j["turn"]), {})[j["call"]] = j["scores"]["score"]
    assert any(scores["a"] != scores["b"] for scores in by_slot.values())  # the two calls are two judgments
    means = [(s["a"] + s["b"]) / 2 for s in by_slot.values()]
    assert summary["metrics"]["score"]["n"] == PLANNED_SLOTS
    assert summary["metrics"]["score"]["mean"] == pytest.approx(sum(means) / len(means))
    assert summary["metrics"]["turn2"]["mean"] == pytest.approx(sum(m for (_, t), m in zip(by_slot, means, strict=True) if t == 2) / 2)
    counts = summary["counts"]
    assert (counts["planned"], counts["judgments"], counts["valid"], counts["missing"]) == (4, 8, 8, 0)
    assert json.loads((out / "summary.json").read_text())["complete"]

    # The page shows both judgments of every slot
    data = page_data([out])
    fields = {name: i for i, name in enumerate(data["row_fields"])}
    call = data["judgment_fields"].index("call")
    assert [[j[call] for j in row[fields["judgments"]]] for row in data["runs"][0]["rows"]] == [["a", "b"]] * PLANNED_SLOTS

    again = cli(*two_call_run(out, server), env=env)
    assert again.returncode == 0 and "nothing to compute" in again.stdout


def test_a_slot_whose_calls_change_drops_the_old_calls_judgments(tmp_path, tasks_folder, mock_server):
    server = mock_server(api_key=SECRET)
    env = {**ENV, "LLMJP_EVAL_TASKS": str(tasks_folder)}
    out = tmp_path / "run"
    assert cli(*two_call_run(out, server), env=env).returncode == 0
    two_calls.task_file(tasks_folder, metric="mt_bench")  # the same questions, now judged once per slot
    refused = cli(*two_call_run(out, server), env=env)
    assert refused.returncode == 2 and f"re-judge up to {2 * PLANNED_SLOTS} stored judgments" in refused.stderr
    forced = cli(*two_call_run(out, server, "--force"), env=env)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert sorted(j["call"] for j in read_jsonl(out / "judgments.jsonl")) == ["single"] * PLANNED_SLOTS
    assert rows(out / "run.sqlite", "SELECT kind, COUNT(*) FROM superseded GROUP BY kind") == [("judgment", 2 * PLANNED_SLOTS)]
    counts = json.loads((out / "summary.json").read_text())["tasks"]["two_calls"]["counts"]
    assert (counts["judgments"], counts["missing"]) == (PLANNED_SLOTS, 0)


def test_a_kind_decides_how_its_calls_make_a_slots_observations():
    import pandas as pd

    from eval.kinds import TaskRules
    from eval.metrics import observations

    class Lowest(two_calls.TwoCalls):
        name = "lowest_of_two"

        def aggregate(self, rules, judgments, turn, category):
            valid = [j.scores["score"] for j in judgments if j.status == "ok"]
            return [("score", min(valid))] if len(valid) == len(judgments) else []

    rows_ = [{"round": 1, "item_id": "1", "turn": 1, "category": None, "call": call, "status": status, "scores": scores}
             for call, status, scores in (("a", "ok", {"score": 3.0}), ("b", "ok", {"score": 9.0}))] + \
            [{"round": 1, "item_id": "2", "turn": 1, "category": None, "call": call, "status": status, "scores": scores}
             for call, status, scores in (("a", "ok", {"score": 5.0}), ("b", "parse_failed", {}))]
    frame = pd.DataFrame(rows_)
    default = observations(TaskRules(two_calls.TwoCalls.name, calls=("a", "b")), frame)
    assert default[default["metric"] == "score"]["value"].tolist() == [6.0, 5.0]  # the mean of the calls that scored
    two_calls.KINDS[Lowest.name] = Lowest()
    try:
        lowest = observations(TaskRules(Lowest.name, calls=("a", "b")), frame)
    finally:
        del two_calls.KINDS[Lowest.name]
    assert lowest["value"].tolist() == [3.0] and lowest["item_id"].tolist() == ["1"]
