"""The stages of a run, in order: plan → generate (all rounds, turn by turn) → judge (overlapping with generation
as answers arrive) → report. Every stage looks up the store before computing and writes each record as soon as it
exists, so a run killed anywhere resumes where it stopped and a second run of a finished config computes nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__, estimate, preflight, progress, redact, report
from .backends import announce_format, make_backend
from .backends.base import Backend, BackendUnavailable, GenerationResult
from .config import RunConfig
from .errors import UserError
from .failpoints import checkpoint
from .judge.batch import BatchJudge
from .judge.cache import JudgeCache
from .judge.client import JudgeClient
from .judge.ledger import Ledger
from .judge.providers import endpoint_identity, judge_address
from .judge.requests import Excluded, JudgeRequest
from .judge.shared_budget import SharedBudget
from .pairwise import compared_with, read_opponent
from .records import CallSlot, Generation, Judgment, JudgmentUsage, Slot, content_key
from .results import RunSummary
from .resume import JudgeState, ResumeRules, plan_slots, refusal
from .run_meta import (
    BACKEND_IDENTITY,
    COMMAND,
    CONFIG,
    IDENTITY,
    ITEMS,
    JUDGE_CACHE_BEHIND,
    JUDGE_LEARNED_PARAMS,
    MODEL_FORMAT,
    PROVENANCE,
    REPORTS_FINGERPRINT,
    TASKS,
    WARNINGS,
)
from .rundir import REPORT_FILES, RunLock, write_json
from .statuses import JudgmentStatus as J
from .store import Store, open_run
from .summary import DEFAULT_REFERENCE, compute_summary
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
    fetch: str = "python -m eval fetch CONFIG"  # the command that downloads what the run needs, when something is missing


def run_dir_for(cfg: RunConfig, options: RunOptions) -> Path:
    return options.out if options.out is not None else Path(cfg.output_dir) / cfg.name


def load_tasks(cfg: RunConfig, limit: int | None) -> dict[str, Task]:
    """The run's tasks; a pairwise run's judge their answers against run B's, on the questions B answered."""
    opponent = read_opponent(cfg) if cfg.pairwise is not None else None
    tasks = {}
    for name in cfg.tasks:
        task = load_task(load_spec(name, cfg.task_options.get(name)), cfg.variant, cfg.asset_mirrors,
                         None if opponent is not None else limit)
        if opponent is not None:
            task = compared_with(task, opponent.get(name, {}))
        for warning in task.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
        tasks[name] = task
    unknown = set(cfg.task_options) - set(cfg.tasks)
    if unknown:
        raise UserError(f"task_options: {', '.join(sorted(unknown))} not among the run's tasks ({', '.join(cfg.tasks)})")
    return tasks


def run(cfg: RunConfig, options: RunOptions) -> report.Summary | dict[str, Any]:
    if options.rounds is not None:
        cfg = cfg.model_copy(update={"rounds": options.rounds})
    if options.tasks:
        cfg = narrowed_to(cfg, options.tasks)
    run_dir = run_dir_for(cfg, options)
    found = preflight.inspect(cfg, "estimate" if options.dry_run else "run", options.fetch)
    for note in found.notes:
        print(note, file=sys.stderr)
    if options.dry_run:
        return _dry_run(cfg, options, run_dir, found)
    if _read_only(run_dir):  # nothing can be computed there: only the items and the tokenizer are needed, to say so
        _stop_if_missing(found.stopping("data", "tokenizer"), "nothing was started")
        return _read_only_run(cfg, load_tasks(cfg, options.limit), run_dir, options.force)
    _stop_if_missing(found.missing, "nothing was started")
    tasks = load_tasks(cfg, options.limit)
    created, fresh = not run_dir.exists(), not (run_dir / "run.sqlite").exists()
    with RunLock(run_dir):
        try:
            return _run_locked(cfg, tasks, run_dir, options)
        except BaseException:
            if fresh:  # while the lock is held: no other run can have started in the folder
                _remove_if_unused(run_dir, created)
            raise


