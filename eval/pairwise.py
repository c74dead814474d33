"""`pairwise RUN_A RUN_B --out DIR [--set judge.…]`: a run that judges run A's stored answers against run B's.

Like `rejudge`, it is a run in its own folder that replays stored answers (no model is loaded): its model is a replay
of A's answers (exported into DIR) and each task is judged by the `pairwise` metric kind, which compares every
answer with B's answer to the same question, round and turn (exported into DIR too, `PairwiseSources.answers_b`) in
both orders. So it resumes, caches and stops on a spent budget as any run does, and DIR stands on its own. It
compares the questions both runs have, in the rounds both have (paired by number), on the benchmarks both ran; a
benchmark whose task gives no pairwise prompt is skipped and said so.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .config import RunConfig, build_config
from .errors import UserError
from .published import answering_model
from .records import Generation, Item, Planned, Slot
from .rejudge import check_override
from .run_meta import CONFIG, ITEMS
from .rundir import write_jsonl
from .store import open_run
from .summary import model_label
from .tasks import PAIRWISE, Task, load_spec

ANSWERS_A, ANSWERS_B = "answers_a.jsonl", "answers_b.jsonl"


@dataclass(frozen=True)
class Source:
    """What pairwise reads of one run: its config, plan, questions and answers."""

    run_dir: Path
    cfg: RunConfig
    plan: list[Planned]
    items: dict[str, list[Item]]
    generations: list[Generation]

    def questions(self, task: str) -> dict[str, Item | None]:
        """The task's planned questions by id, each with its turns as the run stored them (None: not stored)."""
        stored = {item.item_id: item for item in self.items.get(task, [])}
        return {p.item_id: stored.get(p.item_id) for p in self.plan if p.task == task}

    @property
    def rounds(self) -> int:
        return max((p.round for p in self.plan), default=0)


def read_source(run_dir: Path, which: str) -> Source:
    if not run_dir.is_dir():
        raise UserError(f"{which} {run_dir}: no such folder; give the folder of a finished run (results/<name>)")
    store = open_run(run_dir, f"the folder of {which}")
    try:
        cfg = store.meta(CONFIG)
        assert cfg is not None  # open_run: a planned run
        return Source(run_dir, cfg, store.plan(), store.meta(ITEMS) or {}, list(store.records("generation")))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 — a store this version cannot read is a user's input error here
        raise UserError(f"{which} {run_dir}: its run.sqlite cannot be read ({type(e).__name__}: {e})") from None
    finally:
        store.close()


def pairwise_config(a_dir: Path, b_dir: Path, overrides: list[str], out: Path, answers_dir: Path | None = None) -> RunConfig:
    """The config of the pairwise run in `out`; A's and B's answers to the questions both have are written to
    `answers_dir` (default `out`; a dry run gives a temporary folder): answers_a.jsonl, answers_b.jsonl; its tasks keep
    those questions only (`compared_with`)."""
    for text in overrides:
        check_override(text, "pairwise")
    for source in (a_dir, b_dir):
        if out.resolve() == source.resolve():
            raise UserError(f"--out {out}: a pairwise comparison is a run of its own; give a folder other than {source}")
    a, b = read_source(a_dir, "run A"), read_source(b_dir, "run B")
    if a.cfg.variant != b.cfg.variant:
        raise UserError(f"run A ({a_dir}) answered the {a.cfg.variant} sets and run B ({b_dir}) the {b.cfg.variant} "
                        "sets: their questions differ; compare runs of the same variant")
    rounds = min(a.rounds, b.rounds)
    tasks, only_in_a, only_in_b, skipped = [], {}, {}, {}
    for task in [t for t in a.cfg.tasks if t in b.cfg.tasks]:
        mine, theirs = a.questions(task), b.questions(task)
        common = sorted(mine.keys() & theirs.keys())
        only_in_a[task], only_in_b[task] = len(mine.keys() - theirs.keys()), len(theirs.keys() - mine.keys())
        differing = [i for i in common if _turns(mine[i]) != _turns(theirs[i])]
        if differing:
            raise UserError(f"task {task}: question {differing[0]} differs between run A and run B "
                            f"({len(differing)} questions do): they did not answer the same benchmark data")
        if not common:
            continue
        prompts = load_spec(task, a.cfg.task_options.get(task)).variant(a.cfg.variant).pairwise_prompts
        if prompts is None:
            skipped[task] = f"its {a.cfg.variant} variant gives no pairwise_prompts (add them to its task file)"
            continue
        tasks.append(task)
    if not tasks or rounds == 0:
        lacking = "; ".join(f"{t}: run A lacks {only_in_b[t]}, run B lacks {only_in_a[t]}" for t in only_in_a)
        raise UserError(f"run A ({a_dir}) and run B ({b_dir}) have no question in common to compare"
                        + (f" ({lacking})" if lacking else " (no benchmark in common)")
                        + ("; skipped: " + "; ".join(f"{t}: {why}" for t, why in skipped.items()) if skipped else ""))
    _say_what_is_compared(a, b, tasks, only_in_a, only_in_b, skipped)
    compared = {(t, i) for t in tasks for i in a.questions(t).keys() & b.questions(t).keys()}
    answers_dir = answers_dir or out
    answers_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(answers_dir / ANSWERS_A, _answers(a.generations, compared, rounds))
    write_jsonl(answers_dir / ANSWERS_B, _answers(b.generations, compared, rounds))
    data = a.cfg.snapshot()
    data["model"] = {"backend": "replay", "path": str((answers_dir / ANSWERS_A).resolve()), "format": "harness",
                     "source_model": answering_model(a.cfg)}
    data["generation"]["batch_size"] = "auto"  # an hf-only setting; the replay backend refuses anything else
    data["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", out.resolve().name)
    data["rounds"] = rounds
    data["tasks"] = tasks
    data["published"] = "none"  # a win rate has no published row
    data["task_options"] = {t: _pairwise_options(data["task_options"].get(t, {})) for t in tasks}
    data["pairwise"] = {"run_a": str(a_dir), "run_b": str(b_dir), "answers_b": str((answers_dir / ANSWERS_B).resolve()),
                        "model_b": answering_model(b.cfg), "rounds_a": a.rounds, "rounds_b": b.rounds, "only_in_a": {t: only_in_a[t] for t in tasks},
                        "only_in_b": {t: only_in_b[t] for t in tasks}, "skipped": skipped}
    return build_config(data, f"{a_dir}/config.yaml", overrides)


