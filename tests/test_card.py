"""`card`: every row of the model card as its own `run`, side by side on the GPUs (simulated here: `--gpus 0,1` on a
machine without CUDA, the smoke model runs on the CPU wherever it is pinned), one judge budget for all rows, a Slurm
job array of the same `run` commands, `--collect`, `--dry-run`; and the card's table, which is `compare`'s."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, assert_valid_result, cli, popen_cli, read_jsonl, stored, wait_until

from eval.results import CardSummary, MeasuredLine

SWITCHES = ["--limit", "1", "--rounds", "2", "--tasks", "mt_bench_en,answer_carefully"]


def smoke_rows(folder: Path) -> list[Path]:
    """Three rows derived from the smoke config: two that reproduce rows of the card (8B medium, gpt-oss-20b low),
    one without; `device: auto`, so that each needs a GPU and is pinned to one."""
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    paths = []
    for name, published in (("row-a", {"model": "llm-jp-4-8b-thinking", "reasoning_effort": "medium"}),
                            ("row-b", {"model": "gpt-oss-20b", "reasoning_effort": "low"}), ("row-c", None)):
        config = {**smoke, "name": name, "model": {**smoke["model"], "device": "auto"}}
        if published:
            config["published"] = published
        paths.append(folder / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(config))
    return paths


def schedule(card_dir: Path) -> list[dict]:
    path = card_dir / "logs" / "schedule.jsonl"
    return read_jsonl(path) if path.exists() else []


def array_tasks(script: Path) -> dict[int, list[str]]:
    """The command of each array task of a job-array script (its `case` arms)."""
    arms = re.findall(r"^  (\d+)\) exec (.+) ;;$", script.read_text(), re.M)
    return {int(i): shlex.split(command) for i, command in arms}


def test_card_runs_rows_side_by_side_survives_kill_9_and_gives_the_table_of_the_rows_run_one_by_one(tmp_path):
    import psutil

    configs = smoke_rows(tmp_path)
    arguments = [str(p) for p in configs]

    # The rows one by one: the Slurm array's tasks, run as they are written (each the row's plain `run` command).
    by_hand = tmp_path / "by-hand"
    written = cli("card", *arguments, *SWITCHES, "--out", str(by_hand), "--slurm", "--sbatch-option=--partition=gpu")
    assert written.returncode == 0, written.stderr[-3000:]
    script = by_hand / "slurm" / "card-gpu1.sbatch"
    assert sorted(p.name for p in (by_hand / "slurm").iterdir()) == ["card-gpu1.sbatch", "submit.sh"]
    text = script.read_text()
    assert "#SBATCH --array=0-2\n" in text and "#SBATCH --gres=gpu:1\n" in text and "#SBATCH --partition=gpu\n" in text
    tasks = array_tasks(script)
    # In the card's order (gpt-oss-20b low's row comes before 8B medium's; a row without one last), each task exactly
    # `run CONFIG --out DIR/<row>` with the card's switches and its share of the judge's concurrency (the smoke
    # config's 8 ÷ 3 tasks at once): nothing a user could not have typed.
    assert tasks == {i: [sys.executable, "-m", "eval", "run", str(configs[k].resolve()), "--out",
                         str((by_hand / name).resolve()), "--set", "judge.concurrency=2", *SWITCHES]
                     for i, (k, name) in enumerate([(1, "row-b"), (0, "row-a"), (2, "row-c")])}
    # The script itself runs the first task; the others' commands, equal to what it would exec, run in this process.
    done = subprocess.run(["bash", str(script)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "0",
                                                      "PYTHONPATH": f"{ROOT / 'tests' / 'netblock'}{os.pathsep}{ROOT}"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for i in sorted(tasks)[1:]:
        assert tasks[i][1:3] == ["-m", "eval"]
        done_here = cli(*tasks[i][3:])
        assert done_here.returncode == 0, done_here.stderr[-3000:]
    compared = cli("compare", *(str(by_hand / name) for name in ("row-a", "row-b", "row-c")), "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr[-3000:]
    expected = (tmp_path / "cmp" / "compare.md").read_text()
    lines = expected.splitlines()
    order = [line.split(" | ")[1] if line.startswith("| **") else line.split(" | ")[0].lstrip("| ") for line in lines[2:15]]
    assert order[4:7] == ["row-b", "gpt-oss-20b (reasoning_effort = low)", "gpt-oss-20b (reasoning_effort = medium)"]
    assert order[8:10] == ["row-a", "llm-jp-4-8b-thinking (reasoning_effort = medium)"] and order[12] == "row-c"
    assert "- row-b: Published row gpt-oss-20b (reasoning_effort = low): not compared, this run used the sample data." in lines

    # card --collect over the folders where the rows ran: the same table.
    collected = cli("card", "--collect", str(by_hand))
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert (by_hand / "table.md").read_text() == expected

    # The card itself: two rows at once on two (simulated) devices; killed with -9, together with one of its rows.
    card_dir = tmp_path / "card"
    command = ["card", *arguments, *SWITCHES, "--gpus", "0,1", "--out", str(card_dir)]
    card = popen_cli(*command, log=tmp_path / "card-1.log")
    assert wait_until(lambda: len(schedule(card_dir)) >= 2 and any(stored(card_dir / r, "generations") for r in ("row-a", "row-b")),
                      timeout=240), (tmp_path / "card-1.log").read_text()[-3000:]
    starts = [e for e in schedule(card_dir) if e["event"] == "start"]
    assert [(e["row"], e["devices"]) for e in starts] == [("row-b", ["0"]), ("row-a", ["1"])]
    rows = [psutil.Process(e["pid"]) for e in starts]
    card.send_signal(signal.SIGKILL)
    rows[0].send_signal(signal.SIGKILL)
    card.wait()
    # The other row hears that the card died (its parent-death signal) and stops on its own: no row runs on.
    assert wait_until(lambda: not rows[1].is_running() or rows[1].status() == psutil.STATUS_ZOMBIE, timeout=60)
    assert "terminated (SIGTERM)" in (card_dir / "logs" / "row-a.log").read_text()

    resumed = subprocess.run([sys.executable, "-m", "eval", *command], cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'netblock'}{os.pathsep}{ROOT}"})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (card_dir / "table.md").read_text() == expected
    events = schedule(card_dir)[2:]  # the resumed card's
    spans = {e["row"]: [e["t"], None, e["devices"]] for e in events if e["event"] == "start"}
    for e in events:
        if e["event"] == "end":
            spans[e["row"]][1] = e["t"]
            assert e["code"] == 0
    (a0, a1, a_dev), (b0, b1, b_dev), (c0, _, _) = spans["row-b"], spans["row-a"], spans["row-c"]
    assert a0 < b1 and b0 < a1 and {a_dev[0], b_dev[0]} == {"0", "1"}  # two rows at once, one per device
    assert c0 >= min(a1, b1)  # the third waited for a device
    for name in ("row-a", "row-b", "row-c"):  # every row's judge shared the card's budget file
        config = yaml.safe_load((card_dir / name / "config.yaml").read_text())
        assert config["judge"]["shared_budget"] == str((card_dir / "judge-budget.sqlite").resolve())
    summary = assert_valid_result(card_dir / "summary.json", CardSummary)  # docs/card.schema.json, read back as written
    assert summary.schema_version == "llmjp-eval/card/v1" and summary.failed == {}
    measured = [r for r in summary.rows if isinstance(r, MeasuredLine)]
    assert [(r.run, r.status) for r in measured] == [("row-b", 0), ("row-a", 0), ("row-c", 0)]
    assert [r.summary.run for r in summary.runs] == ["row-b", "row-a", "row-c"] and len(summary.rows) == 10 + 3
    csv = (card_dir / "table.csv").read_text().splitlines()
    assert csv[0].endswith(",run,status") and sum(line.startswith("measured,") for line in csv) == 3
    assert (card_dir / "report.html").stat().st_size > 10_000


def test_card_dry_run_sums_the_rows_estimates_with_gpu_time_at_the_given_rate(tmp_path):
    configs = smoke_rows(tmp_path)[:2]
    rate_file = tmp_path / "throughput.log"
    rate_file.write_text("engine paged (batch 16): …\n" + json.dumps({"backend_tok_s": 48.0, "speedup": 2.0}) + "\n")
    result = cli("card", *(str(p) for p in configs), "--limit", "2", "--out", str(tmp_path / "card"), "--dry-run",
                 "--tok-s", "96", "--tok-s", f"row-a={rate_file}", "--answer-tokens", "64")
    assert result.returncode == 0, result.stderr[-3000:]
    single = cli("run", str(configs[0]), "--limit", "2", "--out", str(tmp_path / "single"), "--dry-run")
    total = next(line.split() for line in single.stdout.splitlines() if line.strip().startswith("total"))
    generations, judge_requests, prompt_tokens, completion_tokens = map(int, total[1:5])
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[-4:]}
    # row, backend, GPUs, answers, tok/answer, gen tokens, tok/s, GPU time, judge requests, judge tokens, judge cost
    def clock(seconds: float) -> str:
        return f"0:{round(seconds) // 60:02d}:{round(seconds) % 60:02d}"

    for name, rate in (("row-a", 48), ("row-b", 96)):  # row-a's rate from gen_throughput's output, row-b's the default
        row = rows[name]
        assert row[1:7] == ["hf", "1", f"{generations:,}", "64", f"{generations * 64:,}", str(rate)]
        assert row[7] == clock(generations * 64 / rate)
        assert row[8:10] == [f"{judge_requests:,}", f"{prompt_tokens + completion_tokens:,}"]
    assert rows["total"][1:5] == ["2", f"{2 * generations:,}", f"{2 * generations * 64:,}",
                                  clock(generations * 64 / 48 + generations * 64 / 96)]
    assert not (tmp_path / "card").exists()  # nothing was run or written


def test_the_bundled_card_rows_in_the_card_order_with_the_gpus_each_needs():
    from eval.card import card_rows, gpus_needed
    from eval.config import build_config, load_config
    from eval.errors import UserError
    from eval.published import card_row
    from eval.summary import load_published

    rows = card_rows([], [])
    table = load_published()
    assert [(card_row(r.cfg).row["model"], card_row(r.cfg).row["reasoning_effort"]) for r in rows] == \
        list(zip(table["model"], table["reasoning_effort"], strict=True))
    assert {r.config: r.gpus for r in rows} == {
        "gpt-4o": 0, "gpt-5.4-low": 0, "gpt-5.4-medium": 0, "gpt-5.4-high": 0, "gpt-oss-20b-low": 1,
        "gpt-oss-20b-medium": 1, "8b-low": 1, "8b-medium": 1, "32b-a3b-low": 1, "32b-a3b-medium": 1}
    data = yaml.safe_load((ROOT / "configs" / "8b-medium.yaml").read_text())
    data["model"] = {"backend": "vllm", "path": "llm-jp/llm-jp-4-8b-thinking", "tensor_parallel_size": 2, "data_parallel_size": 2}
    assert gpus_needed(build_config(data, "vllm.yaml"), "vllm.yaml") == 4  # tensor parallel × data parallel
    assert gpus_needed(load_config("8b-medium", ["model.device=cpu"]), "8b-medium") == 0
    with pytest.raises(UserError, match="several configs are named llm-jp-4-8b-thinking-medium"):
        card_rows(["8b-medium", "8b-medium"], [])
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES"):
        card_rows(["8b-medium"], ["model.device=cuda:1"])


def replay_rows(folder: Path, judge: dict, names=("row-a", "row-b")) -> list[Path]:
    """Rows that judge answers of a file (no model, no GPU): the sample MT-Bench (EN) answered by a FastChat file."""
    from eval.tasks import load_spec, load_task

    items = load_task(load_spec("mt_bench_en"), "sample", {}).items
    answers = folder / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": item.item_id, "choices": [{"turns": [f"Answer {t} to {item.item_id}."
                                           for t in range(len(item.turns))]}]}) + "\n" for item in items))
    paths = []
    for name in names:
        config = {"name": name, "model": {"backend": "replay", "path": str(answers)}, "variant": "sample", "rounds": 1,
                  "tasks": ["mt_bench_en"], "judge": {"model": "mock-judge", "cache": "off", **judge}}
        paths.append(folder / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(config))
    return paths


# `python -m eval` with the rate limiter's minute scaled down to the first argument's seconds (as the limiter's own
# tests scale it), in a process of its own.
SCALED_MINUTE = ("import sys; from eval.judge import limits; limits.MINUTE_S, limits.MARGIN_S = float(sys.argv.pop(1)), "
                 "0.25; from eval.cli import main; sys.exit(main(sys.argv[1:]))")


def test_the_judge_calls_of_all_rows_together_never_exceed_requests_per_minute(tmp_path, mock_server, monkeypatch):
    """Two rows in two processes, one judge budget file, `requests_per_minute: 4` with the minute scaled to 4 s:
    at the server, no window of a (scaled) minute holds more than 4 of their requests together."""
    from eval.judge import mock_server as mock

    arrivals: list[float] = []
    answer = mock.answer_chat

    def counted(state, body, fault):
        arrivals.append(time.monotonic())
        return answer(state, body, fault)

    monkeypatch.setattr(mock, "answer_chat", counted)
    server = mock_server()
    judge = {"base_url": server.url, "api_key_env": "MOCK_JUDGE_KEY", "requests_per_minute": 4, "concurrency": 4,
             "shared_budget": str(tmp_path / "budget.sqlite")}
    env = {**os.environ, "MOCK_JUDGE_KEY": "k", "PYTHONPATH": f"{ROOT / 'tests' / 'netblock'}{os.pathsep}{ROOT}"}
    rows = [subprocess.Popen([sys.executable, "-c", SCALED_MINUTE, "4", "run", str(config), "--limit", "2", "--out",
                              str(tmp_path / config.stem)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for config in replay_rows(tmp_path, judge)]
    for row in rows:
        output, _ = row.communicate(timeout=300)
        assert row.returncode == 0, output[-3000:]
    assert len(arrivals) == 2 * (1 + 2 * 2)  # each row: the preflight and two items of two turns
    busiest = max(sum(start <= t < start + 4.0 for t in arrivals) for start in arrivals)
    assert busiest <= 4, sorted(t - arrivals[0] for t in arrivals)


def test_judgments_in_flight_and_the_cost_cap_are_shared_and_a_killed_runs_lease_is_freed(tmp_path):
    from eval.config import JudgeConfig, Price
    from eval.judge.ledger import Ledger
    from eval.judge.shared_budget import SharedBudget
    from eval.records import Usage

    cfg = JudgeConfig(model="m", concurrency=1, budget_usd=1.0, prices={"m": Price(input=1e6, output=0)},
                      shared_budget=str(tmp_path / "budget.sqlite"))
    path = Path(cfg.shared_budget)
    # A run killed while a judgment was in flight leaves its lease behind.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import asyncio, sys, time; from pathlib import Path; from eval.config import JudgeConfig; "
        "from eval.judge.shared_budget import SharedBudget\n"
        "async def hold():\n"
        f"    async with SharedBudget(Path({str(path)!r}), JudgeConfig(model='m', concurrency=1), 'killed').in_flight():\n"
        "        print('held', flush=True); time.sleep(600)\n"
        "asyncio.run(hold())")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    first, second = SharedBudget(path, cfg, "a"), SharedBudget(path, cfg, "b")

    async def leases() -> list[str]:
        order = []

        async def judgment(budget, name, seconds):
            async with budget.in_flight():
                order.append(f"{name} in")
                await asyncio.sleep(seconds)
                order.append(f"{name} out")

        async def kill_holder():
            await asyncio.sleep(0.3)
            order.append("killed")
            holder.kill()

        await asyncio.gather(judgment(first, "a", 0.3), judgment(second, "b", 0.0), kill_holder())
        return order

    order = asyncio.run(leases())
    holder.wait()
    assert order[0] == "killed"  # nobody got in while the killed run's lease was held by a live process
    assert order[1:] in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])  # one at a time

    a, b = Ledger(cfg, shared=first), Ledger(cfg, shared=second)
    a.restore(0.25)  # run a had spent $0.25 before this invocation (its store)
    b.restore(0.0)
    assert not b.exhausted()
    a.charge(Usage(prompt_tokens=1, completion_tokens=0))  # $1 more in run a: the account's cap is reached for b too
    assert a.spent_usd == 1.25 and b.spent_usd == 0.0 and b.total_spent() == 1.25 and b.exhausted()
    first.close()
    second.close()


def test_a_row_whose_run_fails_is_named_beside_the_others_and_the_card_ends_incomplete(tmp_path):
    good, broken = replay_rows(tmp_path, {"mock": True})
    config = yaml.safe_load(broken.read_text())
    config["model"]["path"] = str(tmp_path / "no-such-answers.jsonl")
    broken.write_text(yaml.safe_dump(config))
    result = cli("card", str(good), str(broken), "--limit", "1", "--out", str(tmp_path / "card"))
    assert result.returncode == 4, result.stderr[-3000:]
    said = "failed (exit 2): error: model.path: replay file " + str(tmp_path / "no-such-answers.jsonl") + " not found"
    assert result.stderr.splitlines()[-2:] == [
        f"INCOMPLETE: row-b {said}.",
        "Run the same command again to complete them: python -m eval card " + shlex.join(
            [str(good), str(broken), "--limit", "1", "--out", str(tmp_path / "card")])]
    table = (tmp_path / "card" / "table.md").read_text()
    measured = {line.split(" | ")[1]: line.split(" | ")[2] for line in table.splitlines() if line.startswith("| **")}
    assert measured == {"row-a": "complete"}  # row-b stopped before it planned anything: no store, no measured row
    assert table.endswith(f"- row-b: {said}\n")
    summary = assert_valid_result(tmp_path / "card" / "summary.json", CardSummary)
    assert summary.failed == {"row-b": said} and [r.summary.run for r in summary.runs] == ["row-a"]


def test_ctrl_c_stops_every_row_which_keeps_what_it_stored(tmp_path):
    import psutil

    # Two rows beside each other; their judges share one budget of two judgments in flight, 2 s each.
    rows = replay_rows(tmp_path, {"mock": True, "concurrency": 2, "mock_settings": {"latency_s": 2.0}})
    card_dir = tmp_path / "card"
    card = popen_cli("card", *(str(p) for p in rows), "--out", str(card_dir), log=tmp_path / "card.log")

    def judged() -> list[int]:
        return [len(stored(card_dir / p.stem, "judgments")) for p in rows]

    assert wait_until(lambda: len(schedule(card_dir)) == 2 and sum(judged()) > 0, timeout=120), \
        (tmp_path / "card.log").read_text()[-3000:]
    assert all(e["event"] == "start" for e in schedule(card_dir))  # both rows still running
    processes = [psutil.Process(e["pid"]) for e in schedule(card_dir)]
    before = judged()
    card.send_signal(signal.SIGINT)
    assert card.wait(timeout=120) == 130
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert "card: asking 2 running rows to stop" in (tmp_path / "card.log").read_text()
    for path in rows:
        log = (card_dir / "logs" / f"{path.stem}.log").read_text()
        assert "terminated (SIGTERM): stopping; everything stored so far is kept" in log
    after = judged()
    assert all(a >= b for a, b in zip(after, before, strict=True)) and sum(after) < 2 * 8  # kept, and not finished
    assert [e["code"] for e in schedule(card_dir) if e["event"] == "end"] == [143, 143]


def test_a_card_ends_as_its_rows_do_3_winning_over_4_and_both_said():
    """`card_outcome` reads the card's summary: a row whose numbers do not measure its model makes the card 3 beside
    incomplete and failed rows, and a row that is both (3 and incomplete) is named in both lines, as `run` says both."""
    from eval.outcome import card_outcome
    from eval.results import ComparedRun, read_summary

    incomplete = read_summary(Path(__file__).parent / "data" / "summary-v2-main.json")
    assert not incomplete.complete

    def card(*rows: tuple[str, int, bool], failed: dict[str, str] | None = None) -> CardSummary:
        summaries = {name: incomplete.model_copy(update={"run": name, "complete": complete}) for name, _, complete in rows}
        return CardSummary(rows=[MeasuredLine(run=name, dir=f"/card/{name}", label=name, status=status, status_lines=[])
                                 for name, status, _ in rows],
                           runs=[ComparedRun(dir=f"/card/{name}", summary=summaries[name]) for name, _, _ in rows],
                           differences=[], failed=failed or {})

    ended = card_outcome(card(("x", 3, False), ("y", 0, True), ("z", 4, False),
                              failed={"w": "failed (exit 2): error: no key"}), "python -m eval card")
    assert ended.code == 3
    assert ended.lines[0].startswith("NOT MEASURED: the numbers of x do not measure the model")
    assert ended.lines[1:] == ["INCOMPLETE: x, z incomplete (table.md says what is missing); w failed (exit 2): error: no key.",
                               "Run the same command again to complete them: python -m eval card"]
    assert card_outcome(card(("x", 3, True), ("y", 0, True))).lines == [card_outcome(card(("x", 3, True))).lines[0]]
    assert card_outcome(card(("y", 0, True), ("z", 4, False))).code == 4
    assert card_outcome(card(("y", 0, True), failed={"w": "stopped (SIGKILL)"})).code == 4
    ended = card_outcome(card(("y", 0, True)))
    assert (ended.code, ended.lines) == (0, [])
