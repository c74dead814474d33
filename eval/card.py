"""`card`: the whole model card in one command. Every row is an ordinary, resumable `run` of its own config into
`DIR/<row>/` (its run name), in a process of its own — on this machine (`scheduler.py`: one per GPU at a time, the
rows that need no GPU beside them) or as a Slurm job array (`slurm.py`) — and the card's table is `compare`'s over
the row folders (`compare.py`): every measured row beside its published row, in the card's order.

On one machine every row's judge shares one budget (`judge.shared_budget` = `DIR/judge-budget.sqlite`): the
account's requests and tokens per minute, judgments in flight and cost cap hold for the sum of the rows' calls.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import compare
from .config import BUNDLED_CONFIGS, MAX_ROUNDS, RunConfig, config_path, load_config, parse_override
from .errors import UserError
from .outcome import Outcome, card_outcome
from .published import card_row
from .results import CardSummary, write_result
from .rundir import write_text
from .store import open_run
from .summary import load_published

BUDGET_FILE = "judge-budget.sqlite"
ANSWER_TOKENS = 2700  # a thinking model's mean output at a 16 k budget (benchmarks/gen_throughput.py, workload thinking)


@dataclass(frozen=True)
class Row:
    name: str  # the run's name, and its folder under the card's directory
    config: str  # the config as the run command names it: a bundled config by name, any other file by absolute path
    cfg: RunConfig  # as the row's run reads it (the card's --set applied)
    gpus: int  # GPUs its process needs; 0: something else generates (an API, a server), it runs beside the GPU rows


@dataclass
class CardOptions:
    out: Path
    overrides: list[str] = field(default_factory=list)
    limit: int | None = None
    rounds: int | None = None
    tasks: list[str] | None = None
    force: bool = False


# ---------------------------------------------------------------- the rows


def card_rows(configs: list[str], overrides: list[str]) -> list[Row]:
    """The rows in the card's order (runs without a published row after the others, as given): the configs named,
    or every bundled config that reproduces a row of the card."""
    table = load_published()
    if not configs:
        configs = [p.stem for p in sorted(BUNDLED_CONFIGS.glob("*.yaml")) if card_row(load_config(p), table).row is not None]
    rows = []
    for argument in configs:
        path = config_path(argument)
        bundled = path.parent == BUNDLED_CONFIGS and path.is_file()
        cfg = load_config(path, overrides)
        rows.append(Row(cfg.name, path.stem if bundled else str(path.resolve()), cfg, gpus_needed(cfg, str(path))))
    names = [r.name for r in rows]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"card: several configs are named {', '.join(repeated)}; each row needs a name of its own "
                        "(its folder under --out): set `name:` in the configs")
    return sorted(rows, key=lambda r: _position(r.cfg, table))


def _position(cfg: RunConfig, table: pd.DataFrame) -> int:
    row = card_row(cfg, table).row
    if row is None:
        return len(table)
    same = (table["model"] == row["model"]) & (table["reasoning_effort"] == row["reasoning_effort"])
    return int(same.to_numpy().nonzero()[0][0])


def gpus_needed(cfg: RunConfig, source: str) -> int:
    """GPUs the row's process takes: a local engine's (hf: one unless it runs on the CPU; vllm: tensor × data
    parallel); none for a model served elsewhere (openai) or replayed."""
    model = cfg.model
    if model.backend == "hf":
        if model.device.startswith("cuda:"):
            raise UserError(f"{source}: 'model.device' {model.device}: the card gives each row its GPU through "
                            "CUDA_VISIBLE_DEVICES; set model.device to auto or cuda")
        return 0 if model.device == "cpu" else 1
    if model.backend == "vllm":
        return model.tensor_parallel_size * model.data_parallel_size
    return 0


def check_switches(rows: list[Row], options: CardOptions) -> None:
    """--limit, --rounds and --tasks as `run` checks them, for every row."""
    if options.limit is not None and options.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {options.limit})")
    if options.rounds is not None and not 1 <= options.rounds <= MAX_ROUNDS:
        raise UserError(f"--rounds must be between 1 and {MAX_ROUNDS} (got {options.rounds})")
    for row in rows:
        unknown = [t for t in options.tasks or () if t not in row.cfg.tasks]
        if unknown:
            raise UserError(f"--tasks: {', '.join(unknown)} not in the tasks of row {row.name} ({', '.join(row.cfg.tasks)})")


def run_command(row: Row, options: CardOptions, extra: Sequence[str] = ()) -> list[str]:
    """The row's `run` command: its config, its folder, the card's switches and `extra` --set values."""
    command = [sys.executable, "-m", "eval", "run", row.config, "--out", str((options.out / row.name).resolve())]
    for override in [*options.overrides, *extra]:
        command += ["--set", override]
    if options.limit is not None:
        command += ["--limit", str(options.limit)]
    if options.rounds is not None:
        command += ["--rounds", str(options.rounds)]
    if options.tasks:
        command += ["--tasks", ",".join(options.tasks)]
    return command + (["--force"] if options.force else [])


def shared_budget_setting(row: Row, options: CardOptions) -> list[str]:
    """`--set judge.shared_budget=DIR/judge-budget.sqlite`, unless the row already names a budget file."""
    named = any(parse_override(o)[0] == ["judge", "shared_budget"] for o in options.overrides)
    if named or row.cfg.judge.shared_budget is not None:
        return []
    return [f"judge.shared_budget={(options.out / BUDGET_FILE).resolve()}"]


# ---------------------------------------------------------------- the card's table


def measured_dirs(folders: list[Path]) -> list[Path]:
    """The folders that hold a planned run (a row that failed before planning has nothing to show)."""
    found = []
    for folder in folders:
        try:
            open_run(folder).close()
        except UserError:
            continue
        found.append(folder)
    return found


def run_card(rows: list[Row], options: CardOptions, gpus: str | None, retry_command: str) -> Outcome:
    """Every row's run on this machine (`scheduler.py`), then the card's table; the card's outcome."""
    from .rundir import RunLock
    from .scheduler import Job, Scheduler, ended_text, visible_devices

    devices = visible_devices(gpus) if any(row.gpus for row in rows) else []
    with RunLock(options.out):  # one card per directory
        jobs = [Job(row, run_command(row, options, shared_budget_setting(row, options)), options.out / row.name,
                    options.out / "logs" / f"{row.name}.log") for row in rows]
        Scheduler(jobs, devices, options.out / "logs" / "schedule.jsonl").run()
        failed = {j.row.name: ended_text(j.code, j.log) for j in jobs if j.code is not None and j.code not in (0, 3, 4)}
        return write_card(options.out, measured_dirs([j.run_dir for j in jobs]), failed, retry_command)


