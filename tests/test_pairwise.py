"""Pairwise judging (`python -m eval pairwise RUN_A RUN_B`): two smoke runs whose answers differ, judged by mock
judges that pick by a known rule, give FastChat's figures computed by hand from the stored answers; the kill -9 of a
pairwise run resumes without asking any call twice; MT-Bench's prompts are FastChat's construction byte for byte;
the summary meets its schema; bad sources are refused in one line."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from helpers import SECRET, body_hash, cli, counters, read_jsonl, run_cli, stored

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 2
SOURCE_RUN = ("--rounds", str(ROUNDS), "--limit", "2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two smoke runs of the same questions whose answers differ (another seed for B)."""
    folder = tmp_path_factory.mktemp("pairwise")
    a, b = folder / "A", folder / "B"
    assert cli("run", "configs/smoke.yaml", "--out", str(a), *SOURCE_RUN).returncode == 0
    made = cli("run", "configs/smoke.yaml", "--out", str(b), *SOURCE_RUN, "--set", "seed=99")
    assert made.returncode == 0, made.stderr[-2000:]
    return a, b


def pairwise(a: Path, b: Path, out: Path, rule: str, *extra: str):
    return cli("pairwise", str(a), str(b), "--out", str(out), "--set", f"judge.mock_settings.pairwise_rule={rule}", *extra)


def expected_by_length(a: Path, b: Path) -> dict[str, dict[str, int]]:
    """Per task, FastChat's counts when the judge prefers the longer answer of the turn judged in both orders (the
    judge sees a missing answer as the text None), from the source runs' own generations."""
    answers = {}
    for side, run in (("a", a), ("b", b)):
        for g in read_jsonl(run / "generations.jsonl"):
            answers[(side, g["task"], g["item_id"], g["turn"], g["round"])] = str(g["final"])
    counts: dict[str, dict[str, int]] = {}
    for (side, task, item, turn, round_), mine in answers.items():
        if side != "a":
            continue
        theirs = answers[("b", task, item, turn, round_)]
        outcome = "win" if len(mine) > len(theirs) else "loss" if len(mine) < len(theirs) else "tie"
        counts.setdefault(task, {"win": 0, "loss": 0, "tie": 0})[outcome] += 1
    return counts


