"""Pairwise (FastChat's `pairwise-baseline`): the judge sees run A's and run B's answers to the same question and
picks the better one, twice — call `ab` with A's answer in position A, call `ba` with the two swapped.

Templates follow FastChat's names and placeholders: `pair-v2` (question, answer_a, answer_b), `pair-math-v1` (and
ref_answer_1) for questions with reference answers, and their `-multi-turn` forms for turn 2 (both turns of both
conversations, focused on the second answer). Each template carries its own system prompt. A verdict is the label
the template's regex captures, read as FastChat reads `[[A]]` / `[[B]]` / `[[C]]` (`parsing.VerdictParser`).

The two orders combine as FastChat's `play_a_match_pair` and `show_result --mode pairwise-baseline` combine them:
a pair with an error in either order is left out; the same winner in both orders is a win, a loss or a tie for A;
different winners are `inconsistent`, which counts as a tie. Observations per pair (each a mean over pairs):
`score` (FastChat's adjusted win rate: win 1, loss 0, tie or inconsistent ½; also per turn and `category:<c>`),
`win_rate`, `loss_rate`, `tie_rate`, `inconsistent_rate` and `consistency` (the verdict did not flip with the order).
"""

from __future__ import annotations

import re
import string
from enum import Enum
from typing import TYPE_CHECKING

from ..compat import Profile
from ..judge.parsing import VerdictParser
from ..judge.prompts import Template
from ..statuses import is_valid
from .base import CallResult, JudgeCall, MetricKind, TaskRules

if TYPE_CHECKING:
    from ..config import MockSettings
    from ..results import TaskResult
    from ..tasks import Item, Task, TaskSpec

SINGLE_TURN = {"pair-v2": {"question", "answer_a", "answer_b"},
               "pair-math-v1": {"question", "ref_answer_1", "answer_a", "answer_b"}}
MULTI_TURN = {"pair-v2-multi-turn": {"question_1", "question_2", "answer_a_1", "answer_b_1", "answer_a_2", "answer_b_2"},
              "pair-math-v1-multi-turn": {"question_1", "question_2", "answer_a_1", "answer_b_1", "answer_a_2",
                                          "answer_b_2", "ref_answer_1", "ref_answer_2"}}
AB, BA = "ab", "ba"  # the calls: run A's answer in position A, then in position B
SHARES = {"a": 1.0, "b": 0.0, "tie": 0.5}  # the share of a verdict that goes to the answer in position A


class Outcome(str, Enum):
    """A pair's result for run A (FastChat: g1 and g2 winners combined)."""

    WIN = "win"
    LOSS = "loss"
    TIE = "tie"
    INCONSISTENT = "inconsistent"


RATES = {Outcome.WIN: "win_rate", Outcome.LOSS: "loss_rate", Outcome.TIE: "tie_rate",
         Outcome.INCONSISTENT: "inconsistent_rate"}


def uses_references(spec: TaskSpec) -> bool:
    """Whether some questions of the task carry reference answers the judge sees (MT-Bench's reference categories,
    a dataset's reference field)."""
    return spec.judge.use_reference and (bool(spec.judge.reference_categories) or
                                         any("reference" in v.data.fields for v in spec.variants.values()))


def _winner(judgment: CallResult | None, ours_in_a: bool) -> str | None:
    """'ours', 'theirs' or 'tie' from one order's judgment; None for an error (no valid verdict)."""
    if judgment is None or not is_valid(judgment.status) or "position_a" not in judgment.scores:
        return None
    share = judgment.scores["position_a"] if ours_in_a else 1.0 - judgment.scores["position_a"]
    return "tie" if share == 0.5 else "ours" if share == 1.0 else "theirs"


def pair_outcome(judgments: list[CallResult]) -> Outcome | None:
    """The pair's outcome for run A from its two calls; None when either order has no verdict (FastChat drops it)."""
    by_call = {j.call: j for j in judgments}
    first, second = _winner(by_call.get(AB), ours_in_a=True), _winner(by_call.get(BA), ours_in_a=False)
    if first is None or second is None:
        return None
    if first != second:
        return Outcome.INCONSISTENT
    return {"ours": Outcome.WIN, "theirs": Outcome.LOSS, "tie": Outcome.TIE}[first]


def adjusted(outcome: Outcome) -> float:
    """FastChat's adjusted win: a tie (an inconsistent pair included) is half a win."""
    return {Outcome.WIN: 1.0, Outcome.LOSS: 0.0}.get(outcome, 0.5)


