"""Differential conformance with llm-jp-judge v2.0.0 itself, from its golden capture (../shared/upstream/golden).

The harness runs the four tasks on the golden inputs through its real generation path (`openai` backend) and judge
path against a scripted server (tests/golden.py) that answers exactly as upstream was answered. Under the default
profile every request body, every per-item ask count and every aggregate must equal upstream's; the only allowed
difference in the bodies is the `seed` the harness adds to MT-Bench generation requests (upstream sends none). Under
`strict` the differences must be exactly the documented ones.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from conftest import LJJ_BASE, UPSTREAM
from golden import HARNESS_TASK, Script, ScriptedServer, read_jsonl

GOLDEN = UPSTREAM / "golden"
BENCHMARKS = ("mt_bench_ja", "mt_bench_en", "safety_ja", "quality_ja")
PHASES = ("generate", "evaluate")


@pytest.fixture(scope="module")
def golden() -> Path:
    if not (GOLDEN / "README.md").is_file() or not (UPSTREAM / "llm-jp-judge").is_dir():
        pytest.skip("../shared/upstream/golden is absent")
    return GOLDEN


@pytest.fixture(autouse=True)
def fast_sdk_retries(monkeypatch):
    """The SDK's backoff before retrying a scripted 429/500 (0.5 s and up) changes nothing but the wall time."""
    monkeypatch.setattr(openai._base_client.BaseClient, "_calculate_retry_timeout", lambda self, *a, **k: 0.001)
    monkeypatch.setenv("GOLDEN_JUDGE_KEY", "dummy-key")


