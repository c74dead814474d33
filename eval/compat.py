"""Compatibility profiles: every behaviour in which the harness could differ from llm-jp-judge v2.0.0, in one
named object chosen by `compat:` in the run config.

`llm-jp-judge-2.0.0` (the default) does what upstream v2.0.0 does, as recorded in its golden capture: the requests,
the re-asks and the scores. `strict` is the harness's own reading of what the benchmarks mean (plain-text prompts,
stripped answers, scales enforced, truncated answers never judged as answers); its numbers are not the model card's.
Everything that reads a profile takes the `Profile` object; nothing else decides these behaviours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .records import NoAnswer
from .statuses import GenerationStatus

GptOssRenderer = Literal["harmony_encoder", "chat_template"]


@dataclass(frozen=True)
class Profile:
    name: ProfileName
    # answers: what the judge and the next turn see
    strip_answers: bool  # strip leading/trailing whitespace of an answer
    no_answer: NoAnswer  # a generation that is not `ok`, unless the task sets generation.no_answer:
    #   judge_as_is = whatever content came back (partial text when cut off, None when there was none)
    #   judge_empty = an empty answer; exclude = not judged
    # prompts
    list_repr_prompts: bool  # quality/safety templates filled with one-element list reprs (['…'], [None])
    # request parameters
    per_request_seeds: bool  # each generation request gets a seed hashed from its slot (else the round's seed)
    judge_seed_always: bool  # send the round's seed to judges whose task sets none (upstream: MT-Bench gets none)
    generation_bad_request_retries: int  # an HTTP 400 to an OpenAI-compatible generator is sent again this often
    # judge replies
    score_range_check: bool  # a match outside the template's scale is no score (upstream: the regex alone decides)
    judge_finish_reason_ignored: bool  # a judge reply's finish_reason (length, content_filter) is ignored: its text is parsed
    bad_request_is_attempt: bool  # an HTTP 400 from the judge uses up one ask instead of ending the judgment
    fastchat_semantics: bool  # FastChat prompt sets: [[x]] then [x], no range check, no re-ask
    # prompts of the local engines
    gpt_oss_renderer: GptOssRenderer  # gpt-oss prompts: "harmony_encoder" = as vLLM's OpenAI server (upstream's
    #   route) renders them with openai-harmony; "chat_template" = the model's Jinja template


UPSTREAM = Profile(
    name="llm-jp-judge-2.0.0", strip_answers=False, no_answer="judge_as_is", list_repr_prompts=True,
    per_request_seeds=False, judge_seed_always=False, generation_bad_request_retries=3, score_range_check=False,
    judge_finish_reason_ignored=True, bad_request_is_attempt=True, fastchat_semantics=True,
    gpt_oss_renderer="harmony_encoder",
)

STRICT = Profile(
    name="strict", strip_answers=True, no_answer="judge_empty", list_repr_prompts=False,
    per_request_seeds=True, judge_seed_always=True, generation_bad_request_retries=0, score_range_check=True,
    judge_finish_reason_ignored=False, bad_request_is_attempt=False,
    fastchat_semantics=False, gpt_oss_renderer="chat_template",
)

PROFILES = {p.name: p for p in (UPSTREAM, STRICT)}
ProfileName = Literal["llm-jp-judge-2.0.0", "strict"]
DEFAULT = UPSTREAM.name


def profile(name: ProfileName) -> Profile:
    return PROFILES[name]


def answer_for(profile: Profile, status: str, final: str | None, no_answer: NoAnswer | None = None) -> str | None:
    """What the judge (and the next turn's history) sees for one generation: None only under judge_as_is."""
    policy = no_answer or profile.no_answer
    if status != GenerationStatus.OK and policy != "judge_as_is":
        return ""
    if final is None:
        return None
    return final.strip() if profile.strip_answers else final