def test_a_judge_that_prefers_the_longer_answer_gives_the_win_rate_of_the_stored_answers(runs, tmp_path):
    from eval.pairwise_report import read_pairwise

    a, b = runs
    out = tmp_path / "longer"
    result = pairwise(a, b, out, "longer")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = read_pairwise(out / "summary.json")
    expected = expected_by_length(a, b)
    assert set(summary.tasks) == set(expected) == {"mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"}
    wins = 0
    for task, entry in summary.tasks.items():
        o, e = entry.outcomes, expected[task]
        pairs = sum(e.values())
        assert (o.win, o.loss, o.tie, o.inconsistent, o.errors, o.pairs) == (e["win"], e["loss"], e["tie"], 0, 0, pairs)
        assert o.win_rate == pytest.approx(e["win"] / pairs)
        assert o.adjusted_win_rate == pytest.approx((e["win"] + 0.5 * e["tie"]) / pairs)
        assert o.consistency == 1.0 and entry.metrics["consistency"].mean == 1.0
        assert entry.metrics["score"].mean == pytest.approx(  # the mean of the round means (equal pairs per round)
            sum(r.adjusted_win_rate for r in entry.per_round.values()) / ROUNDS)
        assert sorted(entry.per_round) == [1, 2] and sum(r.pairs for r in entry.per_round.values()) == pairs
        lo, hi = entry.metrics["score"].ci95
        assert lo is None or lo <= entry.metrics["score"].mean <= hi
        wins += o.win
    assert wins  # the answers differ: the rule is tested, not a constant

    # The other way round, every win is a loss: FastChat's figures mirrored
    reverse = pairwise(b, a, tmp_path / "reverse", "longer")
    assert reverse.returncode == 0, reverse.stderr[-2000:]
    for task, entry in read_pairwise(tmp_path / "reverse" / "summary.json").tasks.items():
        mine = summary.tasks[task].outcomes
        o = entry.outcomes
        assert (o.win, o.loss, o.tie, o.pairs) == (mine.loss, mine.win, mine.tie, mine.pairs)
        assert o.adjusted_win_rate == pytest.approx(1 - mine.adjusted_win_rate)
    assert summary.a.run == str(a) and summary.b.run == str(b) and summary.complete

    # The folder stands alone: both answer sets it judged, the sources in its config, the reports
    config = json.loads(json.dumps(__import__("yaml").safe_load((out / "config.yaml").read_text())))
    assert config["pairwise"]["run_a"] == str(a) and config["pairwise"]["run_b"] == str(b)
    assert len(read_jsonl(out / "answers_a.jsonl")) == len(read_jsonl(out / "answers_b.jsonl")) == \
        sum(e.pairs for e in (t.outcomes for t in summary.tasks.values()))
    table = (out / "table.md").read_text()
    assert "| MT-Bench (EN) | all |" in table and "| MT-Bench (EN) | round 2 |" in table and "category writing" in table
    assert (out / "plots" / "pairwise.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert page.count("<details>") == len(read_jsonl(out / "answers_a.jsonl")) and "A first" in page and "B first" in page
    assert "<script" not in page

    # Its summary meets the committed schema and reads back to the same bytes
    schema = json.loads((ROOT / "docs" / "pairwise.schema.json").read_text())
    data = json.loads((out / "summary.json").read_text())
    jsonschema.validate(data, schema)
    assert data["schema"] == "llmjp-eval/pairwise/v1"
    assert summary.dump() == data

    again = pairwise(a, b, out, "longer")
    assert again.returncode == 0 and "nothing to compute" in again.stdout


def test_a_judge_that_always_prefers_position_a_is_inconsistent_on_every_pair(runs, tmp_path):
    from eval.pairwise_report import read_pairwise

    out = tmp_path / "first"
    result = pairwise(*runs, out, "position_a")
    assert result.returncode == 0, result.stderr[-2000:]
    for entry in read_pairwise(out / "summary.json").tasks.values():
        o = entry.outcomes
        assert o.pairs > 0 and o.inconsistent == o.pairs and (o.win, o.loss, o.tie) == (0, 0, 0)
        assert (o.consistency, o.win_rate, o.adjusted_win_rate) == (0.0, 0.0, 0.5)
        assert entry.metrics["consistency"].mean == 0.0 and entry.metrics["score"].mean == 0.5
    judgments = read_jsonl(out / "judgments.jsonl")
    assert {j["call"] for j in judgments} == {"ab", "ba"} and {j["scores"]["position_a"] for j in judgments} == {1.0}

    # Commands that read runs name a comparison for what it is and point at its own reports
    said = f"{out}/summary.json: a pairwise comparison (llmjp-eval/pairwise/v1), not a run's summary; its table.md " \
           f"and report.html are in {out}"
    listed = cli("runs", str(tmp_path))
    assert listed.returncode == 0 and said.replace(f"{out}/", f"{out}: ") in listed.stdout
    viewed = cli("view", str(out))
    assert viewed.returncode == 2 and viewed.stderr.strip() == f"error: {said}"


def test_a_killed_pairwise_run_resumes_without_asking_any_call_twice(runs, tmp_path, mock_server):
    from eval.config import MockSettings

    server = mock_server(api_key=SECRET, settings=MockSettings(pairwise_rule="longer"))
    a, b = runs
    out = tmp_path / "killed"
    args = ["pairwise", str(a), str(b), "--out", str(out), "--set", "judge.mock=false", "--set",
            f"judge.base_url={server.url}", "--set", "judge.api_key_env=MOCK_JUDGE_KEY", "--set", "judge.concurrency=1",
            "--set", "judge.cache=off"]
    env = {"MOCK_JUDGE_KEY": SECRET}
    killed = run_cli(*args, env={**env, "LLMJP_EVAL_CRASH_AT": "judgment_stored:5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(stored(out, "judgments")) == 5
    resumed = cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    judgments = read_jsonl(out / "judgments.jsonl")
    bodies = server.state.snapshot()["bodies"]
    # 0 duplicate judge calls across the kill: each body asked as often as slots hold it (greedy answers repeat
    # across rounds, and a round is part of a judgment's key, not of its body), plus one preflight per invocation
    asked = Counter(body_hash(j) for j in judgments)
    assert {h: bodies[h] for h in asked} == dict(asked)
    assert counters(server)["requests"] == len(judgments) + 2
    pairs = len(read_jsonl(out / "answers_a.jsonl"))
    assert len(judgments) == 2 * pairs and all(j["status"] == "ok" for j in judgments)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and sum(t["outcomes"]["pairs"] for t in summary["tasks"].values()) == pairs
    assert str(SECRET) not in "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def test_bad_sources_are_refused_in_one_line(runs, tmp_path):
    a, b = runs
    missing = cli("pairwise", str(a), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "run B" in missing.stderr
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert cli("pairwise", str(not_a_run), str(b), "--out", str(tmp_path / "y")).returncode == 2
    assert "--out" in cli("pairwise", str(a), str(b), "--out", str(a)).stderr

    # B holds other questions only: nothing in common, and the counts say what each lacks
    other = tmp_path / "other"
    shutil.copytree(b, other)
    db = sqlite3.connect(other / "run.sqlite")
    db.execute("UPDATE plan SET item_id = item_id || '-x'")
    db.commit()
    db.close()
    refused = cli("pairwise", str(a), str(other), "--out", str(tmp_path / "z"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "no question in common" in refused.stderr and "run A lacks 2, run B lacks 2" in refused.stderr

    judge = cli("pairwise", str(a), str(b), "--out", str(tmp_path / "w"), "--set", "generation.max_new_tokens=3")
    assert judge.returncode == 2 and "pairwise changes only the judge" in judge.stderr


# ---------------------------------------------------------------- FastChat's prompts, byte for byte


def test_mt_bench_pairwise_prompts_are_fastchats_construction(upstream, mirrors):
    """FastChat's run_judge_pair: the template's system prompt, then its prompt_template.format(question…, answer_a…,
    answer_b…, ref_answer…) — turn 1 and turn 2, with and without references (NEED_REF_CATS), in both orders."""
    from eval.config import build_config
    from eval.judge.requests import build_requests
    from eval.pairwise import compared_with
    from eval.records import Generation, Slot
    from eval.tasks import load_spec, load_task

    fastchat = {d["name"]: d for d in map(json.loads, (upstream / "fastchat/judge_prompts.jsonl").read_text().splitlines())}
    options = {"metric": "pairwise"}
    spec = load_spec("mt_bench_en", options)
    task = load_task(spec, "full", mirrors)

    def gen(slot: Slot, text: str) -> Generation:
        return Generation(key=f"k{slot}", round=slot.round, seed=0, task=slot.task, item_id=slot.item_id, turn=slot.turn,
                          messages=[], messages_hash="", prompt_hash=None, raw=text, final=text, reasoning="",
                          status="ok", finish_reason="stop", tokens_in=1, tokens_out=1, seconds=0.0)

    slots = {item.item_id: [Slot(1, "mt_bench_en", item.item_id, t) for t in (1, 2)] for item in task.items}
    theirs = {s: gen(s, f"B's answer {s.turn} to {s.item_id}") for listed in slots.values() for s in listed}
    task = compared_with(task, theirs)
    cfg = build_config({"name": "t", "model": {"backend": "replay", "path": "x"}, "tasks": ["mt_bench_en"],
                        "judge": {"model": "gpt-4"}, "task_options": {"mt_bench_en": options}}, "test")
    checked = set()
    for category, needs_ref in (("writing", False), ("math", True)):
        item = next(i for i in task.items if i.category == category)
        ours = [gen(s, f"A's answer {s.turn}") for s in slots[item.item_id]]
        ref = {"ref_answer_1": item.references[0], "ref_answer_2": item.references[1]} if needs_ref else {}
        for turn in (1, 2):
            name = ("pair-math-v1" if needs_ref else "pair-v2") + ("-multi-turn" if turn == 2 else "")
            template = fastchat[name]
            requests = build_requests(task, item, turn, ours[:turn], cfg)
            assert [r.call for r in requests] == ["ab", "ba"] and {r.prompt_name for r in requests} == {name}
            for request, (first, second) in zip(requests, (("A's", "B's"), ("B's", "A's")), strict=True):
                answer = {"A's": [f"A's answer {t}" for t in (1, 2)],
                          "B's": [f"B's answer {t} to {item.item_id}" for t in (1, 2)]}
                if turn == 1:
                    user = template["prompt_template"].format(question=item.turns[0], answer_a=answer[first][0],
                                                              answer_b=answer[second][0], **({"ref_answer_1": ref["ref_answer_1"]} if ref else {}))
                else:
                    user = template["prompt_template"].format(
                        question_1=item.turns[0], question_2=item.turns[1], answer_a_1=answer[first][0],
                        answer_b_1=answer[second][0], answer_a_2=answer[first][1], answer_b_2=answer[second][1], **ref)
                assert request.messages == [{"role": "system", "content": template["system_prompt"]},
                                            {"role": "user", "content": user}]
            checked.add(name)
            # FastChat's verdicts: [[A]] first, then [[B]], then [[C]]; nothing else is a verdict; never re-asked
            parser = requests[0].parser
            assert parser("… [[B]] … [[A]]") == {"position_a": 1.0} and parser("[[C]]") == {"position_a": 0.5}
            assert parser("[[B]]") == {"position_a": 0.0} and isinstance(parser("[A]"), str)
            assert requests[0].parse_retries == 0
    assert checked == {"pair-v2", "pair-v2-multi-turn", "pair-math-v1", "pair-math-v1-multi-turn"}


def test_the_pair_outcome_follows_fastchats_rules():
    from eval.kinds import CallResult
    from eval.kinds.pairwise import Outcome, pair_outcome

    def pair(ab, ba):
        return pair_outcome([CallResult("ab", "ok" if ab is not None else "parse_failed", {} if ab is None else {"position_a": ab}),
                             CallResult("ba", "ok" if ba is not None else "parse_failed", {} if ba is None else {"position_a": ba})])

    assert pair(1.0, 0.0) == Outcome.WIN  # A first and chosen; B first and not chosen
    assert pair(0.0, 1.0) == Outcome.LOSS
    assert pair(0.5, 0.5) == Outcome.TIE
    assert pair(1.0, 1.0) == Outcome.INCONSISTENT  # position A both times
    assert pair(0.5, 0.0) == Outcome.INCONSISTENT  # a tie in one order only
    assert pair(1.0, None) is None and pair(None, None) is None  # an error in either order: left out


def test_a_dry_run_counts_both_orders_of_every_pair_and_writes_nothing(runs, tmp_path):
    out = tmp_path / "pairs"
    first = cli("pairwise", *map(str, runs), "--out", str(out), "--dry-run")
    assert first.returncode == 0, first.stderr[-2000:]
    assert not out.exists()
    total = next(line.split() for line in first.stdout.splitlines() if line.strip().startswith("total"))
    assert pairwise(*runs, out, "longer").returncode == 0
    judged = read_jsonl(out / "judgments.jsonl")
    assert int(total[2]) == len(judged) == 2 * len({(j["round"], j["task"], j["item_id"], j["turn"]) for j in judged})
    again = cli("pairwise", *map(str, runs), "--out", str(out), "--dry-run",
                "--set", "judge.mock_settings.pairwise_rule=longer")
    assert again.returncode == 0, again.stderr[-2000:]
    assert next(line.split() for line in again.stdout.splitlines() if line.strip().startswith("total"))[1:3] == ["0", "0"]