def _run_locked(cfg: RunConfig, tasks: dict[str, Task], run_dir: Path, options: RunOptions) -> report.Summary:
    checkpoint("start")
    store = Store(run_dir / "run.sqlite")
    try:
        backend = make_backend(cfg)  # tokenizer only: weights load with the first batch
        try:
            rules = ResumeRules(cfg, tasks, store, backend)
            if not options.force and (why := refusal(rules, run_dir)):
                raise UserError(why)
            store.set_meta(IDENTITY, cfg.identity())
            store.set_meta(CONFIG, cfg)
            store.set_meta(TASKS, {name: report.task_meta(t, cfg.generation.greedy) for name, t in tasks.items()})
            store.set_meta(PROVENANCE, {name: t.provenance for name, t in tasks.items()})
            store.set_meta(ITEMS, {name: t.items for name, t in tasks.items()})
            store.set_meta(WARNINGS, [w for t in tasks.values() for w in t.warnings])
            store.set_meta(COMMAND, options.command)
            store.set_plan(plan_slots(tasks, cfg.rounds))
            runner = Runner(cfg, tasks, store, run_dir, rules)
            runner.execute()
        finally:
            backend.close()
        summary = write_reports_if_changed(run_dir, store, cfg, runner)
        print(runner.account())
        return summary
    finally:
        store.close()


def _stop_if_missing(missing: list[preflight.Missing], consequence: str) -> None:
    """One missing thing is the error itself; several are listed first, one line each."""
    if len(missing) == 1:
        raise UserError(f"{missing[0].what} → {missing[0].fix}")
    if missing:
        for thing in missing:
            print(thing.line(), file=sys.stderr)
        raise UserError(f"{len(missing)} things the run needs are missing (listed above, each with its fix); {consequence}")


def _dry_run(cfg: RunConfig, options: RunOptions, run_dir: Path, found: preflight.Preflight) -> dict[str, Any]:
    """The estimate, when the items (and, for a run directory that holds answers, the tokenizer) are here; then what
    would stop the run at once — something missing, or a change that needs --force — as a user error."""
    needed = ("data", "tokenizer") if (run_dir / "run.sqlite").is_file() else ("data",)
    if found.stopping(*needed):
        _stop_if_missing(found.missing, "nothing can be estimated without them")
    estimated = estimate.print_estimate(cfg, load_tasks(cfg, options.limit), run_dir, options.force,
                                        tokenizer_ready=not found.stopping("tokenizer"))
    _stop_if_missing(found.missing, "the run would stop at once")
    if estimated["refusal"]:
        raise UserError(estimated["refusal"])
    return estimated


def _read_only(run_dir: Path) -> bool:
    store = run_dir / "run.sqlite"
    return store.is_file() and not (os.access(run_dir, os.W_OK) and os.access(store, os.W_OK))


def _read_only_run(cfg: RunConfig, tasks: dict[str, Task], run_dir: Path, force: bool) -> RunSummary:
    """A run directory this process cannot write (an archive, a read-only mount): complete, it is reported as it is;
    otherwise say what is left and how to go on."""
    store = open_run(run_dir)
    try:
        backend = make_backend(cfg, generating=False)
        try:
            rules = ResumeRules(cfg, tasks, store, backend)
            if not force and (why := refusal(rules, run_dir)):
                raise UserError(why)
            answers, judgments = len(rules.pending_generations()), len(rules.pending_judgments())
        finally:
            backend.close()
        summary = compute_summary(store)
    finally:
        store.close()
    if answers or judgments:
        raise UserError(f"{run_dir} is read-only and incomplete: {answers} answers and {judgments} judgments are still to "
                        f"be made; copy it to a writable folder (cp -r {run_dir} COPY) and run there with --out COPY")
    print(report.render_console(summary))
    print(f"\n{run_dir} is read-only and complete: nothing to compute, nothing written")
    return summary


