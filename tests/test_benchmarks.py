"""The generation benchmark runs every engine of the real backend path on the tiny shape and checks greedy outputs
against naive `generate()`: the GPU suite gets one short call on a lent machine, so a broken path must show here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "gen_throughput.py"


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
