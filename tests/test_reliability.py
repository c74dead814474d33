"""Kill anywhere and resume to the same table; the run-directory lock; atomic outputs; partial results labelled;
memory and store size over a realistic-size run.

Kill points are crash checkpoints in the harness (eval/failpoints.py): the n-th pass through a named point sends
SIGKILL to the run, as a preemption would. The default set covers every stage; `--run-slow` runs the full set. A
kill point runs one round of the smoke configuration (rounds only multiply the slots; resuming later rounds is
covered by test_judge_runs.py's kill during judging and test_reports.py's added rounds); the killed run is a real
process, the resumed one runs in this process.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from helpers import SECRET, cli, counters, popen_cli, read_jsonl, run_cli, smoke_args, stored, wait_until

from eval.config import MockSettings

ENV = {"MOCK_JUDGE_KEY": SECRET}
PLANNED = 24  # smoke, one round: 2 × 4 × 2 MT-Bench turns + 4 + 4
ONE_ROUND = ("--rounds", "1", "--set", "judge.concurrency=4")
# A one-round smoke run passes 24 times through generation_stored and judgment_stored, twice through turn_done,
# about 60 times through store_commit and 11 times through report_file.
DEFAULT_POINTS = [("start", 1), ("generation_stored", 5), ("turn_done", 1), ("judgment_stored", 10),
                  ("store_commit", 25), ("report_file", 2)]
FULL_POINTS = DEFAULT_POINTS + [
    ("model_loaded", 1), ("generation_stored", 1), ("generation_stored", 7), ("generation_stored", 16),
    ("generation_stored", 23), ("turn_done", 2), ("judgment_stored", 1), ("judgment_stored", 12),
    ("judgment_stored", 18), ("judgment_stored", 23), ("store_commit", 5), ("store_commit", 45),
    ("store_commit", 55), ("report_file", 1), ("report_file", 5), ("report_file", 8), ("report_file", 9),
]
FIGURES: list[dict] = []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same configuration."""
    from eval.judge.mock_server import MockServer

    server = MockServer(MockSettings(), api_key=SECRET).start()
    out = tmp_path_factory.mktemp("reference") / "run"
    result = cli(*smoke_args(out, server, "--rounds", "1"), env=ENV)
    server.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    return {name: (out / name).read_text() for name in ("summary.json", "table.md", "table.csv")}


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    if FIGURES:
        points = len(FIGURES)
        identical = sum(f["identical"] for f in FIGURES)
        print(f"\nkill points: {points} tried, {identical} resumed to identical results; "
              f"duplicates: {sum(f['duplicates'] for f in FIGURES)}; wasted judge calls: {sum(f['wasted_judge'] for f in FIGURES)}; "
              f"calls beyond unstored work: {sum(f['excess'] for f in FIGURES)}")
        for f in FIGURES:
            print(f"  {f}")


def _kill_and_resume(point: tuple[str, int], tmp_path: Path, mock_server, reference: dict) -> None:
    server = mock_server(settings=MockSettings(latency_s=0.05), api_key=SECRET)
    out = tmp_path / "run"
    name, n = point
    crashed = run_cli(*smoke_args(out, server, *ONE_ROUND), env={**ENV, "LLMJP_EVAL_CRASH_AT": f"{name}:{n}"})
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.returncode, crashed.stderr[-1500:])
    gens_at_kill, judgments_at_kill = len(stored(out, "generations")), len(stored(out, "judgments"))
    requests_at_kill = counters(server).get("requests", 0)
    resumed = cli(*smoke_args(out, server, *ONE_ROUND), env=ENV)
    assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
    activity = json.loads((out / "manifest.json").read_text())["this_invocation"]
    judge_requests_after = counters(server)["requests"] - requests_at_kill - (1 if activity["judge_calls"] else 0)
    gens = read_jsonl(out / "generations.jsonl")
    judgments = read_jsonl(out / "judgments.jsonl")
    slots = lambda records: [(r["round"], r["task"], r["item_id"], r["turn"]) for r in records]  # noqa: E731
    duplicates = (len(slots(gens)) - len(set(slots(gens)))) + (len(slots(judgments)) - len(set(slots(judgments))))
    identical = all((out / name).read_text() == text for name, text in reference.items())
    excess = max(0, activity["generation_calls"] - (PLANNED - gens_at_kill)) + max(0, judge_requests_after - (PLANNED - judgments_at_kill))
    wasted = max(0, requests_at_kill - (1 if requests_at_kill else 0) - judgments_at_kill)
    FIGURES.append({"point": f"{name}:{n}", "gens_at_kill": gens_at_kill, "judgments_at_kill": judgments_at_kill,
                    "generation_calls_after": activity["generation_calls"], "judge_requests_after": judge_requests_after,
                    "wasted_judge": wasted, "duplicates": duplicates, "excess": excess, "identical": identical})
    assert len(gens) == len(judgments) == PLANNED and duplicates == 0
    assert identical, point
    assert excess == 0, FIGURES[-1]
    assert not list(out.rglob("*.partial"))


