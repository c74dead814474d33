"""The run's bookkeeping: the dry-run estimate agrees with what the run then computes, a finished run rewrites no
report, the shared judge cache catches up after a kill, progress in a log stays at one line per 30 s.

Runs here replay answers from a file and judge with the in-process mock, so they take a second each.
"""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from helpers import cli, run_cli

from eval import pipeline, progress, report
from eval.config import load_config
from eval.errors import UserError
from eval.judge.limits import estimate_tokens


def replay_config(tmp_path, *overrides: str, cache: str = "off"):
    """The four sample tasks, one item each, one round; answers replayed from a file; the built-in mock judge."""
    answers = tmp_path / "answers.jsonl"
    settings = {"name": "replayed", "model": {"backend": "replay", "path": str(answers)}, "rounds": 1, "variant": "sample",
                "tasks": ["mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"],
                "judge": {"model": "mock-judge", "mock": True, "concurrency": 2, "cache": cache,
                          "cache_path": str(tmp_path / "judge-cache.sqlite")}}
    path = tmp_path / "replayed.yaml"
    path.write_text(json.dumps(settings))
    cfg = load_config(str(path), list(overrides))
    with answers.open("w") as f:
        for task in pipeline.load_tasks(cfg, 1).values():
            item = task.items[0]
            for turn in range(1, len(item.turns) + 1):
                f.write(json.dumps({"task": task.name, "item_id": item.item_id, "turn": turn, "round": 1,
                                    "final": f"Answer {turn}.", "status": "ok"}) + "\n")
    return path, cfg


def run(cfg, out, **options):
    return pipeline.run(cfg, pipeline.RunOptions(out=out, limit=1, **options))


CALLS = ("generation_calls", "judge_calls")
REPORTS = ("summary.json", "table.md", "table.csv", "report.html", "generations.jsonl", "plots/benchmarks.png")  # not the manifest: it says what each invocation did


def activity(out):
    return json.loads((out / "manifest.json").read_text())["this_invocation"]


def test_the_dry_run_counts_exactly_what_the_run_then_computes(tmp_path, capsys):
    _, cfg = replay_config(tmp_path)
    out = tmp_path / "run"
    fresh = run(cfg, out, dry_run=True)["total"]
    assert (fresh["generations"], fresh["judge_requests"]) == (6, 6)
    run(cfg, out)
    finished = run(cfg, out, dry_run=True)["total"]
    assert (finished["generations"], finished["judge_requests"]) == (0, 0)
    # A new judge setting for one task: its judgment is asked again, no answer is regenerated.
    _, rejudged = replay_config(tmp_path, "task_options.llm_jp_instructions.judge.max_tokens=512")
    with pytest.raises(UserError, match=r"task_options.llm_jp_instructions.judge.max_tokens \(unset → 512\); continuing "
                                        r"would regenerate 0 stored answers and re-judge up to 1 stored judgments"):
        run(rejudged, out, dry_run=True)  # the run would refuse: the dry run says so, with the counts
    estimate = run(rejudged, out, dry_run=True, force=True)["total"]
    run(rejudged, out, force=True)
    assert (estimate["generations"], estimate["judge_requests"]) == (0, 1) == tuple(activity(out)[k] for k in CALLS)
    # A new generation budget changes every request: no stored answer counts any more. The estimate counts their
    # judgments too (an upper bound: here the replayed answers come out identical, so the judgments stand).
    _, regenerated = replay_config(tmp_path, "task_options.llm_jp_instructions.judge.max_tokens=512",
                                   "generation.max_new_tokens=40")
    estimate = run(regenerated, out, dry_run=True, force=True)["total"]
    run(regenerated, out, force=True)
    assert estimate["generations"] == activity(out)["answers_replayed"] == 6 and activity(out)["generation_calls"] == 0
    assert estimate["judge_requests"] == 6 and activity(out)["judge_calls"] == 0
    capsys.readouterr()