def write_card(out: Path, run_dirs: list[Path], failed: dict[str, str], retry_command: str | None = None) -> Outcome:
    """table.md, table.csv, summary.json, the plots and report.html over the rows' folders; the card's outcome.
    `failed`: the rows whose run ended without its report, and what it said last."""
    from .plots import write_compare_plot
    from .view import compare_plots, write_page

    published = load_published()
    comparison = compare.build(compare.load_runs(run_dirs), published)
    text = compare.render_markdown(comparison) if comparison.runs else "No row of the card has been measured yet.\n"
    if failed:
        text += ("\nRows whose run ended without its report (the table shows what their stores hold; "
                 "logs/<row>.log has the rest):\n\n" + "".join(f"- {n}: {said}\n" for n, said in failed.items()))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "table.md", text)
    card = CardSummary(rows=compare.table_lines(comparison), runs=compare.compared_runs(comparison),
                       differences=comparison.differences, failed=failed)
    write_result(out / "summary.json", card)
    if comparison.runs:
        write_text(out / "table.csv", compare.render_csv(comparison))
        write_compare_plot(out, [r.summary for r in comparison.runs], published)
        reported = [r.dir for r in comparison.runs if (r.dir / "summary.json").is_file()]  # the page reads them
        if reported:
            write_page(reported, out, compare_plots(out))
    print(text)
    print(f"Card in {out}/ (table.md, table.csv, summary.json, report.html)")
    return card_outcome(card, retry_command)


def collect(out: Path) -> Outcome:
    """`card --collect DIR`: the table over every row folder under DIR, wherever the rows ran."""
    if not out.is_dir():
        raise UserError(f"--collect {out}: not a folder; give the card's directory (the row folders are inside it)")
    folders = sorted(p for p in out.iterdir() if (p / "run.sqlite").is_file())
    if not folders:
        raise UserError(f"--collect {out}: no row folder (a folder with run.sqlite) in it")
    return write_card(out, measured_dirs(folders), {})


# ---------------------------------------------------------------- dry run


def dry_run(rows: list[Row], options: CardOptions, rates: list[str], answer_tokens: int) -> list[dict[str, Any]]:
    """Per row and in total: answers and judge requests still to make, judge tokens and cost, generation tokens and
    the GPU time they take at the rate given (`--tok-s`). Each row is estimated by `run --dry-run`'s own code."""
    from .pipeline import RunOptions, run
    from .preflight import fetch_command

    rate_of = _rates(rates, [r.name for r in rows])
    estimates = []
    for row in rows:
        print(f"\n== {row.name}")
        run_dir = options.out / row.name
        try:
            estimate = run(row.cfg, RunOptions(out=run_dir, limit=options.limit, rounds=options.rounds, tasks=options.tasks,
                                               dry_run=True, fetch=fetch_command(row.config, options.overrides)))
        except UserError as e:
            raise UserError(f"row {row.name}: {e}") from None
        assert isinstance(estimate, dict)  # a dry run returns its estimate
        total = estimate["total"]
        per_answer, measured = _answer_tokens(run_dir, row.cfg, answer_tokens)
        tokens = total["generations"] * per_answer
        rate = rate_of.get(row.name, rate_of.get(None)) if row.gpus else None
        estimates.append({"row": row.name, "backend": row.cfg.model.backend, "gpus": row.gpus,
                          "answers": total["generations"], "tokens_per_answer": per_answer, "measured": measured,
                          "generation_tokens": tokens, "tok_s": rate,
                          "gpu_seconds": tokens / rate * row.gpus if rate else None,
                          "judge_requests": total["judge_requests"],
                          "judge_tokens": total["prompt_tokens"] + total["completion_tokens"], "cost_usd": total["cost_usd"]})
    _print_estimates(estimates, answer_tokens)
    return estimates


