"""The walking skeleton: the smoke config runs end to end offline (conftest's `smoke_run`, a real process), resumes
without recomputing, and the table equals an independent recomputation from judgments.jsonl."""

from __future__ import annotations

import json
import statistics

import pytest
from helpers import ROOT, cli, counters, read_jsonl

PRIMARY = {"mt_bench": "score", "safety": "score", "quality": "総合評価"}


def recompute(judgments: list[dict], task: str, metric: str) -> float:
    """The headline number straight from judgments.jsonl: per-round mean of valid scores, then mean over rounds."""
    by_round: dict[int, list[float]] = {}
    for j in judgments:
        if j["task"] == task and j["status"] == "ok":
            by_round.setdefault(j["round"], []).append(j["scores"][PRIMARY[metric]])
    return statistics.fmean(statistics.fmean(v) for v in by_round.values())


def test_smoke_run_offline_prints_the_table_and_it_matches_the_judgments(smoke_run):
    out, result = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    judgments = read_jsonl(out / "judgments.jsonl")
    assert set(summary["tasks"]) == {"mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"}
    assert summary["complete"] is True
    assert summary["compat"] == "llm-jp-judge-2.0.0" and "compat: `llm-jp-judge-2.0.0`" in result.stdout
    measured_row = next(line for line in result.stdout.splitlines() if "(measured)" in line)
    for name, task in summary["tasks"].items():
        expected = recompute(judgments, name, task["metric"])
        assert task["metrics"]["score"]["mean"] == pytest.approx(expected, abs=1e-12)
        assert f"{expected:.2f}" in measured_row
        assert task["counts"]["planned"] == task["counts"]["judgments"]
    for column in ("MT-Bench (JA)", "MT-Bench (EN)", "AnswerCarefully", "llm-jp-instructions", "Errors"):
        assert column in result.stdout
    for name in ("summary.json", "table.md", "table.csv", "generations.jsonl", "judgments.jsonl", "manifest.json",
                 "errors.json", "config.yaml", "run.sqlite"):
        assert (out / name).is_file(), name


def test_turn_two_sees_the_turn_one_final_answer_and_never_its_reasoning(smoke_run, smoke_model_dir):
    from transformers import AutoTokenizer

    out, _ = smoke_run
    gens = read_jsonl(out / "generations.jsonl")
    first = {(g["task"], g["round"], g["item_id"]): g for g in gens if g["turn"] == 1}
    tokenizer = AutoTokenizer.from_pretrained(smoke_model_dir)
    second = [g for g in gens if g["turn"] == 2]
    assert second and any(first[(g["task"], g["round"], g["item_id"])]["status"] == "ok" for g in second)
    for g in second:
        one = first[(g["task"], g["round"], g["item_id"])]
        assistant = [m for m in g["messages"] if m["role"] == "assistant"]
        # the default profile sends the answer back as it came (partial text when cut off, null when there is none)
        assert assistant == [{"role": "assistant", "content": one["final"]}]
        prompt = tokenizer.apply_chat_template(g["messages"], tokenize=False, add_generation_prompt=True,
                                               reasoning_effort="medium", conversation_start_date="2026-07-15")
        if one["status"] == "ok":
            assert f"<|channel|>final<|message|>{one['final']}<|end|>" in prompt
        if one["reasoning"]:
            assert one["reasoning"] not in prompt
            assert "<|channel|>analysis" not in prompt


def test_second_run_makes_no_generation_and_no_judge_call(tmp_path, mock_server):
    server = mock_server()
    out = tmp_path / "run"
    args = ["run", "configs/smoke.yaml", "--out", str(out), "--rounds", "1", "--set", "judge.mock=false",
            "--set", f"judge.base_url={server.url}", "--set", "judge.api_key_env=MOCK_JUDGE_KEY"]
    env = {"MOCK_JUDGE_KEY": "not-a-real-key"}
    first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    requests_after_first = counters(server)["requests"]
    table = (out / "table.md").read_text()
    assert requests_after_first > 24
    second = cli(*args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert counters(server)["requests"] == requests_after_first
    activity = json.loads((out / "manifest.json").read_text())["this_invocation"]
    assert activity["generation_calls"] == 0 and activity["judge_calls"] == 0
    assert "nothing to compute" in second.stdout
    assert (out / "table.md").read_text() == table


def test_the_network_block_used_by_these_tests_works(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import socket\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=2)\n"
                      "    print('connected')\nexcept OSError as e:\n    print('blocked' if 'blocked' in str(e) else e)\n")
    import os
    import subprocess
    import sys


    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "netblock"))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "blocked"
    import socket

    with pytest.raises(OSError, match="network blocked"):  # and in this process, where `cli` runs commands
        socket.create_connection(("93.184.216.34", 80), timeout=2)


def test_check_validates_the_config_and_probes_the_judge():
    result = cli("check", "configs/smoke.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok       config configs/smoke.yaml: 4 tasks (sample), 3 rounds, judge mock-judge" in result.stdout
    assert "ok       data: 4 tasks, 16 items" in result.stdout
    assert "ok       judge mock-judge: reachable, key accepted, parameters accepted" in result.stdout


def test_version_says_which_package_answered():
    from eval import __version__

    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"llmjp-eval {__version__}") and f"package at {ROOT / 'eval'}" in result.stdout


def test_every_command_has_help():
    for command in ("run", "report", "compare", "runs", "tasks", "fetch", "check", "mock-judge"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "usage: python -m eval" in result.stdout, command