@pytest.mark.parametrize("point", DEFAULT_POINTS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_kill_anywhere_resumes_to_the_same_results(point, tmp_path, mock_server, reference):
    _kill_and_resume(point, tmp_path, mock_server, reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", FULL_POINTS[len(DEFAULT_POINTS):], ids=lambda p: f"{p[0]}-{p[1]}")
def test_kill_anywhere_full_set(point, tmp_path, mock_server, reference):
    _kill_and_resume(point, tmp_path, mock_server, reference)


def test_a_kill_while_writing_reports_leaves_no_half_written_file(tmp_path, mock_server):
    server = mock_server(api_key=SECRET)
    out = tmp_path / "run"
    assert cli(*smoke_args(out, server, "--rounds", "1"), env=ENV).returncode == 0
    for n in (1, 4, 7):
        crashed = run_cli("report", str(out), env={"LLMJP_EVAL_CRASH_AT": f"report_file:{n}"})
        assert crashed.returncode == -signal.SIGKILL
        json.loads((out / "summary.json").read_text())  # complete JSON, the old or the new file, never a mix
        assert all(line.strip() for line in (out / "judgments.jsonl").read_text().splitlines())
        assert (out / "table.md").read_text().endswith("\n")


def test_a_second_run_on_a_busy_directory_fails_at_once_and_a_killed_runs_lock_is_not_stale(tmp_path, mock_server):
    server = mock_server(settings=MockSettings(latency_s=0.5), api_key=SECRET)
    out = tmp_path / "run"
    first = popen_cli(*smoke_args(out, server, "--rounds", "1"), env=ENV)
    assert wait_until(lambda: counters(server).get("requests", 0) >= 2)
    started = time.perf_counter()
    second = cli(*smoke_args(out, server, "--rounds", "1"), env=ENV)
    assert second.returncode == 2 and time.perf_counter() - started < 30
    assert "another run is using this directory" in second.stderr and str(out) in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    first.send_signal(signal.SIGKILL)
    first.wait()
    server.state.settings = MockSettings()
    third = cli(*smoke_args(out, server, "--rounds", "1"), env=ENV)
    assert third.returncode == 0, third.stderr[-2000:]


def test_judge_outage_is_labelled_partial_and_a_later_run_completes(tmp_path, mock_server):
    server = mock_server(settings=MockSettings(rate_500=1.0), api_key=SECRET)
    out = tmp_path / "run"
    down = cli(*smoke_args(out, server, "--rounds", "1", "--set", "judge.max_retries=0"), env=ENV)
    assert down.returncode == 4, down.stderr[-2000:]  # reported, incomplete (outcome.INCOMPLETE)
    assert "INCOMPLETE" in down.stderr and "Run the same command again" in down.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False
    assert all(t["counts"]["api_error"] > 0 for t in summary["tasks"].values())
    table = (out / "table.md").read_text()
    assert "PARTIAL RESULTS" in table and "failed on the API" in table and " *" in table
    server.state.settings = MockSettings()
    up = cli(*smoke_args(out, server, "--rounds", "1"), env=ENV)
    assert up.returncode == 0 and json.loads((out / "summary.json").read_text())["complete"] is True


@pytest.mark.slow
def test_soak_realistic_size_memory_stays_flat_and_the_store_grows_linearly(tmp_path, mock_server, upstream):
    """3 168 generations and 3 168 judgments through the openai backend and judge against mock servers."""
    import psutil
    import yaml
    from conftest import LJJ_BASE

    def standin(name, config, rows):
        folder = tmp_path / name
        (folder / config).mkdir(parents=True)
        (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: test\n    path: {config}/test.jsonl\n---\n")
        (folder / config / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return str(folder)

    generator = mock_server(settings=MockSettings())
    judge = mock_server(api_key=SECRET)
    config = {
        "name": "soak", "variant": "full", "rounds": 3, "tasks": ["mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"],
        "model": {"backend": "openai", "path": "mock-gen", "base_urls": [generator.url], "concurrency": 32,
                  "chat_template_kwargs": {"reasoning_effort": "medium"}},
        "generation": {"max_new_tokens": 4096},
        "asset_mirrors": {LJJ_BASE: str(upstream / "llm-jp-judge") + "/"},
        "task_options": {
            "answer_carefully": {"variants": {"full": {"data": {"dataset": standin("ac", "v2.0", [
                {"ID": f"AC-{i}", "text": f"質問 {i}", "output": f"参考 {i}"} for i in range(336)])}}}},
            "llm_jp_instructions": {"variants": {"full": {"data": {"dataset": standin("inst", "v1.0", [
                {"ID": f"Q-{i}", "text": f"指示 {i}"} for i in range(400)])}}}}},
        "judge": {"model": "mock-judge", "base_url": judge.url, "api_key_env": "MOCK_JUDGE_KEY", "concurrency": 64, "cache": "off"},
    }
    path = tmp_path / "soak.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    # The judge recognises the run's own prompts (the full variants' come from the mirror, which it cannot know):
    # without them every llm-jp-instructions judgment ended parse_failed, and the run now exits 3 for that.
    from eval.config import load_config
    from eval.pipeline import load_tasks
    from eval.tasks import judge_templates

    judge.state.templates = judge_templates(load_tasks(load_config(path), None).values())
    out = tmp_path / "run"
    log = tmp_path / "soak.log"
    proc = popen_cli("run", str(path), "--out", str(out), env=ENV, log=log)
    child = psutil.Process(proc.pid)
    samples = []  # (judgments stored, rss bytes, store bytes, records stored)
    started = time.perf_counter()
    while proc.poll() is None:
        try:
            rss = child.memory_info().rss
        except psutil.NoSuchProcess:
            break
        size = sum(p.stat().st_size for p in out.glob("run.sqlite*")) if out.exists() else 0
        judgments = len(stored(out, "judgments"))
        samples.append((judgments, rss, size, judgments + len(stored(out, "generations"))))
        time.sleep(0.2)
    proc.wait()
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert len(read_jsonl(out / "judgments.jsonl")) == 3168
    first_third = next(s for s in samples if s[0] >= 1056)
    two_thirds = next(s for s in samples if s[0] >= 2112)
    # The last sample while judging: once every judgment is stored the reports are written, which load every record
    # (their peak is printed, not bounded here), and on a loaded machine the first sample after that may fall in them.
    done = [s for s in samples if s[0] < 3168][-1]
    assert done[0] >= 2900, f"no sample near the end of judging: the last one had {done[0]} judgments stored"
    growth = done[1] / first_third[1] - 1
    per_record = [s[2] / s[3] for s in (first_third, two_thirds, done)]
    print(f"\nsoak: 3168 generations + 3168 judgments in {elapsed:.0f} s; RSS at 1/3, 2/3 and {done[0]} judgments stored: "
          f"{first_third[1] / 2**20:.0f}, {two_thirds[1] / 2**20:.0f}, {done[1] / 2**20:.0f} MiB ({growth:+.1%}); "
          f"peak while writing reports {max(s[1] for s in samples) / 2**20:.0f} MiB; store "
          + ", ".join(f"{b / 1024:.1f}" for b in per_record) + " KiB per stored record")
    assert growth < 0.10
    assert max(per_record) / min(per_record) < 1.5


# ---------------------------------------------------------------- stop signals, the run directory, keys


@pytest.mark.parametrize("sig, stage", [(signal.SIGINT, "generations"), (signal.SIGTERM, "judgments")],
                         ids=["SIGINT-while-generating", "SIGTERM-while-judging"])
def test_a_stop_signal_says_one_line_keeps_stored_work_and_the_run_resumes(sig, stage, tmp_path, mock_server):
    server = mock_server(settings=MockSettings(latency_s=0.2), api_key=SECRET)
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = popen_cli(*smoke_args(out, server, "--rounds", "1"), env=ENV, log=log)
    assert wait_until(lambda: len(stored(out, stage)) >= 2, timeout=300)
    proc.send_signal(sig)
    proc.wait(timeout=300)
    text = log.read_text().replace("\r", "\n")
    assert proc.returncode == 128 + sig, text[-3000:]
    assert not any(word in text for word in ("Traceback", "Error", "ERROR", "never awaited")), text[-3000:]
    said = [line for line in text.splitlines() if "stopping; everything stored so far is kept" in line]
    assert len(said) == 1 and said[0].startswith(f"{'interrupted' if sig == signal.SIGINT else 'terminated'} "
                                                 f"({signal.Signals(sig).name})"), text[-3000:]
    kept = {r["key"] for r in stored(out, "generations")}
    assert len(kept) >= 2
    resumed = cli(*smoke_args(out, server, "--rounds", "1"), env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert kept <= {g["key"] for g in read_jsonl(out / "generations.jsonl")}  # nothing stored was recomputed
    assert json.loads((out / "manifest.json").read_text())["this_invocation"]["generation_calls"] == PLANNED - len(kept)
    from eval.rundir import RUN_FILES

    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"run.lock", "run.sqlite", "run.sqlite-wal", "run.sqlite-shm"}
    assert written <= set(RUN_FILES)  # start-up cleans temporaries of exactly these


def test_start_up_removes_only_the_half_written_files_the_harness_itself_creates(tmp_path):
    from eval.rundir import RunLock

    out = tmp_path / "shared-folder"  # --out pointing at a folder that holds other things
    own = [out / ".summary.json.k2j4h5g6.partial", out / "plots" / ".benchmarks.png.a1b2c3d4.partial"]
    foreign = [out / ".notes.txt.partial", out / ".summary.json.partial", out / ".summary.json.k2j4h5g6.partial.keep",
               out / "other-project" / ".summary.json.k2j4h5g6.partial", out / "plots" / ".mine.png.abcdefgh.partial",
               out / "other-project" / "results" / ".table.md.zzzzzzzz.partial"]
    for path in own + foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    outside = tmp_path / ".table.md.abcdefgh.partial"
    outside.write_text("x")
    with RunLock(out):
        pass
    assert not any(p.exists() for p in own)
    assert all(p.exists() for p in foreign) and outside.exists()


def test_the_run_lock_is_written_through_the_file_opened_without_following_links(tmp_path, monkeypatch):
    """run.lock is opened once, refusing a link: a link that takes its place right after (a race) is not followed."""
    import os

    from eval.rundir import RunLock

    out = tmp_path / "run"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    fdopen = os.fdopen

    def fdopen_then_link(fd, *args, **kwargs):
        file = fdopen(fd, *args, **kwargs)
        (out / "run.lock").unlink()
        (out / "run.lock").symlink_to(precious)
        return file

    monkeypatch.setattr(os, "fdopen", fdopen_then_link)
    with RunLock(out):
        monkeypatch.undo()
        assert precious.read_text() == "keep me"
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize("link", ["plots", "run.lock", "plots-in-report"])
def test_links_in_the_run_directory_are_refused_and_nothing_outside_it_is_touched(tmp_path, link, smoke_run):
    """A `plots/` that links to another folder holding a file named like a temporary of ours, and a `run.lock` that
    links to a file: start-up (and `report`) refuses with one line; the targets keep their contents."""
    import shutil

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    temporary = outside / ".benchmarks.png.a1b2c3d4.partial"  # what start-up removes inside a real plots/
    temporary.write_text("keep me")
    precious = outside / "precious.txt"
    precious.write_text("keep me too")
    out = tmp_path / "run"
    if link == "plots-in-report":
        shutil.copytree(smoke_run[0], out)
        shutil.rmtree(out / "plots")
    else:
        out.mkdir()
    if link.startswith("plots"):
        (out / "plots").symlink_to(outside, target_is_directory=True)
    else:
        (out / "run.lock").symlink_to(precious)
    result = cli("report", str(out)) if link == "plots-in-report" else cli("run", "--out", str(out), "--rounds", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "is a symbolic link" in error[0] and "remove" in error[0], result.stderr
    assert temporary.read_text() == "keep me" and precious.read_text() == "keep me too"
    assert sorted(p.name for p in outside.iterdir()) == [".benchmarks.png.a1b2c3d4.partial", "precious.txt"]


def test_a_report_file_that_is_a_link_is_replaced_and_its_target_left_alone(tmp_path, smoke_run):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(smoke_run[0], out)
    target = tmp_path / "someone-elses.md"
    target.write_text("not yours")
    (out / "table.md").unlink()
    (out / "table.md").symlink_to(target)
    result = cli("run", "--out", str(out))  # the store is complete: nothing to compute, the reports rewritten
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (out / "table.md").is_symlink() and "MT-Bench" in (out / "table.md").read_text()
    assert target.read_text() == "not yours"


def test_no_key_is_stored_or_printed_even_when_the_server_echoes_it(tmp_path):
    """The judge key, a key in judge.base_url's query string, and what a server makes of them — the Authorization
    header, the key in base64, Basic credentials built on it — echoed in errors and in scored replies."""
    import base64

    from misbehaving_server import GOOD, MisbehavingJudge, completion

    query_key = "QRYSECRET-9876543210zyxw"

    def echoes(headers):
        return (f"Authorization: {headers.get('Authorization')}; key={query_key}; "
                f"Basic {base64.b64encode(f'judge:{SECRET}'.encode()).decode()}; "
                f"as sent: {base64.b64encode(SECRET.encode()).decode()} {base64.urlsafe_b64encode(('x' + query_key).encode()).decode()}")

    def reply(n, body, headers):
        if n % 3 == 0:  # every third request: an error that echoes the request's credentials
            return 500, {"error": {"message": "upstream rejected " + echoes(headers), "type": "server_error"}}
        return 200, completion(f"{echoes(headers)} Rating: [[7]]") if n % 3 == 1 else GOOD

    server = MisbehavingJudge(reply)
    out = tmp_path / "run"
    try:
        result = run_cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "1", "--tasks", "mt_bench_en",
                         "--set", "judge.mock=false", "--set", f"judge.base_url={server.url}?api-key={query_key}",
                         "--set", "judge.api_key_env=MOCK_JUDGE_KEY", "--set", "judge.max_retries=0",
                         "--set", "judge.cache=read_write", "--set", f"judge.cache_path={tmp_path / 'cache.sqlite'}", env=ENV)
    finally:
        server.stop()
    assert result.returncode == 4, result.stderr[-2000:]  # a third of the judgments failed: reported, incomplete
    assert set(server.paths) == {f"/v1/chat/completions?api-key={query_key}"}  # a query parameter, not part of the path
    assert query_key not in result.stderr and "api-key=[REDACTED]" in result.stderr  # the retry command, masked
    errors = json.loads((out / "errors.json").read_text())
    assert any("Authorization: Bearer [REDACTED]" in (e["error"] or "") for e in errors), [e["error"] for e in errors]  # echoed, masked
    assert "?api-key=[REDACTED]" in (out / "config.yaml").read_text()
    echoed = [j["raw"] for j in read_jsonl(out / "judgments.jsonl") if j["raw"] and "Authorization" in j["raw"]]
    assert echoed and all(r.startswith("Authorization: Bearer [REDACTED]; key=[REDACTED]; Basic ") and r.count("[REDACTED]") == 5
                          for r in echoed), echoed  # scored replies that echoed them are stored, masked
    report = cli("report", str(out), env=ENV)  # the reports rebuilt from the store
    assert report.returncode == 0, report.stderr[-2000:]
    files = [p for p in [*out.rglob("*"), *tmp_path.glob("cache.sqlite*")] if p.is_file()]
    assert {"config.yaml", "manifest.json", "run.sqlite", "judgments.jsonl", "errors.json", "report.html"} <= {p.name for p in files}
    forms = [SECRET, query_key, base64.b64encode(f"judge:{SECRET}".encode()).decode()[8:-4], base64.b64encode(SECRET.encode()).decode()[:-4],
             base64.urlsafe_b64encode(("x" + query_key).encode()).decode()[4:-4]]
    for secret in forms:
        assert secret not in result.stdout + result.stderr + report.stdout + report.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)


def test_judge_cache_on_a_full_disk_is_a_clear_error_and_the_store_keeps_the_judgment(tmp_path, monkeypatch):
    import sqlite3

    from eval.errors import UserError
    from eval.judge.cache import JudgeCache
    from eval.records import Judgment

    cache = JudgeCache("read_write", str(tmp_path / "cache.sqlite"), {"provider": "test"})

    class FullDisk:
        def execute(self, *args):
            raise sqlite3.OperationalError("database or disk is full")

        def close(self):
            pass

    monkeypatch.setattr(cache, "_connect", FullDisk)  # the writer thread's connection
    judgment = Judgment(key="k", generation_key="g", round=1, task="t", item_id="1", turn=1, judge_model="m",
                        prompt_name="p", prompt_hash="h", params={}, messages=[], raw="[[5]]", scores={"score": 5.0},
                        status="ok", attempts=1, parse_rules="rules")
    with pytest.raises(UserError, match=r"judge cache .*cache.sqlite: cannot write \(database or disk is full\); free disk "
                                        r"space .* judge.cache: off — everything stored in the run so far is kept"):
        cache.put(judgment)
        cache.close()  # the writes trail on a writer thread: its failure surfaces at the next put or at close


def test_a_misbehaving_judge_slows_a_run_but_never_crashes_it_or_poisons_the_cache(tmp_path):
    """Every malformed shape, no content and refusals, then a healthy server: the run ends, partial and labelled; only
    real verdicts reach the shared cache; the next run completes it."""
    import sqlite3

    from misbehaving_server import GOOD, MisbehavingJudge, completion

    bad = [[1, 2, 3], {**GOOD, "choices": "oops"}, {**GOOD, "choices": [{"message": "str"}]}, completion(7),
           {**GOOD, "usage": "n/a"}, {**GOOD, "choices": []}, {**GOOD, "choices": [None]}, completion(None),
           completion(None, refusal="I can't judge this.")]
    healthy = {"now": False}

    def reply(n, body, headers):
        return (200, GOOD) if healthy["now"] or n > len(bad) + 1 else (200, bad[n % len(bad)])  # n = 1: the preflight

    server = MisbehavingJudge(reply)
    cache = tmp_path / "cache.sqlite"
    args = ["run", "configs/smoke.yaml", "--out", str(tmp_path / "run"), "--rounds", "2", "--tasks", "mt_bench_en",
            "--set", "judge.mock=false", "--set", f"judge.base_url={server.url}", "--set", "judge.api_key_env=MOCK_JUDGE_KEY",
            "--set", "judge.max_retries=0", "--set", "judge.cache=read_write", "--set", f"judge.cache_path={cache}",
            "--set", "judge.concurrency=2", "--set", "task_options.mt_bench_en.judge.parse_retries=1"]
    try:
        first = cli(*args, env=ENV)
        assert first.returncode == 4 and "Traceback" not in first.stderr, first.stderr[-3000:]  # incomplete
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["complete"] is False and summary["tasks"]["mt_bench_en"]["counts"]["api_error"] > 0
        shared = [json.loads(r[0])["judgment"] for r in sqlite3.connect(cache).execute("SELECT record FROM entries")]
        assert shared and all(j["status"] == "ok" and j["raw"] for j in shared)
        healthy["now"] = True
        second = cli(*args, env=ENV)
        assert second.returncode == 0, second.stderr[-3000:]
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"] is True
    finally:
        server.stop()
