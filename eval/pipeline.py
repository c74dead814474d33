"""The stages of a run, in order: plan → generate (all rounds, turn by turn) → judge (overlapping with generation
as answers arrive) → report. Every stage looks up the store before computing and writes each record as soon as it
exists, so a run killed anywhere resumes where it stopped and a second run of a finished config computes nothing.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import progress, report
from .backends import make_backend
from .backends.base import Backend, GenerationRequest, GenerationResult, Sampling, request_seed
from .chat import turn_messages
from .compat import answer_for
from .config import RunConfig
from .errors import UserError
from .failpoints import checkpoint
from .judge.batch import BatchJudge
from .judge.cache import JudgeCache
from .judge.client import JudgeClient
from .judge.ledger import Ledger
from .judge.mock_server import MockServer
from .judge.requests import Excluded, JudgeRequest, build_request
from .records import Generation, Judgment, Slot, content_key
from .rundir import RunLock
from .statuses import is_transient
from .store import Store
from .tasks import Task, load_spec, load_task


@dataclass
class RunOptions:
    out: Path | None = None
    limit: int | None = None
    rounds: int | None = None
    tasks: list[str] | None = None
    force: bool = False
    dry_run: bool = False
    command: list[str] = field(default_factory=list)


def run_dir_for(cfg: RunConfig, options: RunOptions) -> Path:
    return options.out if options.out is not None else Path(cfg.output_dir) / cfg.name


def load_tasks(cfg: RunConfig, limit: int | None) -> dict[str, Task]:
    tasks = {}
    for name in cfg.tasks:
        task = load_task(load_spec(name, cfg.task_options.get(name)), cfg.variant, cfg.asset_mirrors, limit)
        for warning in task.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
        tasks[name] = task
    unknown = set(cfg.task_options) - set(cfg.tasks)
    if unknown:
        raise UserError(f"task_options: {', '.join(sorted(unknown))} not among the run's tasks ({', '.join(cfg.tasks)})")
    return tasks


def plan_slots(tasks: dict[str, Task], rounds: int) -> list[tuple[Slot, str | None]]:
    return [(Slot(r, t.name, item.item_id, turn), item.category)
            for t in tasks.values() for r in range(1, rounds + 1) for item in t.items for turn in range(1, len(item.turns) + 1)]


def check_compatible(store: Store, cfg: RunConfig, run_dir: Path, force: bool) -> None:
    previous = store.meta("identity")
    current = cfg.identity()
    if previous and previous != current and not force:
        changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        raise UserError(f"{run_dir}: this run directory was made with a different {', '.join(changed)}; use another "
                        "--out, or --force to continue in it (earlier records are kept as superseded)")


def run(cfg: RunConfig, options: RunOptions) -> dict[str, Any]:
    if options.rounds is not None:
        cfg = cfg.model_copy(update={"rounds": options.rounds})
    if options.tasks:
        cfg = cfg.model_copy(update={"tasks": options.tasks})
    run_dir = run_dir_for(cfg, options)
    tasks = load_tasks(cfg, options.limit)
    if options.dry_run:
        if not (run_dir / "run.sqlite").exists():
            return report.print_estimate(cfg, tasks, None)
        store = Store(run_dir / "run.sqlite")
        try:
            return report.print_estimate(cfg, tasks, store)
        finally:
            store.close()
    with RunLock(run_dir):
        checkpoint("start")
        store = Store(run_dir / "run.sqlite")
        try:
            check_compatible(store, cfg, run_dir, options.force)
            store.set_meta("identity", cfg.identity())
            store.set_meta("config", cfg.snapshot())
            store.set_meta("tasks", {name: report.task_meta(t) for name, t in tasks.items()})
            store.set_meta("provenance", {name: t.provenance for name, t in tasks.items()})
            store.set_meta("items", {name: [asdict(item) for item in t.items] for name, t in tasks.items()})
            store.set_meta("warnings", [w for t in tasks.values() for w in t.warnings])
            store.set_meta("command", options.command)
            store.set_plan(plan_slots(tasks, cfg.rounds))
            runner = Runner(cfg, tasks, store, run_dir)
            runner.execute()
            summary = report.write_run(run_dir, store, cfg, runner.activity())
            print(runner.account())
            return summary
        finally:
            store.close()


class _RunStopped(Exception):
    """Raised into a backend's generation loop to end it once the run stops."""


