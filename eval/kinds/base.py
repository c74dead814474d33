"""What a metric kind is: the one unit that knows how a benchmark of its kind is judged and counted.

A kind says which judge calls a slot needs (one by default; a pairwise comparison in both orders, or a panel of
judges, needs several), chooses and fills the judge template of each, gives the parser and its re-asks, turns a
slot's judgments into the observations its metrics average (`aggregate`: by default the mean of its calls' values),
names the rows of its detail table, says which plot shows it by default, and writes a mock judge's reply in the
format its parser reads. Everything generic — the judge request around the template, statistics over rounds and
questions, the tables and plots themselves — lives outside the kinds.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..compat import Profile
from ..judge.parsing import Parser, VerdictParser
from ..judge.prompts import FASTCHAT_FALLBACK_REGEX, Template
from ..records import SINGLE_CALL, Plot, TaskRules
from ..statuses import is_valid

if TYPE_CHECKING:
    from ..config import MockSettings
    from ..results import TaskResult
    from ..tasks import Item, Task, TaskSpec


@dataclass(frozen=True)
class JudgeCall:
    """One judge call as the kind decides it: which template, filled with what, sent with which system prompt."""

    prompt_name: str  # the template's name in the prompt set (recorded as the judgment's prompt_name, part of its key)
    template: Template
    fields: dict[str, str | None]
    system: str | None
    list_repr: bool  # llm-jp-judge fills quality/safety templates with one-element lists (profile dependent)
    name: str = SINGLE_CALL  # the call's name among its slot's calls (`MetricKind.calls`): where its judgment is stored


@dataclass(frozen=True)
class CallResult:
    """What one judge call of a slot gave, as `MetricKind.aggregate` reads it."""

    call: str
    status: str
    scores: dict[str, float]


class MetricKind:
    name: ClassVar[str]
    title: ClassVar[str]  # for messages
    scale: ClassVar[tuple[int, int]]
    plot: ClassVar[Plot | None] = None  # the plot that shows a task of this kind, unless its file names another
    needs_criteria: ClassVar[bool] = False  # the prompt set must list criteria (`metrics:`)
    templates_carry_system_prompt: ClassVar[bool] = False  # a task's judge_system_prompt would be ignored
    rate_metrics: ClassVar[tuple[str, ...]] = ()  # metrics that are 0/100 indicators, not scores
    compares: ClassVar[bool] = False  # judges a run's answers against another run's (`pair_calls`), not on their own

    def templates(self, spec: TaskSpec) -> dict[str, set[str]]:
        """The templates a task of this kind needs: name → the placeholders it fills."""
        raise NotImplementedError

    def calls(self, spec: TaskSpec) -> tuple[str, ...]:
        """The judge calls each slot of a task needs, by name (where their judgments are stored): one by default."""
        return (SINGLE_CALL,)

    def judge_calls(self, task: Task, item: Item, turn: int, answers: list[str | None],
                    profile: Profile) -> list[JudgeCall]:
        """One call per name of `calls(task.spec)`, in that order; `answers` are what the judge sees of turns 1..turn
        of one round."""
        raise NotImplementedError

    def pair_calls(self, task: Task, item: Item, turn: int, ours: list[str | None], theirs: list[str | None],
                   profile: Profile) -> list[JudgeCall]:
        """For a kind that `compares`: the calls of one slot given both runs' answers of turns 1..turn of one round."""
        raise NotImplementedError(f"{self.name} judges one run's answers on their own")

    def parser(self, task: Task, template: Template, profile: Profile) -> tuple[Parser | VerdictParser, int]:
        """The score parser and the number of re-asks: the prompt set's own semantics under the upstream profile
        (FastChat: `[[x]]` then `[x]`, no range check, never re-asks), the harness's under strict."""
        fastchat = task.prompts.format == "fastchat" and profile.fastchat_semantics
        parser = Parser("single", template.regex, *self.scale, check_range=profile.score_range_check,
                        fallback_regex=FASTCHAT_FALLBACK_REGEX if fastchat else None)
        return parser, 0 if fastchat else task.spec.judge.parse_retries

    def aggregate(self, rules: TaskRules, judgments: list[CallResult], turn: int,
                  category: str | None) -> list[tuple[str, float]]:
        """The (metric, value) observations of one slot from the judgments of its calls: by default each metric's mean
        over the calls whose judgment gives it (`values`); none when no judgment gives any."""
        if len(judgments) == 1:
            return self.values(rules, judgments[0].status, judgments[0].scores, turn, category)
        gathered: dict[str, list[float]] = {}
        for judgment in judgments:
            for metric, value in self.values(rules, judgment.status, judgment.scores, turn, category):
                gathered.setdefault(metric, []).append(value)
        return [(metric, sum(values) / len(values)) for metric, values in gathered.items()]

    def values(self, rules: TaskRules, status: str, scores: dict[str, float], turn: int,
               category: str | None) -> list[tuple[str, float]]:
        """The (metric, value) observations of one judgment; none for a judgment that enters no mean."""
        return self.scored(rules, scores, turn, category) if is_valid(status) else []

    def scored(self, rules: TaskRules, scores: dict[str, float], turn: int, category: str | None) -> list[tuple[str, float]]:
        raise NotImplementedError

    def compared_metrics(self, rules: TaskRules) -> list[str]:
        """The metrics `agree` compares one by one, in reading order."""
        return ["score"]

    def detail_rows(self, entry: TaskResult) -> list[tuple[str, str]]:
        """(label, metric name) rows of the task's detail table, from its summary entry."""
        raise NotImplementedError

    def mock_reply(self, template: Template | None, prompt: str, draw: int, settings: MockSettings) -> str:
        """A judge reply that this kind's parser reads for `prompt`, rendered from `template` (None: a prompt on this
        kind's scale that no known template rendered): the score is a function of `draw`, plus the settings'
        `score_shift` clipped to the scale (a second judge that differs from the first by a known rule)."""
        return f"This is a mock judgment. Rating: [[{self._mock_score(draw, settings.score_shift)}]]"

    def _mock_score(self, draw: int, shift: int) -> int:
        low, high = self.scale
        return min(high, max(low, low + draw % (high - low + 1) + shift))


def literal_pieces(template: Template) -> list[str]:
    """The template's own text between its placeholders: what every prompt rendered from it contains, in order."""
    return [text for text, _, _, _ in string.Formatter().parse(template.text) if text]


def renders(template: Template, prompt: str) -> bool:
    """Whether `prompt` could have been rendered from `template` (its literal pieces appear in it, in order)."""
    start = 0
    for piece in literal_pieces(template):
        found = prompt.find(piece, start)
        if found < 0:
            return False
        start = found + len(piece)
    return True
