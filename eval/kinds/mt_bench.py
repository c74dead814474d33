"""MT-Bench (llm-jp-judge's `mt_bench` evaluator, FastChat single-answer grading): one 1–10 score per turn.

Turn 1 is judged on its own, turn 2 with the whole conversation; questions of the task's reference categories use
the `-math-` templates with the reference answers. The templates are filled with the plain strings. `score` is the
mean over the valid judgments of both turns (micro); `turn1`, `turn2` and `category:<c>` split it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compat import Profile
from .base import JudgeCall, MetricKind, TaskRules

if TYPE_CHECKING:
    from ..results import TaskResult
    from ..tasks import Item, Task, TaskSpec

FIELDS = {
    "single-v1": {"question", "answer"},
    "single-math-v1": {"question", "answer", "ref_answer_1"},
    "single-v1-multi-turn": {"question_1", "answer_1", "question_2", "answer_2"},
    "single-math-v1-multi-turn": {"question_1", "answer_1", "question_2", "answer_2", "ref_answer_1", "ref_answer_2"},
}


class MTBench(MetricKind):
    name = "mt_bench"
    title = "MT-Bench"
    templates_carry_system_prompt = True
    scale = (1, 10)
    plot = "categories"

    def templates(self, spec: TaskSpec) -> dict[str, set[str]]:
        names = ["single-v1"] + (["single-v1-multi-turn"] if spec.turns > 1 else [])
        if spec.judge.reference_categories:
            names += ["single-math-v1"] + (["single-math-v1-multi-turn"] if spec.turns > 1 else [])
        return {n: FIELDS[n] for n in names}

    def judge_calls(self, task: Task, item: Item, turn: int, answers: list[str | None],
                    profile: Profile) -> list[JudgeCall]:
        refs = item.references
        fields: dict[str, str | None]
        if turn == 1:
            name = "single-math-v1" if refs else "single-v1"
            fields = {"question": item.turns[0], "answer": answers[0]}
            if refs:
                fields["ref_answer_1"] = refs[0]
        else:
            name = "single-math-v1-multi-turn" if refs else "single-v1-multi-turn"
            fields = {"question_1": item.turns[0], "answer_1": answers[0], "question_2": item.turns[1],
                      "answer_2": answers[1]}
            if refs:
                fields.update(ref_answer_1=refs[0], ref_answer_2=refs[1])
        template = task.prompts.get(name)
        # Each template carries its own system prompt (a task's judge_system_prompt is refused for this kind).
        return [JudgeCall(name, template, fields, template.system_prompt, list_repr=False)]

    def scored(self, rules: TaskRules, scores: dict[str, float], turn: int, category: str | None) -> list[tuple[str, float]]:
        score = scores["score"]
        return [("score", score), (f"turn{turn}", score)] + ([(f"category:{category}", score)] if category else [])

    def compared_metrics(self, rules: TaskRules) -> list[str]:
        return ["score", "turn1", "turn2"]

    def detail_rows(self, entry: TaskResult) -> list[tuple[str, str]]:
        categories = sorted(m for m in entry.metrics if m.startswith("category:"))
        return [("average", "score"), ("turn 1", "turn1"), ("turn 2", "turn2")] + \
               [(m.split(":", 1)[1], m) for m in categories]
