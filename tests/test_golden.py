"""Differential conformance with llm-jp-judge v2.0.0 itself, from its golden capture (../shared/upstream/golden).

The harness runs the four tasks on the golden inputs through its real generation path (`openai` backend) and judge
path against a scripted server (tests/golden.py) that answers exactly as upstream was answered. Under the default
profile every request body, every per-item ask count and every aggregate must equal upstream's; the only allowed
difference in the bodies is the `seed` the harness adds to MT-Bench generation requests (upstream sends none). Under
`strict` the differences must be exactly the documented ones.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from conftest import LJJ_BASE, UPSTREAM
from golden import HARNESS_TASK, ScriptedServer, Script, read_jsonl

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


def run_harness(tmp_path: Path, inputs: Path, server: ScriptedServer, compat: str) -> Path:
    """One round of the harness's real pipeline on the golden inputs found in `inputs`."""
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
        "name": "golden", "compat": compat, "rounds": 1, "seed": 1234, "tasks": list(options),
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
        mean = lambda name: m[name]["mean"] if name in m else None  # noqa: E731
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


@pytest.fixture(scope="module")
def upstream_run(golden, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden-upstream")
    mp = pytest.MonkeyPatch()
    mp.setattr(openai._base_client.BaseClient, "_calculate_retry_timeout", lambda self, *a, **k: 0.001)
    mp.setenv("GOLDEN_JUDGE_KEY", "dummy-key")
    try:
        with ScriptedServer(Script.load(golden / "scripted", golden / "inputs")) as server:
            out = run_harness(tmp, golden / "inputs", server, "llm-jp-judge-2.0.0")
    finally:
        mp.undo()
    return server, out


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
    assert ours == pytest.approx(theirs, abs=1e-12)  # every aggregate: 58 numbers
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
