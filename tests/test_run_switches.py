"""Smaller switches of a run: one switch for greedy decoding, `--tasks` leaving the options of unselected tasks
aside (and saying so), the dry run refusing what the run would refuse, and reasoning-effort values checked against
what the template or the API accepts."""

from __future__ import annotations

import pytest
from helpers import cli

from eval.config import load_config
from eval.resume import ResumeRules, plan_slots


def requests_of(overrides: list[str]) -> list:
    from eval.pipeline import load_tasks

    cfg = load_config("smoke", overrides)
    tasks = load_tasks(cfg, None)
    rules = ResumeRules(cfg, tasks, None, None)
    return [rules.request(slot) for slot, _ in plan_slots(tasks, 1) if slot.turn == 1]


def test_greedy_decoding_is_one_switch_over_every_task_and_category():
    sampled, greedy = requests_of([]), requests_of(["generation.greedy=true"])
    assert {r.sampling.temperature for r in sampled} > {0.0}  # the tasks' temperatures, category ones included
    assert {(r.sampling.temperature, r.sampling.top_p) for r in greedy} == {(0.0, None)}
    assert all(g.sampling.max_new_tokens == s.sampling.max_new_tokens for g, s in zip(greedy, sampled, strict=True))


def test_greedy_is_part_of_the_generation_key_and_the_report_says_so(tmp_path):
    out = tmp_path / "run"
    first = cli("run", "--out", str(out), "--rounds", "2", "--limit", "1", "--tasks", "mt_bench_en")
    assert first.returncode == 0, first.stderr[-2000:]
    greedy = ("run", "--out", str(out), "--rounds", "2", "--limit", "1", "--tasks", "mt_bench_en",
              "--set", "generation.greedy=true")
    refused = cli(*greedy)  # stored answers would be replaced: named as the setting that changed
    assert refused.returncode == 2 and "generation.greedy (false → true)" in refused.stderr, refused.stderr
    again = cli(*greedy, "--force")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "this run generated 4 answers" in again.stdout  # every answer made again: a new key
    table = (out / "table.md").read_text()
    assert "decoding: greedy (generation.greedy)" in table
    assert "Greedy categories: 1 of 1 items gave identical answers in every round." in table  # writing, greedily


def test_tasks_leaves_the_options_of_unselected_tasks_aside_and_says_so(tmp_path):
    options = ["--set", "task_options.mt_bench_en.generation.use_system_prompt=false",
               "--set", "task_options.answer_carefully.judge.max_tokens=99"]
    result = cli("run", "--dry-run", "--out", str(tmp_path / "run"), "--tasks", "mt_bench_ja", *options)
    assert result.returncode == 0, result.stderr
    assert "--tasks: ignoring task_options of answer_carefully, mt_bench_en (not selected)" in result.stderr
    typo = cli("run", "--dry-run", "--out", str(tmp_path / "run"), "--tasks", "mt_bench_ja",
               "--set", "task_options.mt_bench_jp.judge.max_tokens=99")
    assert typo.returncode == 2 and "task_options: mt_bench_jp not among the run's tasks" in typo.stderr


@pytest.mark.parametrize("setting,message", [
    ("model.chat_template_kwargs.reasoning_efort=low", "error: model.chat_template_kwargs.reasoning_efort: the chat "
                                                       "template renders the same prompt whatever its value"),
    ("model.chat_template_kwargs.reasoning_effort=lowish", "error: model.chat_template_kwargs.reasoning_effort: "
                                                           "'lowish' is not a reasoning effort a Harmony model knows"),
])
def test_the_dry_run_refuses_the_template_kwargs_the_run_refuses(tmp_path, setting, message):
    for extra in (["--dry-run"], []):
        result = cli("run", "--out", str(tmp_path / "run"), "--set", setting, *extra)
        assert result.returncode == 2 and result.stderr.startswith(message), (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_api_reasoning_effort_is_one_the_api_accepts():
    result = cli("run", "gpt-5.4-low", "--dry-run", "--set", "model.reasoning_effort=lowish")
    assert result.returncode == 2
    assert "'model.reasoning_effort' (from --set): Input should be 'none', 'minimal', 'low', 'medium', 'high' or " \
           "'xhigh' (got 'lowish')" in result.stderr
    served = cli("run", "gpt-5.4-low", "--dry-run", "--set", "model.reasoning_effort=null",
                 "--set", "model.chat_template_kwargs={reasoning_effort: lowish}")
    assert served.returncode == 2 and "chat_template_kwargs.reasoning_effort 'lowish' is also sent as the request's " \
                                      "reasoning_effort" in served.stderr

