"""The resume rules: what a slot of the plan still needs under a config, judged from what the store holds. The run
(`pipeline.py`) and the dry-run estimate (`estimate.py`) both ask here, so they cannot disagree.

Every check is pure (it reads the store, never writes it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .backends.base import Backend, GenerationRequest, Sampling, request_seed
from .chat import turn_messages
from .compat import answer_for
from .config import RunConfig
from .judge.requests import Excluded, JudgeRequest, build_requests
from .kinds import kind
from .records import CallSlot, Generation, Judgment, Slot, content_key
from .run_meta import IDENTITY
from .statuses import GenerationStatus as G
from .statuses import JudgmentStatus as J
from .statuses import is_transient
from .store import Store
from .tasks import Task


def plan_slots(tasks: dict[str, Task], rounds: int) -> list[tuple[Slot, str | None]]:
    return [(Slot(r, t.name, item.item_id, turn), item.category)
            for t in tasks.values() for r in range(1, rounds + 1) for item in t.items for turn in range(1, len(item.turns) + 1)]


@dataclass
class JudgeState:
    """Where the judgments of a slot stand: `calls` are the judge calls it needs, by name; `requests` what judging
    them takes now, one per call (None while an answer it needs is not stored); `stored` the judgments the store
    holds, by call."""
    calls: tuple[str, ...]
    requests: list[JudgeRequest] | list[Excluded] | None
    stored: dict[str, Judgment]

    def stands(self, request: JudgeRequest | Excluded) -> bool:
        """The call's stored judgment is final and judged exactly this request (same answers, prompt and judge
        settings)."""
        stored = self.stored.get(request.call)
        if stored is None:
            return False
        if isinstance(request, Excluded):
            return stored.status == J.EXCLUDED and stored.generation_key == request.generation_key
        return not is_transient(stored) and stored.key == request.key

    @property
    def unjudged(self) -> list[JudgeRequest | Excluded]:
        """The requests whose judgment does not stand (none while the requests cannot be made)."""
        return [r for r in self.requests or () if not self.stands(r)]

    @property
    def pending(self) -> list[str]:
        """The calls without a standing judgment (all of them while the requests cannot be made)."""
        if self.requests is None:
            return list(self.calls)
        return [r.call for r in self.unjudged]

    @property
    def judged(self) -> bool:
        return not self.pending

    @property
    def relinked(self) -> list[Judgment]:
        """Standing judgments recorded against an earlier generation that came out identical (a regenerated answer
        leaves the judge's input unchanged: the judgment stands and is linked to the new generation, not paid again),
        as they are to be stored now."""
        return [replace(self.stored[r.call], generation_key=r.generation_key) for r in self.requests or ()
                if self.stands(r) and self.stored[r.call].generation_key != r.generation_key]

    @property
    def stale(self) -> list[str]:
        """Stored calls the slot no longer needs (its task's calls changed)."""
        return [call for call in self.stored if call not in self.calls]


class ResumeRules:
    """`store` None: nothing is stored yet (a dry run of a new run directory). `backend` is needed only to check the
    stored generations' keys (its identity and prompt hash)."""

    def __init__(self, cfg: RunConfig, tasks: dict[str, Task], store: Store | None, backend: Backend | None):
        self.cfg, self.tasks, self.store, self.backend = cfg, tasks, store, backend
        self.plan = plan_slots(tasks, cfg.rounds)

    def request(self, slot: Slot) -> GenerationRequest | None:
        """The generation request for a slot, or None while an earlier turn of its conversation is not stored yet."""
        task = self.tasks[slot.task]
        item = task.item(slot.item_id)
        previous = []
        for turn in range(1, slot.turn):
            gen = self.store.generation(Slot(slot.round, slot.task, slot.item_id, turn)) if self.store else None
            if gen is None:
                return None
            previous.append(answer_for(self.cfg.profile, gen.status, gen.final, task.spec.generation.no_answer))
        spec = task.spec
        system = task.system_prompt if spec.generation.use_system_prompt else None
        messages = turn_messages(system, item.turns[: slot.turn], previous)
        if self.cfg.generation.greedy:  # every task, every category: the most likely token, no nucleus
            temperature, top_p = 0.0, None
        else:
            temperature, top_p = spec.temperature_for(item.category), spec.generation.top_p
        sampling = Sampling(temperature, top_p, self.cfg.generation.max_new_tokens, spec.generation.frequency_penalty)
        round_seed = self.cfg.seed + slot.round - 1  # round 1 = upstream's seed 1234
        seed = request_seed(round_seed, slot) if self.cfg.profile.per_request_seeds else round_seed
        return GenerationRequest(slot, messages, sampling, seed)

    def generation_key(self, request: GenerationRequest) -> str:
        assert self.backend is not None, "checking stored generations needs the backend's identity"
        return content_key("generation", self.backend.identity(), request.messages, self.backend.prompt_hash(request.messages),
                           request.sampling.__dict__, request.seed, request.slot.round, request.slot.task,
                           request.slot.item_id, request.slot.turn)

    def is_stored(self, slot: Slot, to_judge: bool = False) -> bool:
        """The slot holds a final generation made from exactly the request this config would send.

        With `to_judge`, a failed generation counts too where its task judges answers as they came back (upstream
        judges a failed call's missing answer as None); it is still generated again by the next run."""
        stored = self.store.generation(slot) if self.store else None
        if stored is None:
            return False
        if is_transient(stored) and not (to_judge and self._judged_as_is(slot.task)):
            return False
        request = self.request(slot)
        return request is not None and stored.key == self.generation_key(request)

    def _judged_as_is(self, task: str) -> bool:
        return (self.tasks[task].spec.generation.no_answer or self.cfg.profile.no_answer) == "judge_as_is"

    def judge_state(self, slot: Slot, generating: bool = False) -> JudgeState:
        """`generating`: this run is still generating, so a slot waits for every answer of its conversation that is
        to be generated again — a failed answer is judged as it came back only once it failed for good in this run
        (or generation stopped), never just before its new answer arrives."""
        spec = self.tasks[slot.task].spec
        stored = self.store.judgments(slot) if self.store else {}
        return JudgeState(kind(spec.metric).calls(spec), self._judge_requests(slot, generating), stored)

    def _judge_requests(self, slot: Slot, generating: bool) -> list[JudgeRequest] | list[Excluded] | None:
        task = self.tasks[slot.task]
        gens: list[Generation] = []
        for turn in range(1, slot.turn + 1):
            earlier = Slot(slot.round, slot.task, slot.item_id, turn)
            if not self.is_stored(earlier, to_judge=not generating):
                return None
            gen = self.store.generation(earlier) if self.store else None
            assert gen is not None  # is_stored found it
            gens.append(gen)
        return build_requests(task, task.item(slot.item_id), slot.turn, gens, self.cfg)

    def superseded_by(self, gen: Generation) -> list[Slot]:
        """The slots whose judgments a new answer replaces: its own and the later turns of its conversation (their
        judge prompts and generation histories hold it), unless what the judge and the next turn see of it is what
        they saw of the answer stored before (then those judgments still judge exactly this, and stand)."""
        stored = self.store.generation(gen.slot) if self.store else None
        if stored is not None and self._seen(stored) == self._seen(gen):
            return []
        turns = len(self.tasks[gen.task].item(gen.item_id).turns)
        return [Slot(gen.round, gen.task, gen.item_id, turn) for turn in range(gen.turn, turns + 1)]

    def _seen(self, gen: Generation) -> tuple[bool, str | None]:
        """What a judge request (`build_requests`) and the next turn's history take from a generation: whether the task
        excludes it, and the answer as the profile shows it."""
        no_answer = self.tasks[gen.task].spec.generation.no_answer
        excluded = gen.status != G.OK and (no_answer or self.cfg.profile.no_answer) == "exclude"
        return excluded, answer_for(self.cfg.profile, gen.status, gen.final, no_answer)

    def pending_generations(self) -> list[Slot]:
        """Slots without a final answer made from exactly the request this config sends, and the later turns of their
        conversations (a new answer changes the history they were generated from)."""
        pending: list[Slot] = []
        for slot, _ in self.plan:  # a conversation's turns are consecutive, in order
            follows_pending = bool(pending) and pending[-1] == Slot(slot.round, slot.task, slot.item_id, slot.turn - 1)
            if follows_pending or not self.is_stored(slot):
                pending.append(slot)
        return pending

    def pending_judgments(self, generating: bool = False) -> list[CallSlot]:
        """Judge calls of the plan's slots without a final judgment of their current answers; `generating` counts those
        whose answers are to be generated (again) first."""
        return [CallSlot.of(slot, call) for slot, _ in self.plan for call in self.judge_state(slot, generating).pending]

    def replaced(self) -> tuple[int, int]:
        """Paid work the store holds that this config would do again: final answers made from another request, and
        final judgments that no longer stand (or of calls the task no longer makes) — at most: a judgment whose answer comes back identical is kept. Failed
        records (asked again anyway) and excluded answers (no judge call) are not counted."""
        if self.store is None:
            return 0, 0
        answers = judgments = 0
        for slot, _ in self.plan:
            gen = self.store.generation(slot)
            answers += gen is not None and not is_transient(gen) and not self.is_stored(slot)
            state = self.judge_state(slot)
            falling = set(state.pending) | set(state.stale)
            judgments += sum(not is_transient(j) and j.status != J.EXCLUDED and call in falling
                             for call, j in state.stored.items())
        return answers, judgments


def refusal(rules: ResumeRules, run_dir: Path) -> str | None:
    """Why a run in `run_dir` under `rules` may not go on without `--force` (None: it may): it would replace paid work,
    named with the settings that changed and how much it would redo. The run and its dry run both ask here."""
    assert rules.store is not None
    answers, judgments = rules.replaced()
    if not answers and not judgments:
        return None
    changes = rules.cfg.identity_changes(rules.store.meta(IDENTITY))
    why = ("this run directory was made with other settings: " + ", ".join(changes)) if changes else \
        ("its records were made from other inputs although no setting differs (the model's chat template, a benchmark "
         "file or the harness changed, or the template renders today's date: set "
         "model.chat_template_kwargs.conversation_start_date)")
    return (f"{run_dir}: {why}; continuing would regenerate {answers} stored answers and re-judge up to {judgments} "
            "stored judgments (a judgment stands where its answer comes back identical). Use another --out, or --force "
            "to redo them (the replaced records are kept as superseded)")