def _turns(item: Item | None) -> tuple[str, ...] | None:
    return item.turns if item is not None else None


def _pairwise_options(options: dict) -> dict:
    """Run A's options of a task, judged by the pairwise kind, with no published column (a win rate has none)."""
    report = dict(options.get("report", {}), published=None)
    return {**options, "metric": PAIRWISE, "report": report}


def _answers(generations: list[Generation], compared: set[tuple[str, str]], rounds: int) -> Iterable[dict]:
    return (g.to_dict() for g in generations if (g.task, g.item_id) in compared and g.round <= rounds)


def _say_what_is_compared(a: Source, b: Source, tasks: list[str], only_in_a: dict[str, int], only_in_b: dict[str, int],
                          skipped: dict[str, str]) -> None:
    for task in only_in_a:
        if only_in_a[task] or only_in_b[task]:
            print(f"pairwise: {task}: run B lacks {only_in_a[task]} of run A's questions and run A lacks "
                  f"{only_in_b[task]} of run B's; they are not compared", file=sys.stderr)
    for task, why in skipped.items():
        print(f"pairwise: {task} skipped: {why}", file=sys.stderr)
    for source, other, which in ((a, b, "run A"), (b, a, "run B")):
        alone = [t for t in source.cfg.tasks if t not in other.cfg.tasks]
        if alone:
            print(f"pairwise: only {which} has {', '.join(alone)}; not compared", file=sys.stderr)
    if a.rounds != b.rounds:
        print(f"pairwise: run A has {a.rounds} rounds and run B {b.rounds}: comparing rounds 1-{min(a.rounds, b.rounds)}",
              file=sys.stderr)
    name_a, name_b = model_label(a.cfg)[0], model_label(b.cfg)[0]
    print(f"pairwise: {name_a} (A) against {name_b} (B) on {', '.join(tasks) or 'nothing'}", file=sys.stderr)


def read_opponent(cfg: RunConfig) -> dict[str, dict[Slot, Generation]]:
    """Run B's answers of a pairwise run, per task and slot (what `Task.opponent` holds)."""
    from .sources import read_jsonl

    assert cfg.pairwise is not None
    path = Path(cfg.pairwise.answers_b)
    if not path.is_file():
        raise UserError(f"pairwise.answers_b: {path} not found; run B's answers are part of the pairwise folder — run "
                        "pairwise again from run A and run B")
    by_task: dict[str, dict[Slot, Generation]] = {}
    for _, row in read_jsonl(path, "pairwise.answers_b"):
        generation = Generation.from_dict(row)
        by_task.setdefault(generation.task, {})[generation.slot] = generation
    return by_task


def compared_with(task: Task, answers: dict[Slot, Generation]) -> Task:
    """`task` judging its answers against `answers` (run B's), on the questions B answered."""
    answered = {slot.item_id for slot in answers}
    return replace(task, items=[item for item in task.items if item.item_id in answered], opponent=answers)