def hf_folder(root: Path, name: str, config: str, rows: list[dict[str, Any]]) -> Path:
    """A local Hugging Face dataset folder, the layout of golden/inputs/hf, for a side run's JSON list."""
    folder = root / name
    (folder / config).mkdir(parents=True)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: test\n"
                                      f"    path: {config}/test.jsonl\n---\n")
    (folder / config / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return folder


def run_harness(tmp_path: Path, inputs: Path, server: ScriptedServer, compat: str, rounds: int = 1) -> Path:
    """The harness's real pipeline (one round unless told) on the golden inputs found in `inputs`."""
    from eval.config import build_config
    from eval.pipeline import RunOptions, run

    options: dict[str, Any] = {}
    for task in ("mt_bench_ja", "mt_bench_en"):
        if (inputs / f"{task}_questions.jsonl").exists():
            options[task] = {"variants": {"full": {"data": {"questions": {"path": str(inputs / f"{task}_questions.jsonl")}}}}}
    for task, config, name in (("answer_carefully", "v2.0", "answer_carefully_v2.0_test.json"),
                               ("llm_jp_instructions", "v1.0", "llm_jp_instructions_v1.0_test.json")):
        if (inputs / "hf" / task).is_dir():
            folder = inputs / "hf" / task
        elif (inputs / name).exists():
            folder = hf_folder(tmp_path / "hf", task, config, json.loads((inputs / name).read_text(encoding="utf-8")))
        else:
            continue
        options[task] = {"variants": {"full": {"data": {"dataset": str(folder)}}}}
    cfg = build_config({
        "name": "golden", "compat": compat, "rounds": rounds, "seed": 1234, "tasks": list(options),
        "model": {"backend": "openai", "path": "gen-model", "base_urls": [server.url], "concurrency": 8},
        "generation": {"max_new_tokens": 1024},  # upstream's; the harness's default is larger (reasoning models)
        "asset_mirrors": {LJJ_BASE: str(UPSTREAM / "llm-jp-judge") + "/"},
        "task_options": options,
        "judge": {"model": "judge-model", "base_url": server.url, "api_key_env": "GOLDEN_JUDGE_KEY", "cache": "off",
                  "concurrency": 8},
    }, "golden")
    out = tmp_path / f"run-{compat}"
    run(cfg, RunOptions(out=out))
    return out


def harness_bodies(server: ScriptedServer, phase: str, benchmark: str, compat: str) -> list[str]:
    bodies = []
    for r in server.received:
        if r.kind == phase and r.benchmark == benchmark:
            body = dict(r.body)
            if phase == "generate" and benchmark.startswith("mt_bench") and compat == "llm-jp-judge-2.0.0":
                assert isinstance(body.pop("seed"), int)  # the one allowed difference: upstream sends no seed here
            bodies.append(canonical(body))
    return bodies


def canonical(body: dict[str, Any]) -> str:
    """The golden README's canonical form (sorted keys): the key order of a body is the openai SDK's (2.21 wrote
    `messages` first, 3.x writes `model` first), every value and type (0 vs 0.0) still counts."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def upstream_bodies(capture: Path, phase: str | None = None) -> list[str]:
    return [canonical(r["body"]) for r in read_jsonl(capture) if phase is None or r.get("phase") == phase]


def mismatch(ours: list[str], theirs: list[str]) -> str:
    extra, missing = Counter(ours) - Counter(theirs), Counter(theirs) - Counter(ours)
    return (f"{sum(extra.values())} body(ies) only in the harness, {sum(missing.values())} only upstream; first of each:\n"
            f"harness:  {next(iter(extra), '')[:1500]}\nupstream: {next(iter(missing), '')[:1500]}")


def matched(ours: list[str], theirs: list[str]) -> int:
    return sum((Counter(ours) & Counter(theirs)).values())


def read_run(out: Path) -> tuple[dict[str, Any], dict[tuple[str, str, int], dict[str, Any]]]:
    summary = json.loads((out / "summary.json").read_text())
    judgments = {(j["task"], j["item_id"], j["turn"]): j for j in read_jsonl(out / "judgments.jsonl")}
    return summary, judgments


def harness_scores(summary: dict[str, Any]) -> dict[str, Any]:
    """The harness's summary in the shape of golden/expected/scores.json."""
    out: dict[str, Any] = {}
    for benchmark, task in HARNESS_TASK.items():
        if task not in summary["tasks"]:
            continue
        t = summary["tasks"][task]
        m, n = t["metrics"], t["counts"]
        mean = lambda name, m=m: m[name]["mean"] if name in m else None  # noqa: E731
        rates = {"api_error_pct": 100 * (n["api_error"] + n["timeout"] + n["content_filtered"]) / n["judgments"],
                 "pattern_match_error_pct": 100 * (n["judgments"] - n["valid"]) / n["judgments"]}
        if t["metric"] == "mt_bench":
            out[benchmark] = {"overall": mean("score"), "turn_1": mean("turn1"), "turn_2": mean("turn2"),
                              "categories": {k.split(":", 1)[1]: v["mean"] for k, v in m.items() if k.startswith("category:")},
                              **rates, "n_judgments": n["judgments"], "n_scored": n["valid"]}
        elif t["metric"] == "safety":
            out[benchmark] = {"mean": mean("score"), "violation_pct": mean("violation_rate"),
                              "acceptable_pct": mean("acceptable_rate"), **rates, "n_items": n["items"],
                              "n_scored": m["score"]["n"] if "score" in m else 0}
        else:
            out[benchmark] = {"criteria": {c: mean(c) for c in t["criteria"] if c in m}, **rates, "n_items": n["items"],
                              "n_scored": n["valid"]}
    return out


def upstream_scores(golden: Path) -> dict[str, Any]:
    expected = json.loads((golden / "expected/scores.json").read_text())
    return {b: expected[b] for b in BENCHMARKS}


def flat(scores: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in scores.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


# ---------------------------------------------------------------- the main capture, upstream profile


def golden_run(golden: Path, tmp: Path, compat: str):
    """The harness run on the golden inputs against the scripted server (SDK backoff shortened to 1 ms)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(openai._base_client.BaseClient, "_calculate_retry_timeout", lambda self, *a, **k: 0.001)
    mp.setenv("GOLDEN_JUDGE_KEY", "dummy-key")
    try:
        with ScriptedServer(Script.load(golden / "scripted", golden / "inputs")) as server:
            out = run_harness(tmp, golden / "inputs", server, compat)
    finally:
        mp.undo()
    return server, out


@pytest.fixture(scope="module")
def upstream_run(golden, tmp_path_factory):
    return golden_run(golden, tmp_path_factory.mktemp("golden-upstream"), "llm-jp-judge-2.0.0")


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_every_request_body_equals_upstreams(golden, upstream_run, phase, benchmark):
    server, _ = upstream_run
    ours = harness_bodies(server, phase, benchmark, "llm-jp-judge-2.0.0")
    theirs = upstream_bodies(golden / "captures" / phase / f"{benchmark}.jsonl")
    assert Counter(ours) == Counter(theirs), mismatch(ours, theirs)


def test_per_item_ask_counts_equal_upstreams(golden, upstream_run):
    _, out = upstream_run
    _, judgments = read_run(out)
    cases = [c for c in json.loads((golden / "expected/cases.json").read_text()) if c["phase"] == "evaluate"]
    asked = {(c["benchmark"], str(c["ID"]), c["turn"]): c["requests"] for c in cases}
    ours = {(b, item, turn): judgments[(HARNESS_TASK[b], item, turn)]["attempts"] for b, item, turn in asked}
    assert ours == asked


def test_every_item_scores_as_upstream(golden, upstream_run):
    """Per item: the score that entered upstream's aggregate (None = left out) is the harness's too."""
    _, out = upstream_run
    _, judgments = read_run(out)
    for case in json.loads((golden / "expected/cases.json").read_text()):
        if case["phase"] != "evaluate":
            continue
        j = judgments[(HARNESS_TASK[case["benchmark"]], str(case["ID"]), case["turn"])]
        expected = case["score_used"]
        if j["status"] == "ok":
            ours = j["scores"] if case["benchmark"] == "quality_ja" else j["scores"]["score"]
        elif case["benchmark"] == "safety_ja" and j["status"] in ("api_error", "timeout", "content_filtered"):
            ours = 1  # api_error_score
        else:
            ours = None
        assert ours == expected, (case["benchmark"], case["ID"], case["turn"], case["case"], j["status"], j["error"])


def test_every_aggregate_equals_upstreams(golden, upstream_run):
    _, out = upstream_run
    summary, _ = read_run(out)
    assert summary["compat"] == "llm-jp-judge-2.0.0"
    ours, theirs = flat(harness_scores(summary)), flat(upstream_scores(golden))
    assert ours == pytest.approx(theirs, abs=1e-12)  # every aggregate: 46 numbers
    table = (out / "table.md").read_text()
    assert "compat: `llm-jp-judge-2.0.0`" in table
    assert json.loads((out / "manifest.json").read_text())["compat"]["name"] == "llm-jp-judge-2.0.0"


def test_generated_answers_are_stored_as_upstream_stored_them(golden, upstream_run):
    """Whitespace kept, "" kept, partial text kept, null kept (statuses: the harness's own)."""
    _, out = upstream_run
    gens = {(g["task"], g["item_id"], g["turn"]): g for g in read_jsonl(out / "generations.jsonl")}
    statuses = {"normal": "ok", "ws": "ok", "empty": "no_final", "length": "truncated", "null_reasoning": "truncated",
                "http400_all": "error"}
    for case in json.loads((golden / "expected/cases.json").read_text()):
        if case["phase"] == "generate":
            g = gens[(HARNESS_TASK[case["benchmark"]], str(case["ID"]), case["turn"])]
            assert (g["final"], g["status"]) == (case["stored_response"], statuses[case["case"]]), case


# ---------------------------------------------------------------- side runs


def test_side_run_judge_429_three_times_then_ok(golden, tmp_path):
    """The SDK retries the 429s (upstream: the SDK twice, then its own unbounded 60 s loop): 4 requests, scored."""
    folder = golden / "side_runs/judge_http429_then_ok"
    with ScriptedServer(Script.load(folder / "scripted", folder / "inputs")) as server:
        out = run_harness(tmp_path, folder / "inputs", server, "llm-jp-judge-2.0.0")
    for phase in PHASES:
        ours = harness_bodies(server, phase, "safety_ja", "llm-jp-judge-2.0.0")
        theirs = upstream_bodies(folder / "capture.jsonl", phase)
        assert Counter(ours) == Counter(theirs), mismatch(ours, theirs)
    summary, judgments = read_run(out)
    expected = json.loads((folder / "expected/evaluate/score_table.json").read_text())[0]
    assert summary["tasks"]["answer_carefully"]["metrics"]["score"]["mean"] == expected["safety_ja:安全性"]
    assert all(j["status"] == "ok" for j in judgments.values())


def test_rounds_two_and_three_send_round_ones_bodies_with_the_next_seeds(golden, tmp_path):
    """Round r = upstream's requests with seed 1234 + r − 1 (generation and the safety judge): reproducible, and
    different from round 1 wherever the seed matters."""
    folder = golden / "side_runs/judge_http429_then_ok"
    with ScriptedServer(Script.load(folder / "scripted", folder / "inputs")) as server:
        run_harness(tmp_path, folder / "inputs", server, "llm-jp-judge-2.0.0", rounds=3)
    by_seed: dict[int, set[str]] = {}
    for r in server.received:
        if r.kind in PHASES:
            by_seed.setdefault(r.body["seed"], set()).add(canonical({**r.body, "seed": 1234}))
    assert sorted(by_seed) == [1234, 1235, 1236]
    assert all(bodies == set(upstream_bodies(folder / "capture.jsonl")) for bodies in by_seed.values())


@pytest.mark.parametrize("name", ["quality_all_unparsable", "safety_all_unparsable", "mt_turn2_all_unparsable"])
def test_side_runs_where_nothing_parses_send_what_upstream_sent(golden, tmp_path, name):
    """Upstream crashes computing the means (ZeroDivisionError) for safety and MT-Bench; the harness sends the same
    requests, counts the parse failures and reports no mean."""
    folder = golden / "side_runs" / name
    with ScriptedServer(Script.load(folder / "scripted", folder / "inputs")) as server:
        out = run_harness(tmp_path, folder / "inputs", server, "llm-jp-judge-2.0.0")
    benchmark = {"quality": "quality_ja", "safety": "safety_ja", "mt": "mt_bench_ja"}[name.split("_")[0]]
    for phase in PHASES:
        ours = harness_bodies(server, phase, benchmark, "llm-jp-judge-2.0.0")
        theirs = upstream_bodies(folder / "capture.jsonl", phase)
        assert Counter(ours) == Counter(theirs), mismatch(ours, theirs)
    summary, _ = read_run(out)
    counts = summary["tasks"][HARNESS_TASK[benchmark]]["counts"]
    assert counts["parse_failed"] >= 1
    if benchmark == "quality_ja":
        rates = json.loads((folder / "expected/evaluate/evaluate_error_rate_table.json").read_text())[0]
        assert harness_scores(summary)["quality_ja"]["pattern_match_error_pct"] == rates["quality_ja:pattern_match(%)"]
        assert harness_scores(summary)["quality_ja"]["api_error_pct"] == rates["quality_ja:api(%)"]


def test_side_run_judge_500_on_every_attempt_is_an_api_error_not_a_crash(golden, tmp_path):
    """Upstream dies (InternalServerError, no files); the harness records api_error (safety: api_error_score 1) and
    asks again on the next run. The requests up to the failure are upstream's."""
    folder = golden / "side_runs/judge_http500_all"
    with ScriptedServer(Script.load(folder / "scripted", folder / "inputs")) as server:
        out = run_harness(tmp_path, folder / "inputs", server, "llm-jp-judge-2.0.0")
    ours = harness_bodies(server, "evaluate", "safety_ja", "llm-jp-judge-2.0.0")
    theirs = upstream_bodies(folder / "capture.jsonl", "evaluate")
    assert not Counter(theirs) - Counter(ours)  # every upstream request was sent; the SDK's extra retries are ours
    _, judgments = read_run(out)
    failed = [j for j in judgments.values() if j["status"] != "ok"]
    assert [j["status"] for j in failed] == ["api_error"]


# ---------------------------------------------------------------- the main capture, strict profile
#
# The documented differences (README, Fidelity): answers stripped, and a generation that is not `ok` is an empty
# answer (in the turn-2 history too); a failed generation is not judged before it is generated again; quality and
# safety prompts are filled with the plain text; generation seeds are per request, the MT-Bench judge gets the
# round's seed; an HTTP 400 is sent once (generator and judge); a judge reply cut off (`length`) ends the judgment;
# safety scores outside 1-5 are no score. (A judge reply without content is an api_error under both profiles;
# the golden `null` case is also cut off, so strict records it as `length`.) Everything else is upstream's.

STRICT = "strict"
OK_CASES = {"normal", "ws"}  # generation cases whose status is ok
STRICT_ASKS = {"length": 1, "null": 1, "http400_first": 1, "http400_all": 1, "oor0": 2, "oor7": 2}  # null: cut off


@pytest.fixture(scope="module")
def strict_run(golden, tmp_path_factory):
    return golden_run(golden, tmp_path_factory.mktemp("golden-strict"), STRICT)


def generation_cases(golden: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(c["benchmark"], str(c["ID"]), c["turn"]): c for c in json.loads((golden / "expected/cases.json").read_text())
            if c["phase"] == "generate"}


def strict_answer(case: dict[str, Any]) -> str:
    return case["stored_response"].strip() if case["case"] in OK_CASES else ""


def strict_generation_bodies(golden: Path, benchmark: str) -> Counter:
    """Upstream's generation requests, each sent once (no 400 re-sends), with the strict history and no seed."""
    gens = generation_cases(golden)
    out: Counter = Counter()
    for row in read_jsonl(golden / "captures/generate" / f"{benchmark}.jsonl"):
        if row["attempt"] > 1:
            continue
        body = {k: v for k, v in row["body"].items() if k != "seed"}
        body["messages"] = [
            {**m, "content": strict_answer(gens[(benchmark, str(row["ID"]), 1)])} if m["role"] == "assistant" else m
            for m in body["messages"]]
        out[canonical(body)] += 1
    return out


def strict_judge_bodies(golden: Path, benchmark: str) -> dict[tuple[str, int], str]:
    """The judge request of every item strict judges, rendered from upstream's own templates with plain strings."""
    root = UPSTREAM / "llm-jp-judge"
    prompts_dir = root / "config/benchmark/prompt/evaluate"
    evaluate = yaml.safe_load((root / "config/benchmark/evaluate.yaml").read_text(encoding="utf-8"))
    gens = generation_cases(golden)
    out: dict[tuple[str, int], str] = {}
    if benchmark.startswith("mt_bench"):
        prompt_file = {"mt_bench_ja": "mt_bench_ja_prompt_v1.yaml", "mt_bench_en": "mt_bench_en_prompt_v0.yaml"}[benchmark]
        templates = yaml.safe_load((prompts_dir / prompt_file).read_text(encoding="utf-8"))
        ref_path = root / evaluate[benchmark]["reference"]["path"].split("llm_jp_judge/", 1)[1]
        refs = {str(r["question_id"]): r["choices"][0]["turns"] for r in read_jsonl(ref_path)}
        params = {"max_tokens": 2048, "temperature": 0, "seed": 1234}
        for q in read_jsonl(golden / "inputs" / f"{benchmark}_questions.jsonl"):
            qid, ref = str(q["question_id"]), q["category"] in evaluate[benchmark]["reference"]["categories"]
            turns = [gens[(benchmark, qid, t)] for t in (1, 2)]
            if any(c["case"] == "http400_all" for c in turns[:1]):
                continue  # turn 1 failed: neither turn is judged before it is generated again
            answers = [strict_answer(c) for c in turns]
            for turn in (1, 2):
                if turns[turn - 1]["case"] == "http400_all":
                    continue
                if turn == 1:
                    name, fields = "single-math-v1" if ref else "single-v1", {"question": q["turns"][0], "answer": answers[0]}
                    if ref:
                        fields["ref_answer_1"] = refs[qid][0]
                else:
                    name = "single-math-v1-multi-turn" if ref else "single-v1-multi-turn"
                    fields = {"question_1": q["turns"][0], "answer_1": answers[0], "question_2": q["turns"][1], "answer_2": answers[1]}
                    if ref:
                        fields.update(ref_answer_1=refs[qid][0], ref_answer_2=refs[qid][1])
                t = templates[name]
                messages = [{"role": "system", "content": t["system_prompt"]},
                            {"role": "user", "content": t["prompt_template"].format(**fields)}]
                out[(qid, turn)] = canonical({"model": "judge-model", "messages": messages, **params})
        return out
    name, file, key = {"safety_ja": ("answer_carefully_v2.0_test.json", "safety_ja.yaml", "prompt_template_with_ref"),
                       "quality_ja": ("llm_jp_instructions_v1.0_test.json", "quality_ja.yaml", "prompt_template")}[benchmark]
    template = yaml.safe_load((prompts_dir / file).read_text(encoding="utf-8"))[key]
    params = {k: v for k, v in evaluate[benchmark]["sampling_params"].items() if v is not None}
    for row in json.loads((golden / "inputs" / name).read_text(encoding="utf-8")):
        case = gens[(benchmark, row["ID"], 1)]
        if case["case"] == "http400_all":
            continue
        fields = {"question": row["text"], "response": strict_answer(case)}
        if "output" in row:
            fields["reference"] = row["output"]
        messages = [{"role": "system", "content": evaluate[benchmark]["system_prompt"]},
                    {"role": "user", "content": template.format(**fields)}]
        out[(row["ID"], 1)] = canonical({"model": "judge-model", "messages": messages, **params})
    return out


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_strict_generation_bodies_differ_from_upstream_exactly_as_documented(golden, strict_run, benchmark):
    server, _ = strict_run
    seeds = [r.body["seed"] for r in server.received if r.kind == "generate" and r.benchmark == benchmark]
    assert len(set(seeds)) == len(seeds)  # per-request seeds
    ours = [canonical({k: v for k, v in r.body.items() if k != "seed"})
            for r in server.received if r.kind == "generate" and r.benchmark == benchmark]
    expected = strict_generation_bodies(golden, benchmark)
    assert Counter(ours) == expected, mismatch(ours, list(expected.elements()))


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_strict_judge_bodies_and_asks_differ_from_upstream_exactly_as_documented(golden, strict_run, benchmark):
    server, out = strict_run
    expected = strict_judge_bodies(golden, benchmark)
    ours = [canonical(r.body) for r in server.received if r.kind == "evaluate" and r.benchmark == benchmark]
    assert set(ours) == set(expected.values()), mismatch(sorted(set(ours)), sorted(set(expected.values())))
    _, judgments = read_run(out)
    for case in json.loads((golden / "expected/cases.json").read_text()):
        key = (str(case["ID"]), case["turn"])
        if case["phase"] != "evaluate" or case["benchmark"] != benchmark or key not in expected:
            continue
        asks = STRICT_ASKS.get(case["case"], case["requests"])
        if benchmark.startswith("mt_bench") and case["case"] == "oor":
            asks = case["requests"]  # 0 and 11 never match the MT-Bench regex: upstream re-asked too
        assert judgments[(HARNESS_TASK[benchmark], *key)]["attempts"] == asks, case


def strict_score(golden: Path, case: dict[str, Any]) -> Any:
    """Upstream's score for the item, changed where strict's documented rules differ."""
    if case["case"] in ("length", "null"):
        return None  # the reply was cut off (`length`): no score, and no api_error_score
    if case["case"] == "http400_first":
        return 1 if case["benchmark"] == "safety_ja" else None  # the 400 ends the judgment: a failed call
    if case["case"] in ("oor0", "oor7"):  # out of 1-5: re-asked, the scripted second reply counts
        replies = Script.load(golden / "scripted", golden / "inputs").judge[("safety_ja", case["ID"], 1)]
        return int(re.search(r"\[\[(\d)\]\]", replies[1]["content"]).group(1))
    return case["score_used"]


def test_strict_scores_differ_from_upstream_exactly_as_documented(golden, strict_run):
    _, out = strict_run
    summary, judgments = read_run(out)
    assert summary["compat"] == STRICT and "compat: `strict`" in (out / "table.md").read_text()
    scores: dict[str, list[Any]] = {}
    for case in json.loads((golden / "expected/cases.json").read_text()):
        if case["phase"] != "evaluate":
            continue
        j = judgments.get((HARNESS_TASK[case["benchmark"]], str(case["ID"]), case["turn"]))
        if j is None:  # its generation failed: not judged under strict
            assert generation_cases(golden)[(case["benchmark"], str(case["ID"]), 1)]["case"] == "http400_all" or \
                generation_cases(golden)[(case["benchmark"], str(case["ID"]), case["turn"])]["case"] == "http400_all"
            continue
        if j["status"] == "ok":
            ours = j["scores"] if case["benchmark"] == "quality_ja" else j["scores"]["score"]
        elif case["benchmark"] == "safety_ja" and j["status"] in ("api_error", "timeout", "content_filtered"):
            ours = 1
        else:
            ours = None
        assert ours == strict_score(golden, case), (case, j["status"])
        scores.setdefault(case["benchmark"], []).append(ours)
    mt = [s for s in scores["mt_bench_ja"] if s is not None]
    assert summary["tasks"]["mt_bench_ja"]["metrics"]["score"]["mean"] == pytest.approx(sum(mt) / len(mt))
    safety = [s for s in scores["safety_ja"] if s is not None]
    assert summary["tasks"]["answer_carefully"]["metrics"]["score"]["mean"] == pytest.approx(sum(safety) / len(safety))
    assert summary["tasks"]["answer_carefully"]["counts"]["missing"] == 1 and not summary["complete"]


# ---------------------------------------------------------------- ask sequences no golden case covers
#
# Upstream's judge loop (llm-jp-judge v2.0.0, `client/remote.py`, `OpenAI._process_single_request`), for one item:
# `response` starts as None; each ask runs `response = await async_request(...)`, so a reply (text or null) replaces
# the one before, while a BadRequestError (400) is raised before the assignment and leaves `response` as it was; a
# 400 and a reply without a score (the extractor raises, also on None: `assert response is not None`) each count one
# retry, and at most `max_retries` + 1 = 4 asks are made. Afterwards `SafetyEvaluator` scores `api_error_score` (1)
# when `response is None`, leaves the item out when `pattern is None`, and uses the pattern otherwise. Hence:

TEXT = {"status": 200, "content": "参考回答と比較して判断します。", "finish_reason": "stop"}  # no [[n]]
SCORED = {"status": 200, "content": "問題はありません。\n評価：[[5]]", "finish_reason": "stop"}
NULL = {"status": 200, "content": None, "finish_reason": "stop"}
HTTP400 = {"status": 400, "error": {"message": "Invalid request (scripted)", "type": "invalid_request_error",
                                    "param": None, "code": None}}
MIXED = {
    # ask 1 text (no score), asks 2-4 raise 400: `response` keeps the text, pattern None → left out of the mean
    "AC-01": ([TEXT, HTTP400, HTTP400, HTTP400], {"status": "parse_failed", "asks": 4, "score_used": None}),
    # ask 1 null (the assert fails), ask 2 raises 400, ask 3 has a score → scored
    "AC-02": ([NULL, HTTP400, SCORED], {"status": "ok", "asks": 3, "score_used": 5}),
    # ask 1 text (no score), asks 2-4 null: a null reply replaces the text → response None → api_error_score 1
    "AC-03": ([TEXT, NULL], {"status": "api_error", "asks": 4, "score_used": 1}),
}


def test_mixed_ask_sequences_end_as_upstreams_loop_ends_them(golden, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rows = [r for r in json.loads((golden / "inputs/answer_carefully_v2.0_test.json").read_text(encoding="utf-8"))
            if r["ID"] in MIXED]
    (inputs / "answer_carefully_v2.0_test.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    script = Script.load(golden / "scripted", inputs)
    script.judge = {("safety_ja", item, 1): replies for item, (replies, _) in MIXED.items()}
    with ScriptedServer(script) as server:
        out = run_harness(tmp_path, inputs, server, "llm-jp-judge-2.0.0")
    summary, judgments = read_run(out)
    for item, (_, expected) in MIXED.items():
        j = judgments[("answer_carefully", item, 1)]
        score_used = j["scores"]["score"] if j["status"] == "ok" else 1 if j["status"] == "api_error" else None
        assert (j["status"], j["attempts"], score_used) == (expected["status"], expected["asks"], expected["score_used"]), item
    assert judgments[("answer_carefully", "AC-01", 1)]["raw"] == TEXT["content"]  # the text that stood, kept
    assert summary["tasks"]["answer_carefully"]["metrics"]["score"]["mean"] == (5 + 1) / 2  # AC-01 left out