def test_the_estimate_counts_the_answers_it_knows_at_their_length(tmp_path, capsys):
    """A judge prompt holds the answers. Where they are known (in the file a replay reads, stored in the run) the
    estimate counts them at their length, so a longer answer costs more and `judge.estimate_answer_tokens` plays no
    part; a rejudge's dry run reads its source run's answers and writes nothing."""
    _, cfg = replay_config(tmp_path)
    answers, out = tmp_path / "answers.jsonl", tmp_path / "run"
    short = run(cfg, out, dry_run=True)["total"]
    assert (short["answers_known"], short["answers_guessed"]) == (8, 0)  # MT-Bench: 1 + 2 per task; the others 1
    _, guessing_more = replay_config(tmp_path, "judge.estimate_answer_tokens=5000")
    assert run(guessing_more, out, dry_run=True)["total"]["prompt_tokens"] == short["prompt_tokens"]
    # MT-Bench EN's first answer made 2 000 characters longer: it is in its turn-1 and its turn-2 judge prompt.
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    longer = next(r for r in rows if r["task"] == "mt_bench_en" and r["turn"] == 1)
    before, longer["final"] = longer["final"], longer["final"] + " many words" * 200
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    long = run(cfg, out, dry_run=True)["total"]
    assert long["prompt_tokens"] - short["prompt_tokens"] == 2 * (estimate_tokens(longer["final"]) - estimate_tokens(before))
    run(cfg, out)
    capsys.readouterr()
    rejudged = cli("rejudge", str(out), "--out", str(tmp_path / "rejudged"), "--dry-run")
    assert rejudged.returncode == 0, rejudged.stderr[-2000:]
    assert "the judge prompts' answers: 8 counted at their length" in rejudged.stdout
    total = next(line.split() for line in rejudged.stdout.splitlines() if line.strip().startswith("total"))
    assert total[1:4] == ["6", "6", str(long["prompt_tokens"])]  # answers replayed, judge requests, prompt tokens
    assert not (tmp_path / "rejudged").exists()


def test_a_finished_run_rewrites_no_report_and_report_rebuilds_them(tmp_path, capsys, monkeypatch):
    _, cfg = replay_config(tmp_path)
    out = tmp_path / "run"
    run(cfg, out)
    written = {name: (out / name).stat().st_mtime_ns for name in REPORTS}

    def refuse(*args, **kwargs):
        raise AssertionError("reports rebuilt although nothing changed")

    with monkeypatch.context() as patched:
        patched.setattr(report, "write_run", refuse)
        summary = run(cfg, out)
    assert summary.dump() == json.loads((out / "summary.json").read_text())
    assert "nothing to compute" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in REPORTS} == written
    report.regenerate(out)  # `python -m eval report RUN_DIR`: on demand, always
    assert (out / "summary.json").stat().st_mtime_ns != written["summary.json"]
    (out / "table.md").unlink()  # a missing report is written again
    run(cfg, out)
    assert (out / "table.md").is_file()


def test_a_changed_store_rebuilds_the_reports(tmp_path, capsys):
    _, cfg = replay_config(tmp_path)
    out = tmp_path / "run"
    run(cfg, out)
    _, rejudged = replay_config(tmp_path, "task_options.llm_jp_instructions.judge.max_tokens=512")
    run(rejudged, out, force=True)
    assert activity(out)["judge_calls"] == 1  # the manifest was written again (the first run's said 6)
    capsys.readouterr()


def test_judgments_stored_before_a_kill_are_kept_paid_once_and_reach_the_shared_cache(tmp_path):
    """SIGKILL right after the 3rd judgment is committed to the store (the process boundary is the subject)."""
    config, _ = replay_config(tmp_path, cache="read_write")
    out = tmp_path / "run"
    args = ["run", str(config), "--out", str(out), "--limit", "1", "--set", "judge.concurrency=1"]
    killed = run_cli(*args, env={"LLMJP_EVAL_CRASH_AT": "judgment_stored:3"})
    assert killed.returncode == -9
    store = sqlite3.connect(out / "run.sqlite")
    kept = dict(store.execute("SELECT key, record FROM judgments").fetchall())
    store.close()
    assert len(kept) == 3
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert activity(out)["judge_calls"] == 3  # the three stored before the kill are not asked again
    cache = sqlite3.connect(tmp_path / "judge-cache.sqlite")
    cached = {json.loads(record)["judgment"]["key"] for (record,) in cache.execute("SELECT record FROM entries")}
    cache.close()
    assert set(kept) <= set(cached) and len(cached) == 6  # including the one whose cache write the kill cut off


def test_a_short_run_logs_one_progress_line_per_stage(tmp_path, capsys):
    _, cfg = replay_config(tmp_path)
    run(cfg, tmp_path / "run")
    logged = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert [line.split(":")[0] for line in logged] == ["generate", "judge"]  # their last lines; nothing else in 30 s


def test_progress_in_a_log_is_one_line_per_30_s_and_a_last_line():
    now = [0.0]
    log = io.StringIO()  # not a terminal
    bar = progress.Bar("judge", "req", stream=log, clock=lambda: now[0])
    for _ in range(3168):  # one configuration's judgments over 10 minutes: released, then judged
        bar.add_total(1)
        now[0] += 0.1
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 316.8 // 30 + 1  # ten in 316.8 s, and the last
    assert all(line.startswith("judge: ") for line in lines) and "\r" not in log.getvalue()
    assert lines[-1].startswith("judge: 3168/3168 req (100 %)")
