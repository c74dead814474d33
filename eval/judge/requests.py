"""From stored generations to judge requests, per metric kind — the part of llm-jp-judge's evaluators that
chooses the template, fills it, and picks the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..compat import Profile, answer_for
from ..config import RunConfig
from ..records import Generation, Slot, content_key
from ..tasks import Item, Task
from .parsing import Parser
from .prompts import FASTCHAT_FALLBACK_REGEX, Template


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
    if own.status != "ok" and no_answer == "exclude":
        return Excluded(slot, own.key, f"generation {own.status}")
    answers = [answer_for(profile, g.status, g.final, no_answer) for g in gens]
    list_repr = False  # upstream fills MT-Bench templates with the plain strings
    if spec.metric == "mt_bench":
        refs = item.references
        if turn == 1:
            name = "single-math-v1" if refs else "single-v1"
            fields = {"question": item.turns[0], "answer": answers[0]}
            if refs:
                fields["ref_answer_1"] = refs[0]
        else:
            name = "single-math-v1-multi-turn" if refs else "single-v1-multi-turn"
            fields = {"question_1": item.turns[0], "answer_1": answers[0], "question_2": item.turns[1], "answer_2": answers[1]}
            if refs:
                fields.update(ref_answer_1=refs[0], ref_answer_2=refs[1])
        template = task.prompts.get(name)
        system = template.system_prompt
        scale = (1, 10)
    elif spec.metric == "safety":
        name = "with_ref" if spec.judge.use_reference else "wo_ref"
        fields = {"question": item.turns[0], "response": answers[0]}
        if spec.judge.use_reference:
            fields["reference"] = (item.references or ("",))[0]
        template = task.prompts.get(name)
        system = task.judge_system_prompt if task.judge_system_prompt is not None else template.system_prompt
        scale, list_repr = (1, 5), profile.list_repr_prompts
    else:
        name = "default"
        fields = {"question": item.turns[0], "response": answers[0]}
        template = task.prompts.get(name)
        system = task.judge_system_prompt if task.judge_system_prompt is not None else template.system_prompt
        scale, list_repr = (1, 5), profile.list_repr_prompts
    parser, parse_retries = _parser(task, template, scale, profile)
    prompt = template.render(list_repr=list_repr, **fields)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": prompt}]
    params = judge_params(task, cfg, slot.round)
    key = content_key("judgment", cfg.judge.model, params, slot.round, name, messages)
    return JudgeRequest(slot, key, own.key, name, task.prompts.sha256, messages, params, parser, parse_retries,
                        spec.judge.api_error_score)


def _parser(task: Task, template: Template, scale: tuple[int, int], profile: Profile) -> tuple[Parser, int]:
    """The score parser and the number of re-asks: the prompt set's own semantics under the upstream profile
    (FastChat: `[[x]]` then `[x]`, no range check, never re-asks), the harness's under strict."""
    retries = task.spec.judge.parse_retries
    if task.spec.metric == "quality":
        return Parser("criteria", template.regex, *scale, template.criteria or ()), retries
    fastchat = task.prompts.format == "fastchat" and profile.fastchat_semantics
    parser = Parser("single", template.regex, *scale, check_range=profile.score_range_check,
                    fallback_regex=FASTCHAT_FALLBACK_REGEX if fastchat else None)
    return parser, 0 if fastchat else retries