def _remove_if_unused(run_dir: Path, created: bool) -> None:
    """A run that stopped before storing any answer or judgment in a store it made leaves no store and no lock behind
    (and no folder, if it made the folder)."""
    path = run_dir / "run.sqlite"
    if path.exists():
        try:
            store = Store(path, read_only=True)
        except UserError:
            return
        try:
            if any(store.counts().values()):
                return
        finally:
            store.close()
    for name in ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "run.lock"):  # the lock's holder is this process
        (run_dir / name).unlink(missing_ok=True)
    if created:
        try:
            run_dir.rmdir()
        except OSError:
            pass  # something else is in it


def narrowed_to(cfg: RunConfig, selected: list[str]) -> RunConfig:
    """The config with only the `--tasks` selected; the task_options of the tasks left out are ignored (and said so).
    An option naming a task the config does not have is still refused when the tasks load."""
    ignored = sorted(set(cfg.task_options) & set(cfg.tasks) - set(selected))
    if ignored:
        print(f"--tasks: ignoring task_options of {', '.join(ignored)} (not selected)", file=sys.stderr)
    options = {name: value for name, value in cfg.task_options.items() if name not in ignored}
    return cfg.model_copy(update={"tasks": selected, "task_options": options})


def write_reports_if_changed(run_dir: Path, store: Store, cfg: RunConfig, runner: Runner) -> report.Summary:
    """Every report file, unless they were written from exactly this store, config, version and published table and
    are all still there (`python -m eval report RUN_DIR` rebuilds them anyway)."""
    fingerprint = content_key(__version__, DEFAULT_REFERENCE.read_text(encoding="utf-8"),
                              store.fingerprint(exclude_meta=(REPORTS_FINGERPRINT.name,)))
    if store.meta(REPORTS_FINGERPRINT) == fingerprint and all((run_dir / name).is_file() and not (run_dir / name).is_symlink()
                                                              for name in REPORT_FILES):  # a link: replaced by the file
        summary = report.read_run_summary(run_dir, cfg)
        write_json(run_dir / "manifest.json", report.manifest(store, cfg, runner.activity()))  # says what this run did
        print()
        print(report.console(summary))
        print(f"\nResults in {run_dir}/ (unchanged: nothing new was stored)")
        return summary
    summary = report.write_run(run_dir, store, cfg, runner.activity())
    store.set_meta(REPORTS_FINGERPRINT, fingerprint)
    return summary


class _RunStopped(Exception):
    """Raised into a backend's generation loop to end it once the run stops."""