@dataclass(frozen=True)
class AnswerLength:
    tokens_out: int | None  # a stored answer's (`Store.fields`)


def _answer_tokens(run_dir: Path, cfg: RunConfig, default: int) -> tuple[int, bool]:
    """Tokens per answer: the mean of the row's stored answers where it has some, else `default` (at most the budget)."""
    try:
        store = open_run(run_dir)
    except UserError:
        return min(default, cfg.generation.max_new_tokens), False
    try:
        counts = [g.tokens_out for g in store.fields("generation", AnswerLength) if g.tokens_out]
    finally:
        store.close()
    if not counts:
        return min(default, cfg.generation.max_new_tokens), False
    return round(sum(counts) / len(counts)), True


def _rates(values: list[str], rows: list[str]) -> dict[str | None, float]:
    """--tok-s values: `RATE` for every row, `ROW=RATE` for one; a rate is a number (tokens per second) or a file
    holding benchmarks/gen_throughput.py's output (its JSON line's `backend_tok_s`)."""
    rates: dict[str | None, float] = {}
    for value in values:
        row, _, rate = value.rpartition("=") if "=" in value else (None, "", value)
        if row is not None and row not in rows:
            raise UserError(f"--tok-s {value}: no row named {row} (rows: {', '.join(rows)})")
        rates[row] = _rate(rate, value)
    return rates


def _rate(text: str, given: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(f"--tok-s {given}: neither a number (tokens per second) nor a file") from None
        last: float | None = None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                last = float(json.loads(line)["backend_tok_s"])
            except (ValueError, KeyError, TypeError):
                continue
        if last is None:
            raise UserError(f"--tok-s {given}: {path} holds no JSON line with backend_tok_s (the last line that "
                            "benchmarks/gen_throughput.py prints)") from None
        rate = last
    if not rate > 0:
        raise UserError(f"--tok-s {given}: the rate must be above 0")
    return rate


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _print_estimates(estimates: list[dict[str, Any]], answer_tokens: int) -> None:
    header = ["row", "backend", "GPUs", "answers", "tok/answer", "gen tokens", "tok/s", "GPU time", "judge requests",
              "judge tokens", "judge cost"]
    lines = [[e["row"], e["backend"], str(e["gpus"]), f"{e['answers']:,}",
              f"{e['tokens_per_answer']:,}{' (stored)' if e['measured'] else ''}", f"{e['generation_tokens']:,}",
              f"{e['tok_s']:,.0f}" if e["tok_s"] else "–", _duration(e["gpu_seconds"]), f"{e['judge_requests']:,}",
              f"{e['judge_tokens']:,}", "unknown price" if e["cost_usd"] is None else f"${e['cost_usd']:,.2f}"]
             for e in estimates]
    known = [e["cost_usd"] for e in estimates if e["cost_usd"] is not None]
    gpu_rows = [e for e in estimates if e["gpus"]]
    timed = [e["gpu_seconds"] for e in gpu_rows if e["gpu_seconds"] is not None]
    lines.append(["total", "", str(sum(e["gpus"] for e in estimates)), f"{sum(e['answers'] for e in estimates):,}", "",
                  f"{sum(e['generation_tokens'] for e in estimates):,}", "",
                  _duration(sum(timed)) if timed and len(timed) == len(gpu_rows) else "–",
                  f"{sum(e['judge_requests'] for e in estimates):,}", f"{sum(e['judge_tokens'] for e in estimates):,}",
                  (f"${sum(known):,.2f}" if len(known) == len(estimates) else
                   f"≥ ${sum(known):,.2f} (rows without a price left out)" if known else "unknown price")])
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    print(f"\nCard dry run: {len(estimates)} rows; nothing was sent. tok/answer: the mean of the row's stored answers, "
          f"else --answer-tokens ({answer_tokens:,}) within the row's max_new_tokens. GPU time: generation tokens ÷ "
          "tok/s × the row's GPUs (GPU-hours: h:mm:ss); rows without a GPU generate through an API or a server.")
    for line in [header, *lines]:
        print("  ".join(cell.rjust(w) if i >= 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
    if gpu_rows and len(timed) < len(gpu_rows):
        print("GPU time needs a rate: --tok-s RATE (every GPU row) or ROW=RATE, in tokens per second, or a file holding "
              "the output of benchmarks/gen_throughput.py on your GPU (its backend_tok_s).")


def command_line(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "eval", *argv])
