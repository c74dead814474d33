"""A benchmark is one YAML file: two new task files (a copy of MT-Bench JA and a copy of llm-jp-instructions with a
quality prompt of its own criteria), with sample data of their own, show up in summary.json, table.md, every plot,
`compare` and the mock judge's replies, with no code change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.cli import main

MY_BENCH = """\
include: [_sample.yaml, _mt_bench.yaml]
name: my_bench
title: My Bench (a two-turn copy)
column: My Bench
report: {order: 0}
variants:
  sample:
    expected_items: 2
    data:
      format: mt_bench
      questions: {path: samples/my_bench/question.jsonl}
      references: {path: samples/my_bench/reference.jsonl}
"""

MY_QUALITY = """\
include: [_sample.yaml, _graded_ja.yaml]
name: my_quality
title: My Quality (three criteria)
column: My Quality
metric: quality
expected_items: 3
variants:
  sample:
    data: {format: hf, dataset: samples/my_quality, config: v1, split: test, fields: {id: ID, question: text}}
    judge_prompts: {path: samples/my_quality/prompt.yaml, format: llm_jp_judge}
    expected_items: 3
judge:
  primary_criterion: 総合評価
"""

# Criteria no other prompt uses: only a mock that reads this task's own criteria list can answer it.
MY_PROMPT = """\
regex: (有用性|簡潔さ|総合評価):\\s?\\[\\[([1-5])\\]\\]
prompt_template: |-
  次の回答を観点ごとに1から5で採点し、各観点を「観点名: [[点数]]」の行で答えてください。
  観点: 有用性、簡潔さ、総合評価
  質問: {question}
  回答: {response}
metrics: [有用性, 簡潔さ, 総合評価]
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def tasks_dir(tmp_path, monkeypatch) -> Path:
    tasks = tmp_path / "tasks"  # a folder of one's own, searched before the bundled tasks (whose _*.yaml it includes)
    _write(tasks / "my_bench.yaml", MY_BENCH)
    questions = [{"question_id": 1, "category": "writing", "turns": ["短い詩を書いてください。", "それを英語にしてください。"]},
                 {"question_id": 2, "category": "math", "turns": ["2たす3は？", "それを2倍すると？"]}]
    _write(tasks / "samples/my_bench/question.jsonl", "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    _write(tasks / "samples/my_bench/reference.jsonl",
           json.dumps({"question_id": 2, "choices": [{"index": 0, "turns": ["5", "10"]}]}) + "\n")
    _write(tasks / "my_quality.yaml", MY_QUALITY)
    rows = [{"ID": f"q{i}", "text": text} for i, text in enumerate(["挨拶を一文で。", "好きな季節は？", "数を三つ挙げて。"])]
    _write(tasks / "samples/my_quality/v1/test.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _write(tasks / "samples/my_quality/prompt.yaml", MY_PROMPT)
    _write(tasks / "samples/my_quality/README.md", "---\nconfigs:\n- config_name: v1\n  data_files:\n  - split: test\n"
                                                    "    path: v1/test.jsonl\n---\nItems of the new-benchmark test.\n")
    monkeypatch.setenv("LLMJP_EVAL_TASKS", str(tasks))
    return tasks


@pytest.fixture
def drawn(monkeypatch) -> dict[str, list[str]]:
    """Every figure the reports save: file name → the titles of its axes (what each panel shows)."""
    import eval.plots

    figures: dict[str, list[str]] = {}
    save = eval.plots._save

    def record(fig, path):
        figures[path.name] = [ax.get_title() for ax in fig.axes if ax.get_title()]
        save(fig, path)

    monkeypatch.setattr(eval.plots, "_save", record)
    return figures


def test_a_new_benchmark_file_shows_up_everywhere_without_code(tmp_path, tasks_dir, drawn, mock_server, capsys):
    generator = mock_server()  # answers as a generator for models named mock-gen*; the judge is the run's own mock
    out = tmp_path / "run"
    model = f"{{backend: openai, path: mock-gen, base_urls: ['{generator.url}']}}"
    code = main(["run", "configs/smoke.yaml", "--out", str(out), "--rounds", "1", "--limit", "2",
                 "--set", "tasks=[my_bench, my_quality, mt_bench_ja]", "--set", f"model={model}"])
    assert code == 0, capsys.readouterr().err

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["tasks"]) == ["my_bench", "mt_bench_ja", "my_quality"]  # report.order, then by name
    mine, quality = summary["tasks"]["my_bench"], summary["tasks"]["my_quality"]
    assert mine["column"] == "My Bench" and mine["plot"] == "categories" and mine["scale"] == [1, 10]
    assert {"category:writing", "category:math", "turn2"} <= set(mine["metrics"])
    # The mock judge answered the new quality prompt in its own three criteria: every judgment is valid.
    assert quality["counts"]["valid"] == quality["counts"]["planned"] == 2 and quality["counts"]["parse_failed"] == 0
    assert {"有用性", "簡潔さ", "総合評価", "score"} == set(quality["metrics"])
    assert quality["published"] is None and quality["published_column"] is None

    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| My Bench | MT-Bench (JA) | My Quality | Errors |" in table
    assert "## My Quality (three criteria)" in table and "| 簡潔さ |" in table
    assert "| llm-jp-4-8b-thinking (reasoning_effort = medium) (published) | – | 7.54 | – | |" in table

    assert drawn["benchmarks.png"] == ["My Bench", "MT-Bench (JA)", "My Quality"]
    assert drawn["categories.png"] == ["My Bench (a two-turn copy)", "MT-Bench (JA)"]

    capsys.readouterr()
    assert main(["compare", str(out), str(out), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "| Model | run | status | My Bench | MT-Bench (JA) | My Quality |" in printed
    assert "| smoke | smoke | My Quality | +0.00 |" in printed
    assert drawn["compare.png"] == ["My Bench", "MT-Bench (JA)", "My Quality"]
    assert drawn["compare_categories.png"] == ["My Bench (a two-turn copy)", "MT-Bench (JA)"]


def test_a_mock_judge_started_on_its_own_knows_the_registered_tasks_prompts(tasks_dir):
    from eval.judge.mock_server import MockServer, verdict

    prompt = MY_PROMPT.split("prompt_template: |-\n")[1].split("metrics:")[0].replace("  ", "")
    with MockServer() as server:
        reply = verdict([{"role": "user", "content": prompt.format(question="Q", response="A")}], server.state.settings,
                        server.state.templates)
    assert [line.split(":")[0] for line in reply.splitlines() if "[[" in line] == ["有用性", "簡潔さ", "総合評価"]


@pytest.mark.parametrize("text, needles", [
    ("include: _missing.yaml\n", ["my_bench.yaml: 'include': _missing.yaml not found"]),
    (MY_BENCH.replace("report: {order: 0}", "report: {order: 0, colour: red}"),
     ["my_bench.yaml (+ included _sample.yaml, _mt_bench.yaml)", "'report.colour': unknown key"]),
    ("include: [_sample.yaml]\nname: my_bench\ntitle: t\ncolumn: c\nmetric: rubric\nexpected_items: 1\nvariants: {}\n",
     ["'metric'", "'rubric' is not a registered metric kind (known: mt_bench, quality, safety"]),
])
def test_a_bad_task_file_is_one_error_naming_the_file_and_key(tasks_dir, text, needles):
    from eval.errors import UserError
    from eval.tasks import load_spec

    (tasks_dir / "my_bench.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_spec("my_bench")
    for needle in needles:
        assert needle in str(error.value), str(error.value)
