"""The reasoning format is decided from the model, and a run whose answers had no final answer says so loudly.

`model.reasoning.format: auto` (the default) picks Harmony for a tokenizer with the Harmony tokens, `think` for a
template or vocabulary with `<think>`, `none` otherwise; it is decided once, printed and kept in the manifest. A
configured format the tokenizer cannot write stops the run at start with one line. A task whose answers mostly had no
final answer (no_final, empty, None for the judge) warns above 5 % and ends the run with exit 3 above 50 %, after
every report is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from helpers import CHATML_TEMPLATE, build_chatml_model, cli, read_jsonl

from eval.backends.template import ChatRenderer
from eval.config import ReasoningFormat
from eval.errors import UserError

MODELS = ROOT.parent / "shared" / "models"
# Earlier answers go back without their reasoning, as Qwen-style templates do.
THINK_TEMPLATE = CHATML_TEMPLATE.replace("{{ m.content }}", "{{ m.content.split('</think>')[-1] }}")


@pytest.fixture(scope="module")
def chatml(tmp_path_factory) -> Path:
    return build_chatml_model(tmp_path_factory.mktemp("chatml"), "Yes.")


def chatml_config(tmp_path: Path, model: Path, **model_keys) -> Path:
    path = tmp_path / "chatml.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chatml", "rounds": 1, "variant": "sample", "tasks": ["mt_bench_en", "answer_carefully"],
        "model": {"backend": "hf", "path": str(model), "dtype": "float32", "device": "cpu", "engine": "static",
                  **model_keys},
        "generation": {"max_new_tokens": 24},
        "judge": {"model": "mock-judge", "mock": True, "cache": "off"},
    }))
    return path


def test_auto_decides_from_the_tokenizer(chatml, tmp_path):
    picks = {}
    for name in ("llm-jp-4", "gpt-oss"):
        folder = MODELS / f"{name}-tokenizer"
        if not folder.is_dir():
            pytest.skip("../shared/models is absent")
        picks[name] = ChatRenderer(str(folder), None, False, {}).reasoning.format
    picks["chatml"] = ChatRenderer(str(chatml), None, False, {}).reasoning.format
    think = build_chatml_model(tmp_path / "think", "Yes.", THINK_TEMPLATE, markers=("<think>", "</think>"))
    picks["chatml with <think>"] = ChatRenderer(str(think), None, False, {}).reasoning.format
    assert picks == {"llm-jp-4": "harmony", "gpt-oss": "harmony", "chatml": "none", "chatml with <think>": "think"}


def test_a_chatml_model_with_no_format_configured_gets_its_answers(chatml, tmp_path):
    out = tmp_path / "run"
    result = cli("run", str(chatml_config(tmp_path, chatml)), "--out", str(out), "--limit", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reasoning format: none (auto: no Harmony tokens and no <think>/</think> in the tokenizer or its template)" in result.stdout
    gens = read_jsonl(out / "generations.jsonl")
    assert len(gens) == 6 and {(g["status"], g["final"], g["raw"]) for g in gens} == {("ok", "Yes.", "Yes.<|im_end|>")}
    judged = read_jsonl(out / "judgments.jsonl")
    assert all("Yes." in j["messages"][-1]["content"] and "None" not in j["messages"][-1]["content"] for j in judged)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["format"]["reasoning_format"] == "none"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == [] and all(t["counts"]["no_answer"] == 0 for t in summary["tasks"].values())


def test_a_format_the_tokenizer_cannot_write_stops_the_run_at_start(chatml, tmp_path):
    out = tmp_path / "run"
    result = cli("run", str(chatml_config(tmp_path, chatml, reasoning={"format": "harmony"})), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: model.reasoning.format: harmony, but the tokenizer of {str(chatml)!r} has no <|start|>, <|end|>, "
        "<|message|>, <|channel|> token, so the model cannot write Harmony; remove the key (auto decides from the "
        "tokenizer) or set it to none or think")
    assert not (out / "generations.jsonl").exists()


def test_think_markers_split_reasoning_from_the_answer(tmp_path):
    model = build_chatml_model(tmp_path / "think", "<think>hm</think>Yes.", THINK_TEMPLATE, markers=("<think>", "</think>"))
    out = tmp_path / "run"
    result = cli("run", str(chatml_config(tmp_path, model)), "--out", str(out), "--limit", "1", "--tasks", "answer_carefully")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reasoning format: think (auto: the chat template or the vocabulary uses <think>/</think>)" in result.stdout
    gen, = read_jsonl(out / "generations.jsonl")
    assert (gen["status"], gen["final"], gen["reasoning"]) == ("ok", "Yes.", "hm")


def test_a_think_marker_the_tokenizer_cannot_write_is_refused(tmp_path):
    """A tokenizer without byte fallback writes an unknown character as its unknown token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("<>/abcdefghijklmnopqrstuvwxyz|_ \n?.!"))
    backend = Tokenizer(models.WordLevel({c: i for i, c in enumerate(["<unk>", *chars])}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<unk>")
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}\n{% endfor %}"
    tokenizer.save_pretrained(tmp_path)
    ChatRenderer(str(tmp_path), None, False, {}, reasoning=ReasoningFormat(format="think"))  # it can write <think>
    with pytest.raises(UserError, match=r"^model\.reasoning\.think_end: the tokenizer of .* cannot write '</思考>'"):
        ChatRenderer(str(tmp_path), None, False, {}, reasoning=ReasoningFormat(format="think", think_end="</思考>"))


def test_answers_without_a_final_answer_warn_everywhere_and_end_the_run_with_exit_3(tmp_path):
    """The smoke model with too small a budget to reach its final channel: every answer is cut off in its analysis,
    so the judge would see None. Everything is stored and reported, and every report says what to check."""
    out = tmp_path / "run"
    result = cli("run", "--out", str(out), "--rounds", "1", "--limit", "1", "--tasks", "mt_bench_ja,answer_carefully",
                 "--set", "generation.max_new_tokens=4")
    assert result.returncode == 3, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    ja = summary["tasks"]["mt_bench_ja"]
    assert ja["counts"]["no_answer"] == 2 and ja["no_answer"] == {"answers": 2, "count": 2, "share": 1.0,
                                                                   "statuses": {"truncated": 2}}
    warning = ("MT-Bench (JA): 2 of 2 answers (100%) had no final answer (truncated 2), so the judge saw None or an "
               "empty answer; check model.reasoning.format (this run: harmony), the model's stop tokens, and "
               "generation.max_new_tokens (4).")
    assert summary["warnings"][0] == warning and len(summary["warnings"]) == 2
    assert f"**WARNING: {warning}**" in (out / "table.md").read_text() and f"WARNING: {warning}" in result.stdout
    counts_row = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| MT-Bench (JA) | 1 |"))
    assert counts_row.endswith("| 2 |")  # the no-answer column
    assert json.dumps(warning, ensure_ascii=False)[1:-1] in (out / "report.html").read_text()
    assert result.stderr.strip().splitlines()[-1].startswith(
        "NO ANSWERS: most answers had no final answer in MT-Bench (JA) (2 of 2), AnswerCarefully (1 of 1)")
    assert len(read_jsonl(out / "judgments.jsonl")) == 3  # judged and stored as upstream would: nothing lost


def test_the_thresholds_warn_above_five_percent_and_fail_above_half():
    from eval.config import load_config
    from eval.outcome import NO_ANSWERS, outcome
    from eval.results import read_summary
    from eval.summary import _no_answer_warnings

    written = read_summary(Path(__file__).parent / "data" / "summary-v2-main.json")
    entry = written.tasks["mt_bench_ja"]  # complete: only the no-answer share decides

    def task(count: int, answers: int = 100):
        facts = entry.no_answer.model_copy(update={"answers": answers, "count": count, "share": count / answers,
                                                   "statuses": {"no_final": count}})
        return entry.model_copy(update={"column": "T", "no_answer": facts})

    cfg = load_config("configs/smoke.yaml")
    assert [len(_no_answer_warnings({"t": task(n)}, cfg, None)) for n in (5, 6, 50, 51)] == [0, 1, 1, 1]
    assert [outcome(written.model_copy(update={"tasks": {"t": task(n)}})).code for n in (5, 50, 51)] == [0, 0, NO_ANSWERS]


def test_failed_calls_are_not_answers_without_a_final_answer():
    """A generation that failed on the server (`error`) says nothing about the model: it is retried (exit 4), not
    counted towards the no-answer share that ends a run with exit 3 and tells the user to check the model's format."""
    import pandas as pd

    from eval.compat import UPSTREAM
    from eval.summary import _no_answer_facts, _no_answers

    gens = pd.DataFrame({"gen_status": ["error"] * 6 + ["no_final", "ok", "ok", "ok"],
                         "final": [None] * 7 + ["a", "b", "c"]})
    facts = _no_answer_facts(gens, _no_answers(gens, UPSTREAM, None))
    assert facts.dump() == {"answers": 4, "count": 1, "share": 0.25, "statuses": {"no_final": 1}}