class Runner:
    def __init__(self, cfg: RunConfig, tasks: dict[str, Task], store: Store, run_dir: Path, rules: ResumeRules):
        self.cfg = cfg
        self.tasks = tasks
        self.store = store
        self.run_dir = run_dir
        assert rules.backend is not None, "the runner generates: its rules need the backend"
        self.rules = rules
        self.backend: Backend = rules.backend
        self.generation_calls = 0
        self.answers_replayed = 0  # a replay backend (rejudge, an answer file) stores answers it did not generate
        self.judge_calls = 0
        self.judgments_reused = 0
        self.stop = threading.Event()
        self.budget_reached = False
        self.warnings: list[str] = []
        self.fingerprints: dict[str, list[str]] = {}

    def activity(self) -> dict[str, Any]:
        servers = getattr(self.backend, "servers", None)  # a backend that spreads requests over servers says how
        return {"generation_calls": self.generation_calls, "answers_replayed": self.answers_replayed,
                "judge_calls": self.judge_calls,
                "judgments_reused": self.judgments_reused, "budget_reached": self.budget_reached,
                "warnings": self.warnings, "judge_seen": self.fingerprints,
                "generation_servers": servers() if servers else None}

    def account(self) -> str:
        """One line saying what this invocation computed — in particular when it computed nothing."""
        reused = f"{self.judgments_reused} judgments came from the shared judge cache" if self.judgments_reused else ""
        if self.generation_calls == 0 and self.answers_replayed == 0 and self.judge_calls == 0:
            return f"{self.run_dir}: nothing to compute — every answer was already stored" + \
                (f" and {reused}." if reused else " and judged.")
        answers = (f"replayed {self.answers_replayed} stored answers" if self.answers_replayed and not self.generation_calls
                   else f"generated {self.generation_calls} answers")
        return f"{self.run_dir}: this run {answers} and made {self.judge_calls} judgments" + (f"; {reused}." if reused else ".")

    # ---------------------------------------------------------------- orchestration

    def execute(self) -> None:
        self.store.set_meta(BACKEND_IDENTITY, self.backend.identity())
        self.store.set_meta(MODEL_FORMAT, announce_format(self.cfg, self.backend))
        self._check_answers_available()
        pending_generations = len(self.rules.pending_generations())
        pending_judgments = self._settle_judgments()
        with self._shared_cache() as cache:
            if pending_generations == 0 and pending_judgments == 0:
                return
            with judge_address(self.cfg.judge, self.tasks.values()) as base_url:
                asyncio.run(self._execute(base_url, cache, pending_generations))

    def _check_answers_available(self) -> None:
        """A backend that replays a file cannot produce what the file lacks: say what, before paying for any judging."""
        unavailable = getattr(self.backend, "unavailable", None)
        if unavailable is None:
            return
        planned = [slot for slot, _ in self.rules.plan]
        missing = unavailable(planned)
        if missing:
            shown = ", ".join(f"{s.task} item {s.item_id} turn {s.turn} round {s.round}" for s in missing[:3])
            raise UserError(f"model.path: {self.cfg.model.path} has no answer for {len(missing)} of {len(planned)} planned "
                            f"turns ({shown}{', …' if len(missing) > 3 else ''}); give a file with every answer, or "
                            "narrow the run with --tasks, --limit or --rounds")

    def _settle_judgments(self) -> int:
        """Link the judgments that stand for a regenerated, identical answer to it, and drop those of calls the tasks
        no longer make; the number of calls still to be judged."""
        states = [(slot, self.rules.judge_state(slot)) for slot, _ in self.rules.plan]
        for slot, state in states:
            if state.stale:
                self.store.drop_judgments(slot, state.stale)
            self.adopt(state)
        return sum(len(state.pending) for _, state in states)

    def adopt(self, state: JudgeState) -> None:
        """Record the standing judgments of a slot against the generation their requests now name."""
        for judgment in state.relinked:
            self.store.put_judgment(judgment)

    @contextmanager
    def _shared_cache(self) -> Iterator[JudgeCache]:
        """The shared judge cache for this invocation. Its writes trail the store's (see judge/cache.py); a run
        killed before they were done is caught up here from the store, the run's record."""
        cache = JudgeCache(self.cfg.judge.cache, self.cfg.judge.cache_path, endpoint_identity(self.cfg.judge))
        writable = cache.writable
        try:
            if writable:
                if self.store.meta(JUDGE_CACHE_BEHIND):
                    cache.put_all(self.store.records("judgment"))
                self.store.set_meta(JUDGE_CACHE_BEHIND, True)
            yield cache
        finally:
            if (warning := cache.miss_warning()) is not None:
                self.warnings.append(warning)
                print(f"WARNING: {warning}", file=sys.stderr)
            cache.close()  # waits for its writes
            if writable:
                self.store.set_meta(JUDGE_CACHE_BEHIND, False)

    async def _execute(self, base_url: str | None, cache: JudgeCache, pending_generations: int) -> None:
        with SharedBudget.open(self.cfg.judge, self.run_dir) or nullcontext() as shared:
            ledger = Ledger(self.cfg.judge, shared=shared)
            ledger.restore(sum(r.cost_usd or 0.0 for r in self.store.fields("judgment", JudgmentUsage)))
            client = JudgeClient(self.cfg.judge, base_url, ledger, self.store.meta(JUDGE_LEARNED_PARAMS), self.cfg.profile,
                                 self.tasks.values())
            try:
                self.store.event("judge", "preflight")
                await client.preflight()
                await GenerateAndJudge(self, client, cache).run(pending_generations)
            finally:
                self.store.set_meta(JUDGE_LEARNED_PARAMS, client.transport.learned())
                self.warnings += client.warnings
                self.fingerprints = {"models": sorted(client.models_seen), "system_fingerprints": sorted(client.fingerprints_seen)}
                await client.close()
            self.budget_reached = ledger.exhausted() and len(self.rules.pending_judgments()) > 0
            if self.budget_reached:
                sharing = f" by the runs sharing {self.cfg.judge.shared_budget}" if shared is not None else ""
                print(f"judge.budget_usd reached (${ledger.total_spent():.2f}{sharing}); stopped judging — "
                      "everything judged so far is stored; raise the budget and run again to finish", file=sys.stderr)

    # ---------------------------------------------------------------- generation (worker thread)

    def generate_all(self, total: int, on_stored: Callable[[Slot], object]) -> None:
        """Every pending generation, turn by turn (all rounds at once); `on_stored` hears of each stored answer."""
        bar = progress.Bar("generate", "ans", total)
        try:
            max_turns = max(t.spec.turns for t in self.tasks.values())
            for turn in range(1, max_turns + 1):
                if self.stop.is_set():
                    return
                requests = [request for slot, _ in self.rules.plan
                            if slot.turn == turn and not self.rules.is_stored(slot) and (request := self.rules.request(slot))]

                def store_result(result: GenerationResult) -> None:
                    if self.stop.is_set():
                        raise _RunStopped()
                    if self.backend.name == "replay":
                        self.answers_replayed += 1
                    else:
                        self.generation_calls += 1
                    gen = self._record(result)
                    self.store.put_generation(gen, self.rules.superseded_by(gen))
                    checkpoint("generation_stored")
                    bar.update(1)
                    on_stored(gen.slot)

                self.backend.generate(requests, store_result, self.stop)
                checkpoint("turn_done")
        except _RunStopped:
            return  # the run is stopping (a failure elsewhere, or a signal); what was stored stays
        except BackendUnavailable as e:  # judging goes on with what is stored; the reports say what is missing
            line = redact.text(f"generation stopped: {e}; everything stored is kept — run the same command again once "
                               "a server answers", credentials=True)
            print(line, file=sys.stderr, flush=True)
            self.warnings.append(line)
        finally:
            bar.close()

    def _record(self, result: GenerationResult) -> Generation:
        r = result.request
        return Generation(
            key=self.rules.generation_key(r), round=r.slot.round, seed=r.seed, task=r.slot.task, item_id=r.slot.item_id,
            turn=r.slot.turn, messages=r.messages, messages_hash=content_key(r.messages), prompt_hash=result.prompt_hash,
            raw=result.raw, final=result.parsed.final, reasoning=result.parsed.reasoning, status=result.parsed.status,
            finish_reason=result.finish_reason, tokens_in=result.tokens_in, tokens_out=result.tokens_out,
            seconds=round(result.seconds, 4), error=result.error,
        )

    def excluded(self, request: Excluded) -> Judgment:
        s = request.slot
        return Judgment(key=content_key(J.EXCLUDED.value, request.generation_key), generation_key=request.generation_key,
                        round=s.round, task=s.task, item_id=s.item_id, turn=s.turn, judge_model=self.cfg.judge.model,
                        prompt_name="", prompt_hash="", params={}, messages=[], raw=None, scores={}, status=J.EXCLUDED,
                        attempts=0, error=request.reason, call=request.call)