class Runner:
    def __init__(self, cfg: RunConfig, tasks: dict[str, Task], store: Store, run_dir: Path):
        self.cfg = cfg
        self.tasks = tasks
        self.store = store
        self.run_dir = run_dir
        self.backend: Backend | None = None
        self.generation_calls = 0
        self.judge_calls = 0
        self.judgments_reused = 0
        self.stop = threading.Event()
        self.budget_reached = False
        self.warnings: list[str] = []
        self.fingerprints: dict[str, list[str]] = {}

    def activity(self) -> dict[str, Any]:
        return {"generation_calls": self.generation_calls, "judge_calls": self.judge_calls,
                "judgments_reused": self.judgments_reused, "budget_reached": self.budget_reached,
                "warnings": self.warnings, "judge_seen": self.fingerprints}

    def account(self) -> str:
        """One line saying what this invocation computed — in particular when it computed nothing."""
        reused = f"{self.judgments_reused} judgments came from the shared judge cache" if self.judgments_reused else ""
        if self.generation_calls == 0 and self.judge_calls == 0:
            return f"{self.run_dir}: nothing to compute — every answer was already stored" + \
                (f" and {reused}." if reused else " and judged.")
        return (f"{self.run_dir}: this run generated {self.generation_calls} answers and made {self.judge_calls} "
                f"judgments" + (f"; {reused}." if reused else "."))

    # ---------------------------------------------------------------- orchestration

    def execute(self) -> None:
        self.backend = make_backend(self.cfg)  # tokenizer only: the weights load with the first batch
        self.store.set_meta("backend_identity", self.backend.identity())
        try:
            self._check_answers_available()
            pending_generations = self._pending_generation_count()
            pending_judgments = self._pending_judgment_count()
            if pending_generations == 0 and pending_judgments == 0:
                return
            mock = MockServer(self.cfg.judge.mock_settings, tasks=self.tasks.values()).start() if self.cfg.judge.mock else None
            try:
                asyncio.run(self._execute(mock.url if mock else self.cfg.judge.base_url, pending_generations))
            finally:
                if mock is not None:
                    mock.stop()
        finally:
            self.backend.close()

    def _check_answers_available(self) -> None:
        """A backend that replays a file cannot produce what the file lacks: say what, before paying for any judging."""
        unavailable = getattr(self.backend, "unavailable", None)
        if unavailable is None:
            return
        planned = [slot for slot, _ in self._plan()]
        missing = unavailable(planned)
        if missing:
            shown = ", ".join(f"{s.task} item {s.item_id} turn {s.turn} round {s.round}" for s in missing[:3])
            raise UserError(f"model.path: {self.cfg.model.path} has no answer for {len(missing)} of {len(planned)} planned "
                            f"turns ({shown}{', …' if len(missing) > 3 else ''}); give a file with every answer, or "
                            "narrow the run with --tasks, --limit or --rounds")

    async def _execute(self, base_url: str | None, pending_generations: int) -> None:
        ledger = Ledger(self.cfg.judge)
        ledger.spent_usd = sum(r["cost_usd"] or 0.0 for r in self.store.fields("judgment", ["cost_usd"]))
        client = JudgeClient(self.cfg.judge, base_url, ledger, self.store.meta("judge_learned_params"), self.cfg.profile)
        cache = JudgeCache(self.cfg.judge.cache, self.cfg.judge.cache_path)
        try:
            self.store.event("judge", "preflight")
            await client.preflight()
            await self._generate_and_judge(client, cache, pending_generations)
        finally:
            self.store.set_meta("judge_learned_params", client.policy.state())
            self.warnings += client.warnings
            self.fingerprints = {"models": sorted(client.models_seen), "system_fingerprints": sorted(client.fingerprints_seen)}
            cache.close()
            await client.close()

    async def _generate_and_judge(self, client: JudgeClient, cache: JudgeCache, pending_generations: int) -> None:
        """Generation runs in a worker thread; each stored answer releases the judgments it completes. In sync mode
        they go to a queue drained by `judge.concurrency` workers (memory stays bounded by the workers); in batch
        mode they are collected and sent as one batch once generation is done."""
        loop = asyncio.get_running_loop()
        arrivals: asyncio.Queue[Slot | None] = asyncio.Queue()
        pending: asyncio.Queue[JudgeRequest] = asyncio.Queue()
        judge_bar = progress.bar("judge", "req", position=1)
        scheduled: set[Slot] = set()
        batched: list[JudgeRequest] = []

        def schedule_ready(slot: Slot) -> None:
            for request in self._ready_judgments(slot, scheduled, cache):
                judge_bar.total += 1
                judge_bar.refresh()
                (batched.append if self.cfg.judge.mode == "batch" else pending.put_nowait)(request)

        async def store(judgment: Judgment) -> None:
            self.judge_calls += 1
            self.store.put_judgment(judgment)
            checkpoint("judgment_stored")
            cache.put(judgment)
            judge_bar.update(1)

        async def judge_worker() -> None:
            while True:
                request = await pending.get()
                try:
                    judgment = await client.judge(request)
                    if judgment is not None:  # None: the budget is spent; the slot stays unjudged, the run incomplete
                        await store(judgment)
                finally:
                    pending.task_done()

        workers = {asyncio.ensure_future(judge_worker()) for _ in range(self.cfg.judge.concurrency)}
        try:
            for slot, _ in self._plan():
                schedule_ready(slot)
            if pending_generations:
                self.store.event("generate", "start")
                generator = loop.run_in_executor(None, self._generate_all, pending_generations,
                                                 lambda s: loop.call_soon_threadsafe(arrivals.put_nowait, s))
                generator.add_done_callback(lambda _: arrivals.put_nowait(None))
                while (slot := await arrivals.get()) is not None:
                    schedule_ready(slot)
                    self._raise_first_failure(workers)
                await generator  # re-raises a generation failure
                self.store.event("generate", "end")
            if batched or self.store.open_batches():
                await BatchJudge(client, self.store, self.cfg.judge.batch_poll_s).run(batched, store)
            drained = asyncio.ensure_future(pending.join())
            try:
                done, _ = await asyncio.wait({drained, *workers}, return_when=asyncio.FIRST_COMPLETED)
                self._raise_first_failure(done)
            finally:
                drained.cancel()
        except BaseException:
            self.stop.set()  # the generation thread stops after its current batch
            raise
        finally:
            for worker in workers:
                worker.cancel()
            judge_bar.close()
        self.store.event("judge", "end")
        self.budget_reached = client.ledger.exhausted() and self._pending_judgment_count() > 0
        if self.budget_reached:
            print(f"judge.budget_usd reached (${client.ledger.spent_usd:.2f}); stopped judging — "
                  "everything judged so far is stored; raise the budget and run again to finish", file=sys.stderr)

    @staticmethod
    def _raise_first_failure(tasks: set[asyncio.Task]) -> None:
        for task in list(tasks):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # ---------------------------------------------------------------- generation (worker thread)

    def _plan(self) -> list[tuple[Slot, str | None]]:
        return plan_slots(self.tasks, self.cfg.rounds)

    def _request(self, slot: Slot) -> GenerationRequest | None:
        """The request for a slot, or None while an earlier turn of its conversation is not stored yet."""
        task = self.tasks[slot.task]
        item = task.item(slot.item_id)
        previous = []
        for turn in range(1, slot.turn):
            gen = self.store.generation(Slot(slot.round, slot.task, slot.item_id, turn))
            if gen is None:
                return None
            previous.append(answer_for(self.cfg.profile, gen.status, gen.final, task.spec.generation.no_answer))
        spec = task.spec
        system = task.system_prompt if spec.generation.use_system_prompt else None
        messages = turn_messages(system, item.turns[: slot.turn], previous)
        sampling = Sampling(spec.temperature_for(item.category), spec.generation.top_p, self.cfg.generation.max_new_tokens,
                            spec.generation.frequency_penalty)
        round_seed = self.cfg.seed + slot.round - 1  # round 1 = upstream's seed 1234
        seed = request_seed(round_seed, slot) if self.cfg.profile.per_request_seeds else round_seed
        return GenerationRequest(slot, messages, sampling, seed)

    def generation_key(self, request: GenerationRequest) -> str:
        assert self.backend is not None
        identity = self.backend.identity()
        return content_key("generation", identity, request.messages, self.backend.prompt_hash(request.messages),
                           request.sampling.__dict__, request.seed, request.slot.round, request.slot.task,
                           request.slot.item_id, request.slot.turn)

    def _is_stored(self, slot: Slot, to_judge: bool = False) -> bool:
        """The slot holds a final generation made from exactly the request this config would send.

        With `to_judge`, a failed generation counts too where its task judges answers as they came back (upstream
        judges a failed call's missing answer as None); it is still generated again by the next run."""
        stored = self.store.generation(slot)
        if stored is None:
            return False
        if is_transient(stored) and not (to_judge and self._judged_as_is(slot.task)):
            return False
        request = self._request(slot)
        return request is not None and stored.key == self.generation_key(request)

    def _judged_as_is(self, task: str) -> bool:
        return (self.tasks[task].spec.generation.no_answer or self.cfg.profile.no_answer) == "judge_as_is"

    def _pending_generation_count(self) -> int:
        return sum(1 for slot, _ in self._plan() if not self._is_stored(slot))

    def _generate_all(self, total: int, on_stored) -> None:
        bar = progress.bar("generate", "ans", total)
        try:
            max_turns = max(t.spec.turns for t in self.tasks.values())
            for turn in range(1, max_turns + 1):
                if self.stop.is_set():
                    return
                requests = [request for slot, _ in self._plan()
                            if slot.turn == turn and not self._is_stored(slot) and (request := self._request(slot))]

                def store_result(result: GenerationResult) -> None:
                    if self.stop.is_set():
                        raise _RunStopped()
                    self.generation_calls += 1
                    gen = self._record(result)
                    self.store.put_generation(gen)
                    checkpoint("generation_stored")
                    bar.update(1)
                    on_stored(gen.slot)

                assert self.backend is not None
                self.backend.generate(requests, store_result)
                checkpoint("turn_done")
        except _RunStopped:
            return  # the run is stopping (a failure elsewhere, or a signal); what was stored stays
        finally:
            bar.close()

    def _record(self, result: GenerationResult) -> Generation:
        r = result.request
        return Generation(
            key=self.generation_key(r), round=r.slot.round, seed=r.seed, task=r.slot.task, item_id=r.slot.item_id,
            turn=r.slot.turn, messages=r.messages, messages_hash=content_key(r.messages), prompt_hash=result.prompt_hash,
            raw=result.raw, final=result.parsed.final, reasoning=result.parsed.reasoning, status=result.parsed.status,
            finish_reason=result.finish_reason, tokens_in=result.tokens_in, tokens_out=result.tokens_out,
            seconds=round(result.seconds, 4), error=result.error,
        )

    # ---------------------------------------------------------------- judging (event loop)

    def _judge_request(self, slot: Slot) -> JudgeRequest | Excluded | None:
        """What judging this slot takes now, or None while an answer it needs is not (currently) stored."""
        task = self.tasks[slot.task]
        gens = []
        for turn in range(1, slot.turn + 1):
            earlier = Slot(slot.round, slot.task, slot.item_id, turn)
            if not self._is_stored(earlier, to_judge=True):
                return None
            gens.append(self.store.generation(earlier))
        return build_request(task, task.item(slot.item_id), slot.turn, gens, self.cfg)

    def _is_judged(self, slot: Slot, request: JudgeRequest | Excluded) -> bool:
        """The slot holds a final judgment of exactly this request (same answers, prompt and judge settings).

        A regenerated answer that came out identical leaves the judge's input unchanged: the judgment stands and is
        linked to the new generation instead of being paid for again."""
        stored = self.store.judgment(slot)
        if stored is None:
            return False
        if isinstance(request, Excluded):
            return stored.status == "excluded" and stored.generation_key == request.generation_key
        if is_transient(stored) or stored.key != request.key:
            return False
        if stored.generation_key != request.generation_key:
            stored.generation_key = request.generation_key
            self.store.put_judgment(stored)
        return True

    def _pending_judgment_count(self) -> int:
        return sum(1 for slot, _ in self._plan()
                   if (request := self._judge_request(slot)) is None or not self._is_judged(slot, request))

    def _ready_judgments(self, slot: Slot, scheduled: set[Slot], cache: JudgeCache) -> list[JudgeRequest]:
        """Judge requests that became possible now that `slot`'s answer is stored (MT-Bench turn 2 needs both)."""
        ready = []
        for turn in range(slot.turn, len(self.tasks[slot.task].item(slot.item_id).turns) + 1):
            target = Slot(slot.round, slot.task, slot.item_id, turn)
            if target in scheduled:
                continue
            request = self._judge_request(target)
            if request is None:
                break
            scheduled.add(target)
            if self._is_judged(target, request):
                continue
            if isinstance(request, Excluded):
                self.store.put_judgment(self._excluded(request))
                continue
            cached = cache.get(request.key)
            if cached is not None:
                self.judgments_reused += 1
                self.store.put_judgment(_moved(cached, target, request))
                continue
            ready.append(request)
        return ready

    def _excluded(self, request: Excluded) -> Judgment:
        s = request.slot
        return Judgment(key=content_key("excluded", request.generation_key), generation_key=request.generation_key,
                        round=s.round, task=s.task, item_id=s.item_id, turn=s.turn, judge_model=self.cfg.judge.model,
                        prompt_name="", prompt_hash="", params={}, messages=[], raw=None, scores={}, status="excluded",
                        attempts=0, error=request.reason)


def _moved(cached: Judgment, slot: Slot, request: JudgeRequest) -> Judgment:
    """A cached judgment placed in this run's slot (same key ⇒ same messages; the slot may differ)."""
    data = cached.to_dict()
    data.update(round=slot.round, task=slot.task, item_id=slot.item_id, turn=slot.turn,
                generation_key=request.generation_key, cached=True)
    return Judgment.from_dict(data)

