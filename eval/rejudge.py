"""`rejudge RUN --set judge.…=… --out DIR`: a new run that judges RUN's stored answers with another judge.

The new run is RUN's resolved config with two changes: the model becomes a replay of RUN's generations (exported
from RUN's store into DIR, so DIR stands on its own and resumes like any run) naming RUN's model as its source, and
the judge settings given with `--set`. The answers, and so the judge prompts, are byte for byte those RUN's judge saw;
no model is loaded. RUN's rounds, tasks and item limit are kept (read from its plan).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, build_config, parse_override
from .errors import UserError
from .records import Planned, SlotRow
from .run_meta import CONFIG
from .rundir import write_jsonl
from .statuses import TRANSIENT_GENERATION
from .store import Store, open_run

SOURCE_FILE = "source_generations.jsonl"
TASK_JUDGE_KEYS = ("judge", "judge_prompts", "judge_system_prompt")  # per-task settings that belong to the judge


def check_override(text: str, command: str = "rejudge") -> None:
    """A rejudge (or pairwise) changes the judge only: anything else would judge answers other than RUN's."""
    parts, _ = parse_override(text)
    if parts[0] in ("judge", "name", "asset_mirrors"):
        return
    if parts[0] == "task_options" and len(parts) >= 3 and parts[2] in TASK_JUDGE_KEYS:
        return
    raise UserError(f"--set {text!r}: {command} changes only the judge (judge.*, task_options.<task>.judge*, "
                    "asset_mirrors, name); to change the model or generation, start a new run")


def rejudge_config(run_dir: Path, overrides: list[str], out: Path, answers_dir: Path | None = None) -> tuple[RunConfig, int]:
    """The config of the rejudge run in `out`, and the item limit that reproduces RUN's plan. RUN's stored
    generations are written to `answers_dir/source_generations.jsonl` (the replay file; default `out`, a dry run
    gives a temporary folder)."""
    for text in overrides:
        check_override(text)
    if out.resolve() == run_dir.resolve():
        raise UserError(f"--out {out}: a rejudge is a new run; give a directory other than {run_dir}")
    store = open_run(run_dir, "the run directory whose answers to rejudge")
    try:
        original = store.meta(CONFIG)
        plan = store.plan()
        _export(store, plan, (answers_dir or out) / SOURCE_FILE, run_dir)
    finally:
        store.close()
    assert original is not None  # open_run: a planned run
    data = original.snapshot()
    model = data["model"]
    source = model.get("source_model") if model["backend"] == "replay" else None
    data["model"] = {"backend": "replay", "path": str(((answers_dir or out) / SOURCE_FILE).resolve()), "format": "harness",
                     "source_model": source or model}
    data["generation"]["batch_size"] = "auto"  # an hf-only setting; the replay backend refuses anything else
    data["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", out.resolve().name)
    data["rounds"] = max((p.round for p in plan), default=data["rounds"])
    data["tasks"] = [t for t in data["tasks"] if any(p.task == t for p in plan)] or data["tasks"]
    cfg = build_config(data, f"{run_dir}/config.yaml", overrides)
    items_per_task = [len({p.item_id for p in plan if p.task == t}) for t in cfg.tasks]
    return cfg, max(items_per_task, default=0)


@dataclass(frozen=True)
class GenerationStatusRow(SlotRow):
    status: str


def _export(store: Store, plan: list[Planned], path: Path, run_dir: Path) -> None:
    write_jsonl(path, (g.to_dict() for g in store.records("generation")))
    stored = {g.slot: g.status for g in store.fields("generation", GenerationStatusRow)}
    missing = sum(1 for p in plan if p.slot not in stored)
    failed = sum(1 for status in stored.values() if status in TRANSIENT_GENERATION)
    if missing or failed:
        print(f"WARNING: {run_dir} has {missing} planned answers not generated yet and {failed} failed generations; "
              "the rejudge cannot judge them as RUN would: finish RUN, then rejudge again", file=sys.stderr)