class GenerateAndJudge:
    """Judging overlaps generation.

    1. Answers: `Runner.generate_all` runs in a worker thread and hands each stored answer's slot to the event loop
       (`_answer_stored`, thread-safe) through the `answers` queue.
    2. Release: each answer releases the judgments it completes (`_release`; MT-Bench turn 2 needs both answers).
       A judgment already standing, an excluded answer and a shared-cache hit are stored at once; the rest become
       requests — queued for the workers (sync mode) or collected for one batch sent after generation. With a
       writable shared cache, a request identical to one already asked (same body and reading rules: greedy answers
       repeat across rounds) is not sent again: it waits for that judgment and takes it from the cache as stored
       (`_settle_identical`), or is asked itself when that judgment is not one the cache keeps. A judgment
       follows its answer: a slot is released once per judge request (its key holds the answers), so a new answer
       releases it again, and while generation runs a slot waits for every answer of its conversation that is to
       be generated again (`ResumeRules.judge_state`). Answers stored before the run are released at its start,
       what waited once generation ends (a failed answer is then judged as it came back, per the profile).
    3. Judge workers: `judge.concurrency` tasks take requests from `requests`, judge and store (`_store`). Memory
       stays bounded by the workers, not by the number of requests.
    A failure anywhere, or a signal (which cancels the loop's tasks at their next `await`), stops the generation
    thread (the backend returns at its engine's next step); everything stored so far stays.
    """

    def __init__(self, runner: Runner, client: JudgeClient, cache: JudgeCache):
        self.runner, self.client, self.cache = runner, client, cache
        self.rules, self.store = runner.rules, runner.store
        self.batch_mode = runner.cfg.judge.mode == "batch"
        self.answers: asyncio.Queue[Slot | None] = asyncio.Queue()
        self.requests: asyncio.Queue[JudgeRequest] = asyncio.Queue()
        self.batched: list[JudgeRequest] = []
        self.released: dict[CallSlot, str] = {}  # a call → the request released for it (key; excluded: answer's key)
        self.identical: dict[str, list[JudgeRequest]] = {}  # cache key of a request being asked → requests waiting on it
        self.asked_as: dict[str, str] = {}  # key of a request being asked that others may wait on → its cache key
        self.generating = False
        self.bar = progress.Bar("judge", "req", position=1)

    async def run(self, pending_generations: int) -> None:
        workers = {asyncio.ensure_future(self._judge_worker()) for _ in range(self.runner.cfg.judge.concurrency)}
        try:
            self.generating = pending_generations > 0
            self._release_all()  # answers stored by earlier runs that are not generated again
            if pending_generations:
                await self._generate_while_judging(pending_generations, workers)
                self.generating = False
                self._release_all()  # what waited on generation
            if self.batched or self.store.open_batches():
                await BatchJudge(self.client, self.store, self.runner.cfg.judge.batch_poll_s).run(self.batched, self._store)
            await self._drain(workers)
        except BaseException:
            self.runner.stop.set()  # the backend returns at its engine's next step
            raise
        finally:
            for worker in workers:
                worker.cancel()
            self.bar.close()
        self.store.event("judge", "end")

    async def _generate_while_judging(self, pending_generations: int, workers: set[asyncio.Task]) -> None:
        loop = asyncio.get_running_loop()
        self.store.event("generate", "start")
        generator = loop.run_in_executor(None, self.runner.generate_all, pending_generations,
                                         lambda slot: loop.call_soon_threadsafe(self.answers.put_nowait, slot))
        generator.add_done_callback(lambda _: self.answers.put_nowait(None))
        while (slot := await self.answers.get()) is not None:
            self._release(slot)
            _raise_first_failure(workers)
        await generator  # re-raises a generation failure
        self.store.event("generate", "end")

    async def _drain(self, workers: set[asyncio.Task]) -> None:
        """Until every queued request is judged, or a worker fails."""
        drained = asyncio.ensure_future(self.requests.join())
        try:
            done, _ = await asyncio.wait({drained, *workers}, return_when=asyncio.FIRST_COMPLETED)
            _raise_first_failure(done)
        finally:
            drained.cancel()

    def _release_all(self) -> None:
        for slot, _ in self.rules.plan:
            if slot.turn == 1:  # a conversation's later turns are released with it
                self._release(slot)

    def _release(self, slot: Slot) -> None:
        for request in self._ready_requests(slot):
            self.bar.add_total(1)
            (self.batched.append if self.batch_mode else self.requests.put_nowait)(request)

    def _ready_requests(self, slot: Slot) -> list[JudgeRequest]:
        """Judge requests that became possible now that `slot`'s answer is stored; what needs no judge call is
        stored here."""
        ready = []
        for turn in range(slot.turn, len(self.runner.tasks[slot.task].item(slot.item_id).turns) + 1):
            target = Slot(slot.round, slot.task, slot.item_id, turn)
            state = self.rules.judge_state(target, self.generating)
            if state.requests is None:
                break
            self.runner.adopt(state)
            for request in state.unjudged:
                key = request.key if isinstance(request, JudgeRequest) else request.generation_key
                if self.released.get(request.place) == key:
                    continue
                self.released[request.place] = key
                if isinstance(request, Excluded):
                    self.store.put_judgment(self.runner.excluded(request))
                    continue
                body, rules = self.client.request_body(request), request.rules(self.client.profile)
                if (cached := self.cache.get(body, rules)) is not None:
                    self.runner.judgments_reused += 1
                    self.store.put_judgment(_moved(cached, request))
                    continue
                if self.cache.writable:
                    if (cache_key := self.cache.key_of(body, rules)) in self.identical:
                        self.identical[cache_key].append(request)
                        continue
                    self.identical[cache_key], self.asked_as[request.key] = [], cache_key
                ready.append(request)
        return ready

    def _settle_identical(self, judgment: Judgment) -> None:
        """The requests that waited for `judgment` (identical to the one it answers) take it from the cache; when the
        cache did not keep it (a transient failure), the first of them is asked and the others wait for that one."""
        if (cache_key := self.asked_as.pop(judgment.key, None)) is None:
            return
        waiting = self.identical.pop(cache_key)
        if not waiting:
            return
        first = waiting[0]
        cached = self.cache.get(self.client.request_body(first), first.rules(self.client.profile))
        if cached is None:
            self.identical[cache_key], self.asked_as[first.key] = waiting[1:], cache_key
            self.bar.add_total(1)
            self.requests.put_nowait(first)
            return
        for request in waiting:
            self.runner.judgments_reused += 1
            self.store.put_judgment(_moved(cached, request))

    async def _judge_worker(self) -> None:
        while True:
            request = await self.requests.get()
            try:
                judgment = await self.client.judge(request)
                if judgment is not None:  # None: the budget is spent; the slot stays unjudged, the run incomplete
                    await self._store(judgment)
            finally:
                self.requests.task_done()

    async def _store(self, judgment: Judgment) -> None:
        self.runner.judge_calls += 1
        self.store.put_judgment(judgment)  # the run's record, committed before the cache hears of it
        checkpoint("judgment_stored")
        self.cache.put(judgment)
        self.bar.update(1)
        self._settle_identical(judgment)


def _raise_first_failure(tasks: set[asyncio.Task]) -> None:
    for task in list(tasks):
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error


def _moved(cached: Judgment, request: JudgeRequest) -> Judgment:
    """A cached judgment placed in this run's slot and call, under this request's key (the cache matched the request
    body, which the key does not hash alone: another round's identical request has another key)."""
    slot = request.slot
    return replace(cached, round=slot.round, task=slot.task, item_id=slot.item_id, turn=slot.turn, call=request.call,
                   key=request.key, generation_key=request.generation_key, cached=True)