class Pairwise(MetricKind):
    name = "pairwise"
    title = "pairwise"
    scale = (0, 1)
    plot = "none"
    compares = True
    templates_carry_system_prompt = False  # the task's judge_system_prompt (for its own kind) is not refused, not used

    def templates(self, spec: TaskSpec) -> dict[str, set[str]]:
        names = dict(SINGLE_TURN) | (dict(MULTI_TURN) if spec.turns > 1 else {})
        return {name: fields for name, fields in names.items() if uses_references(spec) or "math" not in name}

    def calls(self, spec: TaskSpec) -> tuple[str, ...]:
        return (AB, BA)

    def judge_calls(self, task: Task, item: Item, turn: int, answers: list[str | None],
                    profile: Profile) -> list[JudgeCall]:
        raise NotImplementedError("a pairwise task judges two runs' answers: pair_calls")

    def pair_calls(self, task: Task, item: Item, turn: int, ours: list[str | None], theirs: list[str | None],
                   profile: Profile) -> list[JudgeCall]:
        refs = item.references if task.spec.judge.use_reference else None
        name = ("pair-math-v1" if refs else "pair-v2") + ("-multi-turn" if turn > 1 else "")
        template = task.prompts.get(name)
        calls = []
        for call, (a, b) in ((AB, (ours, theirs)), (BA, (theirs, ours))):
            fields: dict[str, str | None]
            if turn == 1:
                fields = {"question": item.turns[0], "answer_a": a[0], "answer_b": b[0]}
            else:
                fields = {"question_1": item.turns[0], "question_2": item.turns[1], "answer_a_1": a[0],
                          "answer_b_1": b[0], "answer_a_2": a[1], "answer_b_2": b[1]}
            if refs:
                fields.update({f"ref_answer_{t}": refs[t - 1] for t in range(1, turn + 1)})
            calls.append(JudgeCall(name, template, fields, template.system_prompt, list_repr=False, name=call))
        return calls

    def parser(self, task: Task, template: Template, profile: Profile) -> tuple[VerdictParser, int]:
        labels = task.spec.judge.verdict_labels
        fastchat = task.prompts.format == "fastchat" and profile.fastchat_semantics
        parser = VerdictParser(template.regex, ((labels.a, SHARES["a"]), (labels.b, SHARES["b"]), (labels.tie, SHARES["tie"])),
                               single=not profile.fastchat_semantics)
        return parser, 0 if fastchat else task.spec.judge.parse_retries

    def aggregate(self, rules: TaskRules, judgments: list[CallResult], turn: int,
                  category: str | None) -> list[tuple[str, float]]:
        outcome = pair_outcome(judgments)
        if outcome is None:
            return []
        score = adjusted(outcome)
        rows = [("score", score), (f"turn{turn}", score)] + ([(f"category:{category}", score)] if category else [])
        rows += [(metric, float(outcome == kind)) for kind, metric in RATES.items()]
        return rows + [("consistency", float(outcome != Outcome.INCONSISTENT))]

    def scored(self, rules: TaskRules, scores: dict[str, float], turn: int, category: str | None) -> list[tuple[str, float]]:
        raise NotImplementedError("a pair's observations come from both its calls: aggregate")

    def compared_metrics(self, rules: TaskRules) -> list[str]:
        return ["score", "consistency"]

    def detail_rows(self, entry: TaskResult) -> list[tuple[str, str]]:
        categories = sorted(m for m in entry.metrics if m.startswith("category:"))
        return [("adjusted win rate", "score"), ("win rate", "win_rate"), ("loss rate", "loss_rate"),
                ("position consistency", "consistency")] + [(m.split(":", 1)[1], m) for m in categories]

    def mock_reply(self, template: Template | None, prompt: str, draw: int, settings: MockSettings) -> str:
        """FastChat's verdict labels, chosen by the settings' `pairwise_rule` from the answers of the turn judged
        (read back out of the prompt through the template)."""
        answers = _filled(template, prompt) if template is not None else None
        rule = settings.pairwise_rule
        if rule == "position_a":
            choice = "A"
        elif rule == "longer" and answers is not None:
            a, b = (answers.get("answer_a_2", answers.get("answer_a", "")), answers.get("answer_b_2", answers.get("answer_b", "")))
            choice = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "C"
        else:
            choice = "ABC"[draw % 3]
        return f"This is a mock comparison. [[{choice}]]"


def _filled(template: Template, prompt: str) -> dict[str, str] | None:
    """The values `template` was filled with to end `prompt` (its placeholders matched lazily, a repeated one as the
    same text), or None when it was not rendered from it."""
    pattern, seen = "", set()
    for literal, field, _, _ in string.Formatter().parse(template.text):
        pattern += re.escape(literal)
        if field:
            pattern += f"(?P={field})" if field in seen else f"(?P<{field}>.*?)"
            seen.add(field)
    match = re.search(pattern + r"\Z", prompt, re.DOTALL)
    return match.groupdict() if match else None
