"""From stored generations to judge requests, one per judge call the slot needs: the task's no-answer policy, then
the metric kind's calls — template, fields and parser of each (`eval/kinds/`) — then the messages, sampling
parameters and key every kind shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..compat import Profile, answer_for
from ..config import RunConfig
from ..kinds import kind
from ..records import SINGLE_CALL, CallSlot, Generation, Slot, content_key
from ..statuses import GenerationStatus
from ..tasks import Item, Task
from .parsing import Parser, VerdictParser


@dataclass(frozen=True)
class JudgeRequest:
    slot: Slot
    key: str
    generation_key: str
    prompt_name: str
    prompt_hash: str
    messages: list[dict[str, str]]
    params: dict[str, Any]
    parser: Parser | VerdictParser
    parse_retries: int
    api_error_score: float | None
    call: str = SINGLE_CALL  # which of the slot's judge calls

    @property
    def place(self) -> CallSlot:
        """Where its judgment is stored."""
        return CallSlot.of(self.slot, self.call)

    def rules(self, profile: Profile) -> str:
        """A hash of how a reply to this request becomes a judgment: the parser, the asks, the profile's rules."""
        return content_key("parse-rules", asdict(self.parser), self.parse_retries, asdict(profile))


@dataclass(frozen=True)
class Excluded:
    """No answer to judge (truncated / no final channel / error) and the task's policy is to exclude it: one per judge
    call of the slot, each stored as an `excluded` judgment."""

    slot: Slot
    generation_key: str
    reason: str
    call: str = SINGLE_CALL

    @property
    def place(self) -> CallSlot:
        return CallSlot.of(self.slot, self.call)


def judge_params(task: Task, cfg: RunConfig, round_: int) -> dict[str, Any]:
    """Sampling parameters of the judge request; round r sends the task's (or run's) seed + r − 1."""
    j = task.spec.judge
    base_seed = j.seed if j.seed is not None else cfg.seed if cfg.profile.judge_seed_always else None
    return {"temperature": j.temperature, "top_p": j.top_p, "frequency_penalty": j.frequency_penalty,
            "max_tokens": j.max_tokens, "seed": None if base_seed is None else base_seed + round_ - 1,
            "reasoning_effort": cfg.judge.reasoning_effort}


def build_requests(task: Task, item: Item, turn: int, gens: list[Generation],
                   cfg: RunConfig) -> list[JudgeRequest] | list[Excluded]:
    """The requests of a slot's judge calls, in the kind's order; `gens` are this item's generations for turns
    1..turn of one round (for a pairwise task, compared with the other run's of the same slots: `Task.opponent`)."""
    spec = task.spec
    profile = cfg.profile
    own = gens[turn - 1]
    slot = own.slot
    metric = kind(spec.metric)
    no_answer = spec.generation.no_answer or profile.no_answer
    theirs = _opponent(task, slot, turn) if metric.compares else []
    judged = [("generation", own)] + [("the other run's generation", g) for g in theirs[turn - 1:]]
    failed = [f"{whose} {g.status}" for whose, g in judged if g.status != GenerationStatus.OK]
    if failed and no_answer == "exclude":
        return [Excluded(slot, own.key, "; ".join(failed), call) for call in metric.calls(spec)]
    answers = [answer_for(profile, g.status, g.final, no_answer) for g in gens]
    if metric.compares:
        their_answers = [answer_for(profile, g.status, g.final, no_answer) for g in theirs]
        calls = metric.pair_calls(task, item, turn, answers, their_answers, profile)
    else:
        calls = metric.judge_calls(task, item, turn, answers, profile)
    params = judge_params(task, cfg, slot.round)
    requests = []
    for call in calls:
        parser, parse_retries = metric.parser(task, call.template, profile)
        prompt = call.template.render(list_repr=call.list_repr, **call.fields)
        messages = ([{"role": "system", "content": call.system}] if call.system is not None else []) + \
                   [{"role": "user", "content": prompt}]
        key = content_key("judgment", cfg.judge.model, params, slot.round, call.prompt_name, messages)
        requests.append(JudgeRequest(slot, key, own.key, call.prompt_name, task.prompts.sha256, messages, params, parser,
                                     parse_retries, spec.judge.api_error_score, call.name))
    if [r.call for r in requests] != list(metric.calls(spec)):
        raise AssertionError(f"kind {metric.name}: judge_calls made {[r.call for r in requests]}, calls says "
                             f"{list(metric.calls(spec))}")
    return requests


def _opponent(task: Task, slot: Slot, turn: int) -> list[Generation]:
    """The other run's generations of turns 1..turn of the slot's conversation (one it lacks: a failed answer)."""
    if task.opponent is None:
        raise AssertionError(f"task {task.name}: a pairwise task without the answers to compare with")
    gens = []
    for t in range(1, turn + 1):
        place = Slot(slot.round, slot.task, slot.item_id, t)
        gens.append(task.opponent.get(place) or Generation(
            key="", round=place.round, seed=0, task=place.task, item_id=place.item_id, turn=t, messages=[],
            messages_hash="", prompt_hash=None, raw="", final=None, reasoning="", status=GenerationStatus.ERROR,
            finish_reason=None, tokens_in=None, tokens_out=None, seconds=0.0, error="no answer in the other run"))
    return gens
