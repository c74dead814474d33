"""From stored generations to judge requests, per metric kind — the part of llm-jp-judge's evaluators that
chooses the template, fills it, and picks the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..records import Generation, Slot, content_key
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


@dataclass(frozen=True)
class Excluded:
    """No answer to judge (truncated / no final channel) and the task's policy is to exclude it."""

    slot: Slot
    generation_key: str
    reason: str


def answer_text(gen: Generation) -> str | None:
    """What the judge sees as the answer: the final text, or "" when there is none (policy judge_empty)."""
    return gen.final if gen.status == "ok" and gen.final is not None else ""


def judge_params(task: Task, cfg: RunConfig, round_: int) -> dict[str, Any]:
    j = task.spec.judge
    base_seed = j.seed if j.seed is not None else cfg.seed
    return {"temperature": j.temperature, "top_p": j.top_p, "max_tokens": j.max_tokens,
            "seed": base_seed + round_ - 1, "reasoning_effort": cfg.judge.reasoning_effort}


def build_request(task: Task, item: Item, turn: int, gens: list[Generation], cfg: RunConfig) -> JudgeRequest | Excluded:
    """`gens` are this item's generations for turns 1..turn of one round."""
    spec = task.spec
    own = gens[turn - 1]
    slot = own.slot
    if own.status != "ok" and spec.generation.no_answer == "exclude":
        return Excluded(slot, own.key, f"generation {own.status}")
    answers = [answer_text(g) for g in gens]
    legacy = spec.judge.legacy_list_repr
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
        parser = Parser("single", template.regex, 1, 10)
        legacy = False  # upstream fills MT-Bench templates with plain strings
    elif spec.metric == "safety":
        name = "with_ref" if spec.judge.use_reference else "wo_ref"
        fields = {"question": item.turns[0], "response": answers[0]}
        if spec.judge.use_reference:
            fields["reference"] = (item.references or ("",))[0]
        template = task.prompts.get(name)
        system = task.judge_system_prompt if task.judge_system_prompt is not None else template.system_prompt
        parser = Parser("single", template.regex, 1, 5)
    else:
        name = "default"
        fields = {"question": item.turns[0], "response": answers[0]}
        template = task.prompts.get(name)
        system = task.judge_system_prompt if task.judge_system_prompt is not None else template.system_prompt
        parser = Parser("criteria", template.regex, 1, 5, template.criteria or ())
    prompt = template.render(legacy_list_repr=legacy, **fields)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": prompt}]
    params = judge_params(task, cfg, slot.round)
    key = content_key("judgment", cfg.judge.model, params, slot.round, name, messages)
    return JudgeRequest(slot, key, own.key, name, task.prompts.sha256, messages, params, parser,
                        spec.judge.parse_retries, spec.judge.api_error_score)
