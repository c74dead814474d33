"""Every benchmark script runs here at a tiny size, and its last line (one JSON object) is read: a benchmark that no
longer runs shows in CI, not on the day its figures are needed. The generation benchmark runs every engine of the real
backend path on the tiny shape and checks greedy outputs against naive `generate()`: the GPU suite gets one short
call on a lent machine, so a broken path must show here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "gen_throughput.py"
CHROMIUM = Path("/usr/bin/chromium")


def run_bench(monkeypatch, capsys, *args: str) -> dict:
    spec = importlib.util.spec_from_file_location("gen_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["gen_throughput.py", "--shape", "tiny", "--n", "6", "--budget", "96",
                                      "--median", "24", *args])
    module.main()
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("engine,extra", [("paged", []), ("dynamic", []), ("static", ["--first-segment", "8"]),
                                          ("static", ["--first-segment", "0"])])
def test_every_engine_produces_the_drawn_lengths_and_naive_outputs(monkeypatch, capsys, engine, extra):
    result = run_bench(monkeypatch, capsys, "--engine", engine, "--batch", "4", *extra)
    check = result["greedy_check"]
    assert check["rows_compared"] == 6 and check["rows_equal"] == 6
    assert check["tokens_compared"] == result["output_tokens"]
    assert result["naive_tok_s"] > 0 and result["backend_tok_s"] > 0
    if engine == "static":
        rounds = result["static_rounds"]
        assert (len(rounds) > 1) == (extra[-1] != "0")  # rounds of growing length unless switched off
        assert rounds[next(iter(rounds))] == 6  # every row runs in the first round


@pytest.mark.parametrize("engine", ["paged", "static"])
def test_a_real_model_folder_is_measured_with_its_own_tokenizer_and_eos(monkeypatch, capsys, smoke_model_dir, engine):
    """`--model PATH`: the smoke model's folder (a byte tokenizer with Harmony special tokens, eos `<|return|>`)."""
    from transformers import AutoTokenizer

    result = run_bench(monkeypatch, capsys, "--model", str(smoke_model_dir), "--engine", engine, "--batch", "3")
    tokenizer = AutoTokenizer.from_pretrained(smoke_model_dir)
    assert result["model"] == str(smoke_model_dir) and result["shape"] is None
    assert result["eos_ids_disabled"] == [tokenizer.convert_tokens_to_ids("<|return|>")]
    check = result["greedy_check"]
    assert check["rows_compared"] == check["rows_equal"] == 6 and check["tokens_compared"] == result["output_tokens"]


def test_a_model_too_short_for_the_budget_is_refused_in_one_line(monkeypatch, capsys, smoke_model_dir):
    with pytest.raises(SystemExit, match="positions cannot hold"):
        run_bench(monkeypatch, capsys, "--model", str(smoke_model_dir), "--budget", "8192")


TINY = {  # script → (arguments for a run of seconds, keys its JSON line must hold, a check of the figures)
    "bookkeeping.py": (["--scale", "0.02"], {"first_run", "finished_run", "stored"},
                       lambda r: r["stored"]["generation"] == r["stored"]["judgment"] > 0),
    "judge_throughput.py": (["--n", "20", "--latency", "0.05", "--concurrency", "8", "--baseline-n", "5",
                             "--baseline-interval", "0.02"], {"achieved_rps", "baseline_rps", "lost", "duplicates"},
                            lambda r: r["lost"] == 0 and r["duplicates"] == 0 and r["all_ok_with_faults"]),
    "rate_limit.py": (["--minute", "1", "--n", "12"], {"calls", "max_calls_in_a_minute"},
                      lambda r: r["within_limit"] and r["calls"] >= 12 and r["statuses"] == {"ok": 12}),
    "stats_coverage.py": (["--quick"], {"verdict", "coverage"}, lambda r: len(r["verdict"]) > 0),
    "view_page.py": (["--scale", "0.01", "--runs", "2", "--repeats", "1"], {"page_mb", "open_ms (page ready)"},
                     lambda r: r["rows_all_runs"] > 0),
}


def test_every_benchmark_script_has_a_tiny_run_here():
    scripts = {p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    assert scripts == {*TINY, "gen_throughput.py", "gpu_suite.sh"}  # those two: the tests above and below


@pytest.mark.parametrize("script", sorted(TINY))
def test_a_benchmark_runs_at_a_tiny_size_and_ends_with_its_json_line(script):
    if script == "view_page.py" and not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium and chromium-driver (.ci/run does)")
    args, keys, check = TINY[script]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "netblock"), str(ROOT)])}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert keys <= set(figures) and check(figures), figures


def test_the_gpu_suite_script_runs_one_tiny_case_and_prints_one_json_line_per_case():
    env = {**os.environ, "GPU_SUITE_SHAPE": "tiny", "GPU_SUITE_CASES": "paged-b8", "PYTHON": sys.executable,
           "GPU_SUITE_EXTRA": "--n 4 --budget 32 --median 8", "GPU_SUITE_LOGS": str(ROOT / ".test-cache" / "gpu_suite")}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["case"] for line in lines] == ["environment", "paged-b8", "done"], lines
    assert lines[1]["greedy_check"]["rows_equal"] == 4 and lines[1]["backend_tok_s"] > 0
