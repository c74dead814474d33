"""`python -m eval …`: run, card, rejudge, agree, report, compare, view, runs, configs, tasks, fetch, check, cache,
mock-judge.

Exit codes: 0 success, 2 a user error (one line on stderr, no traceback), 3 and 4 a run that was reported but whose
numbers do not stand as they are (outcome.py), 1 a `cache verify` that found records that do not verify, 130
interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import redact
from .config import BUNDLED_CONFIGS, MAX_ROUNDS, MockSettings, RunConfig, load_config
from .errors import UserError

if TYPE_CHECKING:
    from .card import CardOptions, Row
    from .results import PairwiseSummary, RunSummary


def _quiet_libraries() -> None:
    """Warnings and errors only, no download bars. Through the environment, which transformers and datasets read
    when (and only if) a command imports them: importing them here would cost every command a second or two."""
    for variable, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                            ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                            ("DATASETS_VERBOSITY", "error"), ("HF_HUB_VERBOSITY", "error")):
        os.environ.setdefault(variable, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact_record)
    for name in ("httpx", "httpx2", "openai", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _redact_record(record: logging.LogRecord) -> bool:
    record.msg, record.args = redact.text(record.getMessage(), credentials=True), None
    return True


class _Version(argparse.Action):
    """The harness's version, its commit when run from a checkout, and the folder of the package that answered: a
    folder of the working directory named `eval` would answer `python -m eval` instead (the `llmjp-eval` script
    always runs this one)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None):  # noqa: A002
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from . import __version__
        from .manifest import git_commit

        commit = git_commit()
        print(f"llmjp-eval {__version__}" + (f" (git {commit[:12]})" if commit else "") +
              f", package at {Path(__file__).resolve().parent}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description="llm-jp-4 model-card evaluation harness")
    parser.add_argument("--version", action=_Version, help="print the version and where this package is, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="generate, judge and report one configuration",
                         description="Run a configuration end to end; a second run resumes and computes only what is missing.")
    run.add_argument("config", nargs="?", default=str(BUNDLED_CONFIGS / "smoke.yaml"),
                     help="YAML config: a path, or a bundled config by name (default: the offline smoke config)")
    run.add_argument("--out", type=Path, help="run directory (default: <output_dir>/<name>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set judge.concurrency=8 (repeatable)")
    run.add_argument("--limit", type=int, help="only the first N items of each task")
    run.add_argument("--rounds", type=int, help="number of rounds (adding rounds to a run computes only the new ones)")
    run.add_argument("--tasks", help="comma-separated subset of the config's tasks")
    run.add_argument("--force", action="store_true", help="continue in a run directory made with a different model or judge")
    run.add_argument("--dry-run", action="store_true", help="print request counts, estimated tokens and cost; send nothing")

    card = sub.add_parser("card", help="the whole model card: every row's run on this machine's GPUs (or a Slurm job array), one table",
                          description="Run every row of the model card (default: every bundled config of a card row) into "
                                      "DIR/<row>/, each an ordinary resumable `run`: one row per GPU at a time, rows "
                                      "generated through an API or a server beside them, one judge budget for all; then "
                                      "one table of every measured row beside its published row.")
    card.add_argument("configs", nargs="*", metavar="CONFIG", help="the rows' configs (default: the bundled card rows)")
    card.add_argument("--out", type=Path, default=Path("results") / "card", help="the card's directory (default: results/card)")
    card.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key of every row, e.g. --set judge.requests_per_minute=500 (repeatable)")
    card.add_argument("--limit", type=int, help="only the first N items of each task, in every row")
    card.add_argument("--rounds", type=int, help="number of rounds of every row")
    card.add_argument("--tasks", help="comma-separated subset of the rows' tasks")
    card.add_argument("--force", action="store_true", help="continue in row directories made with a different model or judge")
    card.add_argument("--gpus", help="the GPUs rows may use, as CUDA_VISIBLE_DEVICES names them, e.g. 0,1 (default: every visible GPU)")
    card.add_argument("--dry-run", action="store_true", help="per row and in total: requests, judge tokens and cost, "
                                                             "generation tokens and GPU time; send nothing")
    card.add_argument("--tok-s", action="append", default=[], metavar="[ROW=]RATE",
                      help="--dry-run: generation tokens per second for the GPU time, every GPU row's or ROW's: a number, or "
                           "a file holding benchmarks/gen_throughput.py's output (repeatable)")
    card.add_argument("--answer-tokens", type=int, metavar="N",
                      help="--dry-run: tokens per answer of a row without stored answers (default 2700, a thinking "
                           "model's mean at a 16 k budget; at most the row's max_new_tokens)")
    card.add_argument("--slurm", action="store_true", help="write Slurm job-array scripts (DIR/slurm/) instead of running")
    card.add_argument("--slurm-throttle", type=int, metavar="N", help="--slurm: at most N tasks of each array at once")
    card.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                      help="--slurm: an #SBATCH line of every script, e.g. --sbatch-option=--partition=gpu (repeatable)")
    card.add_argument("--collect", type=Path, metavar="DIR",
                      help="build the card's table from the row folders under DIR, wherever they ran; run nothing")

    rejudge = sub.add_parser("rejudge", help="judge a run's stored answers again with another judge (no model, no GPU)",
                             description="A new run over RUN's stored answers, judged with the judge settings given "
                                         "with --set; resumable like any run.")
    rejudge.add_argument("run_dir", type=Path, metavar="RUN")
    rejudge.add_argument("--out", type=Path, required=True, help="the new run's directory")
    rejudge.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="judge setting, e.g. --set judge.model=gpt-5-mini (repeatable)")
    rejudge.add_argument("--force", action="store_true", help="continue in a directory made with a different judge")
    rejudge.add_argument("--dry-run", action="store_true", help="print request counts, estimated tokens and cost; send nothing")

    pairwise = sub.add_parser("pairwise", help="judge run A's stored answers against run B's, in both orders (no model, "
                                               "no GPU)",
                              description="A new run in --out: every answer of RUN_A to a question RUN_B also answered "
                                          "(same round and turn) is compared with RUN_B's by the judge, once in each "
                                          "order; win / tie / loss counts, FastChat's win rates with a bootstrap CI "
                                          "over questions and the position consistency per benchmark, category and "
                                          "round. Resumable and cached like any run.")
    pairwise.add_argument("run_a", type=Path, metavar="RUN_A")
    pairwise.add_argument("run_b", type=Path, metavar="RUN_B")
    pairwise.add_argument("--out", type=Path, required=True, help="the pairwise run's directory")
    pairwise.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="judge setting, e.g. --set judge.model=gpt-5-mini (repeatable)")
    pairwise.add_argument("--force", action="store_true", help="continue in a directory made with a different judge")
    pairwise.add_argument("--dry-run", action="store_true", help="print request counts, estimated tokens and cost; send "
                                                                 "nothing (nothing is written in a new --out)")

    agree = sub.add_parser("agree", help="agreement between two judges on the same answers, or a judge's rounds",
                           description="Two runs over the same answers (RUN_A RUN_B): agreement per task and metric, "
                                       "bias with a paired bootstrap CI, confusion matrices, largest disagreements. "
                                       "One run: round-to-round agreement of its judge and its share of the SD. "
                                       "--rows A1:B1 A2:B2 …: whether the two judges order the rows alike.")
    agree.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN")
    agree.add_argument("--rows", nargs="+", default=[], metavar="A:B",
                       help="model rows judged by judge A and judge B (run directories A:B), two or more")
    agree.add_argument("--out", type=Path, help="also write agree.md, agree.json and plots here")
    agree.add_argument("--top", type=int, default=10, help="largest disagreements listed per task (default 10)")

    report = sub.add_parser("report", help="rebuild every report file of a run from its store")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--out", type=Path, help="write the report files into this folder instead of the run directory "
                                                 "(the store is only read: works on a read-only run)")

    compare = sub.add_parser("compare", help="one model-card table over several runs, with paired differences")
    compare.add_argument("run_dirs", type=Path, nargs="+")
    compare.add_argument("--reference", type=Path, help="published table (default: the bundled eval/resources/model_card.csv)")
    compare.add_argument("--out", type=Path, help="also write compare.md, compare.json and plots here")

    view = sub.add_parser("view", help="write the self-contained report.html of one run, or a comparison of several",
                          description="Write report.html (tables, plots, every item with its judge messages; one file, "
                                      "no network) into the run directory, or --out for several runs, and print its path.")
    view.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN")
    view.add_argument("--out", type=Path, help="a folder (report.html is written into it) or a .html path; needed for several runs")
    view.add_argument("--open", action="store_true", help="open the page in the default browser")
    view.add_argument("--serve", action="store_true", help="serve the page on localhost until Ctrl-C (for a remote node: ssh -L)")
    view.add_argument("--host", default="127.0.0.1", help="address for --serve (default 127.0.0.1)")
    view.add_argument("--port", type=int, default=8765, help="port for --serve (default 8765; 0 picks a free one)")

    runs = sub.add_parser("runs", help="one table of the runs in folders (default results/), with links in --out",
                          description="Every run found in the folders (a folder holding run.sqlite, at any depth): "
                                      "model, reasoning effort, profile, judge, rounds, complete or what is missing, "
                                      "each benchmark's mean and Δ vs published; read from each run's summary.json "
                                      "and manifest.json only.")
    runs.add_argument("folders", type=Path, nargs="*", default=[Path("results")], metavar="DIR")
    runs.add_argument("--out", type=Path, help="also write index.html (a folder, or an .html path) linking each run's report.html")

    sub.add_parser("configs", help="list the bundled configs with the published row each reproduces",
                   description="Every bundled config (run one by name: `python -m eval run NAME`), its backend and "
                               "model, and the row of the model card it reproduces.")

    tasks = sub.add_parser("tasks", help="list the registered tasks with their sources and item counts")
    tasks.add_argument("--variant", default="full", choices=["full", "sample"])
    tasks.add_argument("--config", help="use this config's asset_mirrors and task_options")

    fetch = sub.add_parser("fetch", help="download and verify everything a config needs (for offline GPU nodes)")
    fetch.add_argument("config")
    fetch.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    fetch.add_argument("--no-model", action="store_true",
                       help="skip the model weights (the tokenizer is still fetched: a dry run needs it)")

    check = sub.add_parser("check", help="everything a config needs, offline first (key, cached data, tokenizer, weights), "
                                         "then one judge request",
                           description="Say at once everything the run would miss, one line each with its fix; then "
                                       "send one tiny judge request (key, model, parameters) when the key is there.")
    check.add_argument("config")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    cache = sub.add_parser("cache", help="verify, summarise or prune a shared judge cache",
                           description="verify: read every record as a run would and list those that do not verify "
                                       "(exit 1 if any); stats: records per judge and status; prune: remove the records "
                                       "that do not verify, an older version's records and, with --older-than, old ones.")
    cache.add_argument("action", choices=["verify", "stats", "prune"])
    cache.add_argument("path", type=Path, metavar="PATH",
                       help="the cache file (a run's default: judge-cache.sqlite in $LLMJP_EVAL_CACHE or ~/.cache/llmjp-eval)")
    cache.add_argument("--older-than", type=float, metavar="DAYS", help="prune: also remove records written before then")

    mock = sub.add_parser("mock-judge", help="serve the OpenAI-compatible mock judge/generator")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8000)
    mock.add_argument("--api-key-env", help="require the key held in this environment variable")
    mock.add_argument("--reject-param", action="append", default=[], help="answer 400 when a request sets this parameter")
    for name, field in MockSettings.model_fields.items():
        mock.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=field.default, help=field.description)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given (tests call main() in-process)
    _quiet_libraries()
    received: list[int] = []
    try:
        with _stopped_by_signals(received):
            return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {redact.text(str(e), credentials=True)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        if not received:  # a Ctrl-C that came some other way than through the handler, which has said it already
            print(_stop_message(signal.SIGINT), file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)


_STOPPED_BY: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def _stop_message(signum: int) -> str:
    return (f"{_STOPPED_BY[signum]} ({signal.Signals(signum).name}): stopping; everything stored so far is kept — run the "
            "same command again to resume")


@contextmanager
def _stopped_by_signals(received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM (what schedulers send before a kill) stop a command the same way, one line said at once.

    Inside the event loop the signal cancels every task, so the stop lands at an `await` and never in the middle of
    a store write; elsewhere it raises KeyboardInterrupt. A second signal while stopping exits at once: the store is
    consistent at every instant, as the kill tests show. A signal the parent set to be ignored stays ignored."""
    def stop(signum: int, frame: object) -> None:
        if received:
            print(f"{_STOPPED_BY[signum]} again: exiting now; everything stored so far is kept", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        received.append(signum)
        print("\n" + _stop_message(signum), file=sys.stderr, flush=True)  # now: what is in flight may take a while
        # Requests cut off mid-connection leave coroutines that were never awaited; that is expected here.
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KeyboardInterrupt from None
        loop.call_soon_threadsafe(lambda: [task.cancel() for task in asyncio.all_tasks(loop)])

    main = threading.current_thread() is threading.main_thread()  # only the main thread may install handlers
    previous = {sig: signal.signal(sig, stop) for sig in _STOPPED_BY if main and signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    from .pipeline import RunOptions, run
    from .preflight import fetch_command

    cfg = load_config(args.config, args.overrides)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {args.limit})")
    if args.rounds is not None and not 1 <= args.rounds <= MAX_ROUNDS:
        raise UserError(f"--rounds must be between 1 and {MAX_ROUNDS} (got {args.rounds})")
    tasks = None
    if args.tasks is not None:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not tasks:
            raise UserError(f"--tasks {args.tasks!r} names no task; give a comma-separated subset of {', '.join(cfg.tasks)}")
        unknown = [t for t in tasks if t not in cfg.tasks]
        if unknown:
            raise UserError(f"--tasks: {', '.join(unknown)} not in the config's tasks ({', '.join(cfg.tasks)})")
    options = RunOptions(out=args.out, limit=args.limit, rounds=args.rounds, tasks=tasks, force=args.force,
                         dry_run=args.dry_run, command=["python", "-m", "eval", *args.argv],
                         fetch=fetch_command(args.config, args.overrides))
    summary = run(cfg, options)
    return 0 if isinstance(summary, dict) else _ended(summary, options.command)  # a dict: a dry run's estimate


def _ended(summary: RunSummary | PairwiseSummary, command: list[str], replayed_from: str | None = None) -> int:
    """The last lines of a reported run (what is wrong with its numbers, if anything) and its exit code."""
    from .outcome import outcome

    result = outcome(summary, shlex.join(command), replayed_from)
    for line in result.lines:
        print(redact.text(line, credentials=True), file=sys.stderr)
    return result.code


def _rejudge(args: argparse.Namespace) -> int:
    from .pipeline import RunOptions, run
    from .preflight import fetch_command
    from .rejudge import SOURCE_FILE, rejudge_config

    command = ["python", "-m", "eval", *args.argv]
    fetch = fetch_command(str(args.run_dir / "config.yaml"))
    if args.dry_run:
        # The answers replayed, for the estimate: in a rejudge begun before, its own file (rewritten from RUN as the
        # run would), so its stored answers stand; else in a folder that goes away.
        with tempfile.TemporaryDirectory(prefix="llmjp-rejudge-") as temporary:
            answers = args.out if (args.out / SOURCE_FILE).is_file() else Path(temporary)
            cfg, limit = rejudge_config(args.run_dir, args.overrides, args.out, answers)
            run(cfg, RunOptions(out=args.out, limit=limit, force=args.force, dry_run=True, command=command, fetch=fetch))
        return 0
    cfg, limit = rejudge_config(args.run_dir, args.overrides, args.out)
    summary = run(cfg, RunOptions(out=args.out, limit=limit, force=args.force, command=command, fetch=fetch))
    assert not isinstance(summary, dict)  # a dict is a dry run's estimate
    return _ended(summary, command, str(args.run_dir))


def _card(args: argparse.Namespace) -> int:
    from .card import ANSWER_TOKENS, CardOptions, card_rows, check_switches, collect, dry_run, run_card

    if args.collect is not None:
        if args.configs or args.dry_run or args.slurm:
            raise UserError("--collect DIR builds the table of the rows under DIR: give no CONFIG, --dry-run or --slurm with it")
        result = collect(args.collect)
    else:
        tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
        if tasks == []:
            raise UserError(f"--tasks {args.tasks!r} names no task; give a comma-separated subset of the rows' tasks")
        options = CardOptions(args.out, args.overrides, args.limit, args.rounds, tasks, args.force)
        rows = card_rows(args.configs, args.overrides)
        check_switches(rows, options)
        if args.dry_run:
            if args.answer_tokens is not None and args.answer_tokens < 1:
                raise UserError(f"--answer-tokens must be at least 1 (got {args.answer_tokens})")
            dry_run(rows, options, args.tok_s, args.answer_tokens or ANSWER_TOKENS)
            return 0
        if args.slurm:
            return _card_slurm(rows, options, args)
        result = run_card(rows, options, args.gpus, shlex.join(["python", "-m", "eval", *args.argv]))
    for line in result.lines:
        print(redact.text(line, credentials=True), file=sys.stderr)
    return result.code


def _card_slurm(rows: list[Row], options: CardOptions, args: argparse.Namespace) -> int:
    from .slurm import shares_note, write_scripts

    if args.slurm_throttle is not None and args.slurm_throttle < 1:
        raise UserError(f"--slurm-throttle must be at least 1 (got {args.slurm_throttle})")
    paths = write_scripts(rows, options, args.slurm_throttle, args.sbatch_option)
    for path in paths[:-1]:
        print(f"wrote {path}")
    print(f"wrote {paths[-1]}: submits every array, then `python -m eval card --collect {options.out}` when they have ended")
    print(shares_note(rows, args.slurm_throttle))
    return 0


def _pairwise(args: argparse.Namespace) -> int:
    from .pairwise import ANSWERS_A, pairwise_config
    from .pipeline import RunOptions, run

    command = ["python", "-m", "eval", *args.argv]
    if args.dry_run:
        # The answers compared, for the estimate: in a comparison begun before, its own files (rewritten from the
        # sources as the run would), so its stored answers stand; else in a folder that goes away.
        with tempfile.TemporaryDirectory(prefix="llmjp-pairwise-") as temporary:
            answers = args.out if (args.out / ANSWERS_A).is_file() else Path(temporary)
            cfg = pairwise_config(args.run_a, args.run_b, args.overrides, args.out, answers)
            run(cfg, RunOptions(out=args.out, force=args.force, dry_run=True, command=command))
        return 0
    cfg = pairwise_config(args.run_a, args.run_b, args.overrides, args.out)
    summary = run(cfg, RunOptions(out=args.out, force=args.force, command=command))
    assert not isinstance(summary, dict)  # a dict is a dry run's estimate
    return _ended(summary, command, f"{args.run_a} or {args.run_b}")


def _agree(args: argparse.Namespace) -> int:
    from .agree import agree_command

    agree_command(args.run_dirs, args.rows, args.out, args.top)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import regenerate

    regenerate(args.run_dir, args.out)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare

    compare(args.run_dirs, args.reference, args.out)
    return 0


def _view(args: argparse.Namespace) -> int:
    from .view import open_in_browser, serve, write_page

    path = write_page(args.run_dirs, args.out)
    print(path)
    if args.open:
        open_in_browser(path)
    if args.serve:
        serve(path, args.host, args.port)
    return 0


def _configs(args: argparse.Namespace) -> int:
    from .published import card_row
    from .summary import published_label

    rows = [("config", "backend", "model", "published row")]
    for path in sorted(BUNDLED_CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        match = card_row(cfg)
        published = published_label(match.row) if match.row is not None else f"– ({match.note})"
        rows.append((path.stem, cfg.model.backend, cfg.model.path, published))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]]))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from .runs import runs_command

    runs_command(args.folders, args.out)
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from .task_files import task_names
    from .tasks import cache_status, load_spec, load_task, task_file_refs

    cfg = load_config(args.config) if args.config else None
    mirrors = cfg.asset_mirrors if cfg else {}
    rows = [("task", "metric", "variant", "source", "expected", "items", "status")]
    for name in task_names():
        spec = load_spec(name, cfg.task_options.get(name) if cfg else None)
        if args.variant not in spec.variants:  # a user's benchmark may have only its full data
            rows.append((name, spec.metric, args.variant, "–", "–", "–", f"no {args.variant} variant"))
            continue
        variant = spec.variant(args.variant)
        data = variant.data
        source = f"{data.dataset} ({data.config}/{data.split})" if data.format == "hf" else \
            ", ".join(r.url.rsplit("/", 1)[-1] if r.url else str(r.path) for r in task_file_refs(spec, args.variant)[:2])
        status = cache_status(spec, args.variant, mirrors)
        count = "–"
        if status == "cached":
            try:
                count = str(len(load_task(spec, args.variant, mirrors).items))
            except UserError as e:
                status = f"error: {e}"
        expected = variant.expected_items or (spec.expected_items if args.variant == "full" else "–")
        rows.append((name, spec.metric, args.variant, source, str(expected), count, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .sources import resolve_file
    from .tasks import load_spec, load_task, task_file_refs

    cfg = load_config(args.config, args.overrides)
    for name in cfg.tasks:
        spec = load_spec(name, cfg.task_options.get(name))
        for ref in task_file_refs(spec, cfg.variant):
            resolved = resolve_file(ref, cfg.asset_mirrors)
            print(f"ok  {resolved.label}: {resolved.path} (sha256 {resolved.sha256[:12]}…)")
        task = load_task(spec, cfg.variant, cfg.asset_mirrors)
        print(f"ok  task {name}: {len(task.items)} items")
        for warning in task.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
    if cfg.model.backend in ("hf", "vllm"):
        _fetch_model(cfg.model.path, getattr(cfg.model, "revision", None), weights=not args.no_model)
    return 0


# What a tokenizer and chat template are made of (no weights): enough for a dry run.
TOKENIZER_FILES = ["*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt"]


def _fetch_model(path: str, revision: str | None, weights: bool) -> None:
    from .smoke_model import builtin_path, is_builtin

    if is_builtin(path):
        if weights:  # else: tokenizer and weights are built together, on first use
            print(f"ok  model {path}: {builtin_path(path)}")
        return
    if Path(path).expanduser().exists():
        print(f"ok  model {path}: local directory")
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        local = snapshot_download(path, revision=revision, allow_patterns=None if weights else TOKENIZER_FILES)
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise UserError(f"model.path: cannot download {path} ({str(e).splitlines()[0]}); check HF_TOKEN and the network") from None
    print(f"ok  model {path}: {local}" if weights else f"ok  tokenizer of {path}: {local} (weights skipped: --no-model)")


def _check(args: argparse.Namespace) -> int:
    """Everything the run needs, the offline part first; one line per thing, every missing thing said at once."""
    from .pipeline import load_tasks
    from .preflight import fetch_command, inspect, server_of, unreachable

    cfg = load_config(args.config, args.overrides)
    found = inspect(cfg, "check", fetch_command(args.config, args.overrides))
    print(f"ok       config {args.config}: {len(cfg.tasks)} tasks ({cfg.variant}), {cfg.rounds} rounds, judge {cfg.judge.model}")
    for note in found.notes:
        print(note)
    missing = [m.line() for m in found.missing]
    tasks = None
    if not found.stopping("data"):
        try:
            tasks = load_tasks(cfg, None)  # downloads the files and datasets whose servers answer
            print(f"ok       data: {len(tasks)} tasks, {sum(len(t.items) for t in tasks.values())} items")
        except UserError as e:
            missing.append(f"missing  {e}")
    for what in found.downloads:
        if what.startswith(("tokenizer", "model weights")):
            print(f"note     {what}; the run downloads it (or `python -m eval fetch` now)")
    if cfg.model.backend == "openai":
        for server, reason in unreachable({server_of(url) for url in cfg.model.base_urls}).items():
            missing.append(f"missing  model.base_urls: {server} does not answer ({reason}) → start the server there, "
                           "or correct the address")
    if cfg.judge.mock or os.environ.get(cfg.judge.api_key_env):  # no key: the request could only fail
        missing += _check_judge(cfg, tasks)
    for line in missing:
        print(redact.text(line, credentials=True))
    if missing:
        raise UserError(f"{len(missing)} of the things the run needs {'is' if len(missing) == 1 else 'are'} missing "
                        "(listed above, each with its fix)")
    return 0


def _check_judge(cfg: RunConfig, tasks: dict | None) -> list[str]:
    """The one judge request, when the judge's server answers at all; what is missing, as lines."""
    from .judge.client import JudgeClient
    from .judge.ledger import Ledger
    from .judge.providers import judge_address
    from .preflight import judge_server, unreachable

    if not cfg.judge.mock:
        server = judge_server(cfg.judge)
        for reason in unreachable([server]).values():
            return [f"missing  judge: {server} does not answer ({reason}) → check the network, judge.base_url or the proxy"]

    async def probe(base_url: str | None) -> list[str]:
        client = JudgeClient(cfg.judge, base_url, Ledger(cfg.judge), profile=cfg.profile,
                             tasks=tasks.values() if tasks else None)
        try:
            await client.preflight()
            return client.warnings
        finally:
            await client.close()

    try:
        with judge_address(cfg.judge, tasks.values() if tasks else None) as base_url:
            warnings = asyncio.run(probe(base_url))
    except UserError as e:
        return [f"missing  {e}"]
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"ok       judge {cfg.judge.model}: reachable, key accepted, parameters accepted")
    return []


def _cache(args: argparse.Namespace) -> int:
    from .judge.cache import cache_command

    if args.older_than is not None and (args.action != "prune" or args.older_than < 0):
        raise UserError("--older-than DAYS goes with `cache prune` and is 0 or more")
    return cache_command(args.action, args.path, args.older_than)


def _mock_judge(args: argparse.Namespace) -> int:
    from .judge.mock_server import MockServer

    settings = MockSettings(**{name: getattr(args, name) for name in MockSettings.model_fields})
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env: the environment variable {args.api_key_env} is not set")
        redact.register(api_key)
    try:
        server = MockServer(settings, args.host, args.port, api_key, tuple(args.reject_param))
    except OSError as e:
        raise UserError(f"mock-judge: cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    print(f"mock judge serving {server.url} (counters at http://{server.host}:{server.port}/mock/counters)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


COMMANDS = {"run": _run, "card": _card, "rejudge": _rejudge, "pairwise": _pairwise, "agree": _agree, "report": _report,
            "compare": _compare, "view": _view, "runs": _runs, "configs": _configs, "tasks": _tasks, "fetch": _fetch,
            "check": _check, "cache": _cache, "mock-judge": _mock_judge}
