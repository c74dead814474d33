"""A metric kind with two judge calls per slot, for the tests only: MT-Bench's grade asked twice, call `a` as
MT-Bench asks it and call `b` with a line added to the judge's system prompt (so its request, and the mock judge's
grade, differ), the two averaged by the default rule. Importing this module registers the kind; a task file names it
with `metric: mt_bench_two_calls` (`task_file` writes one over MT-Bench EN's sample questions)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from eval.kinds import KINDS
from eval.kinds.mt_bench import MTBench

SAMPLES = Path(__file__).resolve().parent.parent / "eval" / "resources" / "tasks" / "samples" / "mt_bench_en"


class TwoCalls(MTBench):
    name = "mt_bench_two_calls"
    title = "MT-Bench, judged twice"

    def calls(self, spec):
        return ("a", "b")

    def judge_calls(self, task, item, turn, answers, profile):
        [call] = super().judge_calls(task, item, turn, answers, profile)
        return [replace(call, name="a"), replace(call, name="b", system=f"{call.system or ''}\nA second opinion.")]


KINDS[TwoCalls.name] = TwoCalls()


def task_file(folder: Path, metric: str = TwoCalls.name) -> Path:
    """`two_calls.yaml` in `folder`: MT-Bench EN's sample questions judged by `metric`."""
    path = folder / "two_calls.yaml"
    path.write_text(f"""\
include: [_sample.yaml, _mt_bench.yaml]
name: two_calls
title: MT-Bench (EN), judged twice
column: Judged twice
metric: {metric}
variants:
  sample:
    data:
      format: mt_bench
      questions: {{path: {SAMPLES / 'question.jsonl'}}}
      references: {{path: {SAMPLES / 'reference.jsonl'}}}
""", encoding="utf-8")
    return path
