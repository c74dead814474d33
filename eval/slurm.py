"""`card --slurm`: the card as Slurm job arrays. Each array task is one row's `run` command, the one `card` starts
on one machine; the rows are grouped by the GPUs they need (a job array asks for one set of resources), one script
per group, and `submit.sh` submits them all plus a last job that builds the card's table (`card --collect DIR`) once
every task has ended. A task run again resumes its row like any `run`.

The rows run on several machines, where no file can hold one judge budget for all of them (SQLite's locks are not
reliable over NFS): each task gets its share of the account's limits instead — requests and tokens per minute and
judgments in flight ÷ the number of tasks that can run at once (the sum of the arrays' throttles), the cost cap ÷
the number of rows. README ("Reproduce the whole card") says how a gateway in front of the judge can hold the
account's limits for all tasks together.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

from .card import CardOptions, Row, run_command
from .config import parse_override
from .rundir import write_text

SHARED_KEYS = ("requests_per_minute", "tokens_per_minute", "concurrency", "budget_usd")  # judge.<key>, divided


def judge_shares(rows: list[Row], concurrent: int) -> dict[str, list[str]]:
    """Per row, the --set values that give it its share of the judge limits its config sets."""
    shares = {}
    for row in rows:
        judge = row.cfg.judge
        sets = []
        if judge.requests_per_minute:
            sets.append(f"judge.requests_per_minute={judge.requests_per_minute / concurrent:g}")
        if judge.tokens_per_minute:
            sets.append(f"judge.tokens_per_minute={judge.tokens_per_minute / concurrent:g}")
        if concurrent > 1:
            sets.append(f"judge.concurrency={max(1, judge.concurrency // concurrent)}")
        if judge.budget_usd:
            sets.append(f"judge.budget_usd={judge.budget_usd / len(rows):g}")
        shares[row.name] = sets
    return shares


def write_scripts(rows: list[Row], options: CardOptions, throttle: int | None, sbatch_options: list[str]) -> list[Path]:
    """The group scripts and submit.sh under DIR/slurm/; returns their paths (submit.sh last)."""
    groups = _groups(rows)
    shares = judge_shares(rows, concurrent_tasks(rows, throttle))
    # The card's own settings of the divided limits are in the rows' configs, and so in the shares.
    options = replace(options, overrides=[o for o in options.overrides if parse_override(o)[0] not in
                                          [["judge", key] for key in SHARED_KEYS]])
    folder = options.out.resolve() / "slurm"
    (options.out.resolve() / "logs").mkdir(parents=True, exist_ok=True)  # Slurm opens the tasks' logs there
    scripts = []
    for gpus, group in sorted(groups.items()):
        name = f"card-gpu{gpus}" if gpus else "card-nogpu"
        path = folder / f"{name}.sbatch"
        write_text(path, _script(name, gpus, group, options, shares, throttle, sbatch_options))
        path.chmod(0o755)
        scripts.append(path)
    submit = folder / "submit.sh"
    collect = shlex.join([sys.executable, "-m", "eval", "card", "--collect", str(options.out.resolve())])
    logs = options.out.resolve() / "logs"
    write_text(submit, "\n".join([
        "#!/bin/bash",
        "# Submits every array of the card, then the job that builds its table when all their tasks have ended.",
        "set -euo pipefail",
        "jobs=()",
        *(f"jobs+=(\"$(sbatch --parsable {shlex.quote(str(s))} | cut -d';' -f1)\")" for s in scripts),
        "after=$(IFS=:; echo \"${jobs[*]}\")",
        f"sbatch --dependency=afterany:$after --job-name=card-collect --output={shlex.quote(str(logs / 'collect.log'))} "
        f"--wrap={shlex.quote(collect)}",
        ""]))
    submit.chmod(0o755)
    return [*scripts, submit]


def _script(name: str, gpus: int, rows: list[Row], options: CardOptions, shares: dict[str, list[str]],
            throttle: int | None, sbatch_options: list[str]) -> str:
    logs = options.out.resolve() / "logs"
    array = f"0-{len(rows) - 1}" + (f"%{throttle}" if throttle else "")
    lines = ["#!/bin/bash",
             "# One array task per row of the model card: the row's `run` command, as `python -m eval card` starts it",
             "# on one machine (a task run again resumes the row). Written by `python -m eval card --slurm`.",
             *(f"#   task {i}: {row.name}" for i, row in enumerate(rows)),
             f"#SBATCH --job-name={name}", f"#SBATCH --array={array}", f"#SBATCH --output={logs}/%x-%a.log"]
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    lines += [f"#SBATCH {option}" for option in sbatch_options]
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(Path.cwd()))}", 'case "$SLURM_ARRAY_TASK_ID" in']
    lines += [f"  {i}) exec {shlex.join(run_command(row, options, shares[row.name]))} ;;" for i, row in enumerate(rows)]
    lines += ['  *) echo "no row for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


def _groups(rows: list[Row]) -> dict[int, list[Row]]:
    """The rows by the GPUs they need: one job array each."""
    groups: dict[int, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.gpus, []).append(row)
    return groups


def concurrent_tasks(rows: list[Row], throttle: int | None) -> int:
    """How many tasks can run at once: every task, or `throttle` per array."""
    return sum(min(throttle or len(group), len(group)) for group in _groups(rows).values())


def shares_note(rows: list[Row], throttle: int | None) -> str:
    concurrent = concurrent_tasks(rows, throttle)
    return (f"Judge limits per task: the account's (the rows' judge settings) ÷ {concurrent} tasks that can run at once"
            + (f" (--slurm-throttle {throttle} per array)" if throttle else " (--slurm-throttle N runs at most N per "
               "array, and gives each task a larger share)") + f"; budget_usd ÷ {len(rows)} rows.")
