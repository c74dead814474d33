"""From stored generations to judge requests: the task's no-answer policy, then the metric kind's template, fields
and parser (`eval/kinds/`), then the messages, sampling parameters and key every kind shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..compat import Profile, answer_for
from ..config import RunConfig
from ..kinds import kind
from ..records import Generation, Slot, content_key
from ..statuses import GenerationStatus
from ..tasks import Item, Task
from .parsing import Parser


@dataclass(frozen=True)
class JudgeRequest:
    slot: Slot
    key: str
    generation_key: str
    prompt_name: str
    prompt_hash: str
    messages: list[dict[str, str]]
    params: dict[str, Any]
    parser: Parser
    parse_retries: int
    api_error_score: float | None

    def rules(self, profile: Profile) -> str:
        """A hash of how a reply to this request becomes a judgment: the parser, the asks, the profile's rules."""
        return content_key("parse-rules", asdict(self.parser), self.parse_retries, asdict(profile))


@dataclass(frozen=True)
class Excluded:
    """No answer to judge (truncated / no final channel / error) and the task's policy is to exclude it."""

    slot: Slot
    generation_key: str
    reason: str


def judge_params(task: Task, cfg: RunConfig, round_: int) -> dict[str, Any]:
    """Sampling parameters of the judge request; round r sends the task's (or run's) seed + r − 1."""
    j = task.spec.judge
    base_seed = j.seed if j.seed is not None else cfg.seed if cfg.profile.judge_seed_always else None
    return {"temperature": j.temperature, "top_p": j.top_p, "frequency_penalty": j.frequency_penalty,
            "max_tokens": j.max_tokens, "seed": None if base_seed is None else base_seed + round_ - 1,
            "reasoning_effort": cfg.judge.reasoning_effort}


def build_request(task: Task, item: Item, turn: int, gens: list[Generation], cfg: RunConfig) -> JudgeRequest | Excluded:
    """`gens` are this item's generations for turns 1..turn of one round."""
    spec = task.spec
    profile = cfg.profile
    own = gens[turn - 1]
    slot = own.slot
    no_answer = spec.generation.no_answer or profile.no_answer
    if own.status != GenerationStatus.OK and no_answer == "exclude":
        return Excluded(slot, own.key, f"generation {own.status}")
    answers = [answer_for(profile, g.status, g.final, no_answer) for g in gens]
    metric = kind(spec.metric)
    call = metric.judge_call(task, item, turn, answers, profile)
    parser, parse_retries = metric.parser(task, call.template, profile)
    prompt = call.template.render(list_repr=call.list_repr, **call.fields)
    messages = ([{"role": "system", "content": call.system}] if call.system is not None else []) + \
               [{"role": "user", "content": prompt}]
    params = judge_params(task, cfg, slot.round)
    key = content_key("judgment", cfg.judge.model, params, slot.round, call.name, messages)
    return JudgeRequest(slot, key, own.key, call.name, task.prompts.sha256, messages, params, parser, parse_retries,
                        spec.judge.api_error_score)
