"""Quality (llm-jp-judge's `quality_ja` evaluator, llm-jp-instructions): each criterion of the prompt set's
`metrics` list graded 1–5, every one exactly once (else the reply is asked again).

One metric per criterion, each the mean over the valid judgments; `score` is the task's primary criterion (the
model card's column, 総合評価).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compat import Profile
from ..judge.parsing import Parser
from ..judge.prompts import Template
from .base import JudgeCall, MetricKind, TaskRules

if TYPE_CHECKING:
    from ..config import MockSettings
    from ..results import TaskResult
    from ..tasks import Item, Task, TaskSpec


class Quality(MetricKind):
    name = "quality"
    title = "quality"
    scale = (1, 5)
    needs_criteria = True

    def templates(self, spec: TaskSpec) -> dict[str, set[str]]:
        return {"default": {"question", "response"}}

    def judge_calls(self, task: Task, item: Item, turn: int, answers: list[str | None],
                    profile: Profile) -> list[JudgeCall]:
        template = task.prompts.get("default")
        system = task.judge_system_prompt if task.judge_system_prompt is not None else template.system_prompt
        return [JudgeCall("default", template, {"question": item.turns[0], "response": answers[0]}, system,
                          list_repr=profile.list_repr_prompts)]

    def parser(self, task: Task, template: Template, profile: Profile) -> tuple[Parser, int]:
        return Parser("criteria", template.regex, *self.scale, template.criteria or ()), task.spec.judge.parse_retries

    def scored(self, rules: TaskRules, scores: dict[str, float], turn: int, category: str | None) -> list[tuple[str, float]]:
        rows = list(scores.items())
        if rules.primary_criterion in scores:
            rows.append(("score", scores[rules.primary_criterion]))
        return rows

    def compared_metrics(self, rules: TaskRules) -> list[str]:
        return ["score", *rules.criteria]

    def detail_rows(self, entry: TaskResult) -> list[tuple[str, str]]:
        return [("score (primary)", "score")] + [(c, c) for c in entry.criteria]

    def mock_reply(self, template: Template | None, prompt: str, draw: int, settings: MockSettings) -> str:
        criteria = template.criteria if template is not None else ()
        return "\n\n".join(f"{criterion}(評価理由): モックの採点です。\n{criterion}: [[{self._mock_score(draw >> (3 * i), settings.score_shift)}]]"
                           for i, criterion in enumerate(criteria or ()))
