"""The results a run reports, as one typed schema that every reader shares: `summary.json` is written from
`RunSummary` and read back through it (validated both ways), and the tables, plots, the page, `compare`, `agree`,
`runs` and the exit code read these objects, never the file's keys; `compare.json` (`CompareResult`) and a card's
`summary.json` (`CardSummary`: its table over the row folders) are made of them. The JSON Schema of each result file is
generated from its model into `docs/` (`python -m eval.results docs`), and a test keeps the committed one equal to
the models. (inspect_ai's `EvalLog` / `EvalResults` is the pattern: one pydantic schema for the log and its viewer.)

Field names and their order are the file's, so the bytes of a summary do not depend on which version of this module
wrote it; a change of shape gets a new schema string. A file of another schema, or one the model rejects, is
refused with one line that names the file, the version and what to do. Fields added to a schema after its first
files were written have defaults, so those files still load.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError
from .records import Plot
from .rundir import write_json
from .statuses import TRANSIENT_GENERATION, TRANSIENT_JUDGMENT, GenerationStatus, JudgmentStatus

SummarySchema = Literal["llmjp-eval/summary/v2"]
SUMMARY_SCHEMA: Final[SummarySchema] = "llmjp-eval/summary/v2"
Verdict = Literal["consistent", "higher", "lower"]


class Result(BaseModel):
    """A result file, or a part of one: unknown fields are refused, nothing changes after it is made, no NaN or
    infinity (the files are strict JSON), and the generated schema requires every field a writer always writes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True,
                              json_schema_serialization_defaults_required=True)

    def dump(self) -> dict[str, Any]:
        """The JSON data of this result, with the file's field names."""
        return self.model_dump(mode="json", by_alias=True)


class MetricStats(Result):
    """One metric of a task over its rounds and questions (`metrics.summarize`)."""

    per_round: dict[int, float | None]
    """Every planned round's mean (JSON keys are the round numbers); null when the round has no valid judgment for
    this metric."""
    missing_rounds: list[int]
    """The rounds whose mean is null."""
    mean: float
    """The mean of the round means that exist."""
    sd: float | None
    """Their standard deviation (ddof = 1); null with fewer than two."""
    ci95: tuple[float | None, float | None]
    """95 % interval over questions (studentized bootstrap, a question's turns and rounds moving together), clipped
    to the observed range; [null, null] with fewer than two questions or too many resamples without an estimate."""
    questions: int
    """Questions with an observation: the clusters of the interval."""
    n: int
    """Observations over all rounds."""

    @model_validator(mode="after")
    def _missing_rounds_are_the_null_ones(self) -> MetricStats:
        if self.missing_rounds != [r for r, v in self.per_round.items() if v is None]:
            raise ValueError(f"missing_rounds {self.missing_rounds} are not the rounds without a mean")
        return self


class Counts(Result):
    """How a task's planned slots ended (`metrics.status_counts` and `summary`); one field per judgment status that
    holds no score and per generation failure (`statuses.py`)."""

    judgments: int
    """Stored judgments: one per judge call of a slot (most tasks make one call per slot)."""
    valid: int
    """Judgments with scores (status ok)."""
    parse_failed: int
    length: int
    api_error: int
    timeout: int
    content_filtered: int
    excluded: int
    gen_truncated: int
    """Answers that hit max_new_tokens."""
    gen_no_final: int
    """Answers that ended without a final answer."""
    gen_error: int
    """Answers whose call failed (asked again by the same command)."""
    items: int
    planned: int
    """Planned slots (items × turns × rounds)."""
    missing: int
    """Judge calls of planned slots without a judgment (planned slots × the task's calls per slot, less the stored
    judgments)."""
    gen_missing: int = 0
    """Planned slots without an answer (generation stopped: servers down, a budget, a kill)."""
    no_answer: int = 0
    """Answers of which the judge saw None, an empty text or nothing."""

    def judged(self, status: JudgmentStatus) -> int:
        """Judgments that ended in `status`, a status without a score."""
        return int(getattr(self, status.value))

    def generated(self, status: GenerationStatus) -> int:
        """Answers that ended in `status`, a generation failure."""
        return int(getattr(self, f"gen_{status.value}"))

    def failed_on_the_api(self) -> int:
        """Judgments that a later run asks again (api_error, timeout): the task is not complete while there are any."""
        return sum(self.judged(status) for status in TRANSIENT_JUDGMENT)

    def unfinished(self) -> dict[str, int]:
        """What the same command run again still has to do for the task; it is complete when all are 0: every slot
        has an answer that did not fail and a final judgment of that answer (the store holds no judgment of a
        replaced answer: `Store.put_generation`)."""
        return {"answers failed": sum(self.generated(status) for status in TRANSIENT_GENERATION),
                "answers not generated": self.gen_missing,
                "judgments missing": self.missing,
                "judgments failed on the API": self.failed_on_the_api()}


class GreedyIdentical(Result):
    """Items of greedy categories (temperature 0, or every category under generation.greedy) and how many of them
    gave the same answers in every round (expected: all)."""

    greedy_items: int
    identical: int


class NoAnswers(Result):
    """The stored answers that did not fail, and those without an answer for the judge (`compat.answer_for` under
    the task's policy)."""

    answers: int
    count: int
    share: float
    """count / answers (0 without answers); above 5 % the run warns, above 50 % it ends with exit code 3."""
    statuses: dict[str, int]
    """The generation statuses of the answers without one."""


class VersusPublished(Result):
    """The measured score against the published row's value, and the reproduction verdict (`metrics.reproduction`:
    a t-test on the round means, as both are means over the same questions)."""

    value: float
    """The published value."""
    rounds: int
    """Rounds behind the published value (the card's: 3)."""
    delta: float | None
    """mean − value; null without a valid judgment."""
    verdict: Verdict | None
    """Two-sided test at 5 %; null with fewer than two round means or identical ones (verdict_note says why)."""
    p: float | None
    delta_se: float | None
    """sd · √(1/R + 1/rounds) from the R round means that exist."""
    df: int | None
    """R − 1."""
    delta_ci95: tuple[float, float] | None
    verdict_note: str | None
    """Why there is no verdict, or that it was drawn from fewer rounds than planned."""


class MatchedRow(Result):
    """The published row the run is compared with, and how it was chosen (`published.card_row`)."""

    model: str
    reasoning_effort: str | None
    matched_by: str


class TaskResult(Result):
    """One task of a run: how reports show it (from its task file, through the run store), its metrics and counts."""

    title: str
    """The detail table's heading and the radar's title."""
    column: str
    """The column title in tables, plots and compare."""
    metric: str
    """The metric kind (`eval/kinds/`)."""
    order: int | None
    """The column's place; tasks without one follow, by name."""
    scale: tuple[int, int]
    """The kind's score range."""
    plot: Plot | None
    published_column: str | None
    """The column of the published table with this task's values."""
    criteria: list[str]
    """The quality kind's criteria (empty for the other kinds)."""
    variant: str
    """full (the benchmark) or sample (the smoke sets)."""
    rounds: list[int]
    """The planned rounds."""
    metrics: dict[str, MetricStats]
    """By metric name: score (the table's number), and the kind's others (MT-Bench turn1, turn2, category:<c>;
    safety violation_rate, acceptable_rate; quality one per criterion)."""
    counts: Counts
    greedy_identical_items: GreedyIdentical | None
    """null without greedy categories or with one round."""
    no_answer: NoAnswers | None = None
    """null only in summaries written before it was counted."""
    published: VersusPublished | None
    """Only on the full data, when the published row has a value for this task."""

    @property
    def score(self) -> MetricStats | None:
        """The table's number: the task's `score` metric, if any judgment was valid."""
        return self.metrics.get("score")


class RunSummary(Result):
    """`summary.json`: what a run measured, per task in report order. Results only (no timings or call counts, which
    go to manifest.json), so a resumed run writes the same summary as an uninterrupted one."""

    schema_version: SummarySchema = Field(default=SUMMARY_SCHEMA, alias="schema")
    run: str
    """The run's name."""
    model: str
    """The path or id of the model that wrote the answers (for a rejudge: the model it replays)."""
    label: str
    """The table's row name."""
    reasoning_effort: str | None
    judge_model: str
    variant: str
    rounds: int
    compat: str
    """The compatibility profile (`compat.py`)."""
    greedy: bool = False
    """generation.greedy: every category decoded greedily."""
    complete: bool
    """Every planned slot has an answer that did not fail and a final judgment of it."""
    published_row: MatchedRow | None = None
    published_note: str | None = None
    """The sentence when no published row was matched, or why the matched one was not compared."""
    warnings: list[str] = []
    """One sentence per task whose answers mostly lacked a final answer (above 5 %), and what to check."""
    tasks: dict[str, TaskResult]
    """By task name, in report order."""


class PairedDifference(Result):
    """B − A of one metric on the questions both runs judged (`metrics.paired_difference`: `compare`, the page's
    compare view, `agree`)."""

    metric: str
    difference: float
    ci95: tuple[float | None, float | None]
    """95 % paired studentized bootstrap over the common questions."""
    items: int
    """The common questions."""


class TaskDifference(PairedDifference):
    """B − A on one task, for two compared runs (`compare`)."""

    a: str
    """Run A's name."""
    b: str
    """Run B's name."""
    task: str


class PublishedLine(Result):
    """A published row of the model card, in the table as published only or below the runs that reproduce it."""

    kind: Literal["published"] = "published"
    label: str
    model: str
    reasoning_effort: str | None


class MeasuredLine(Result):
    """A run's row of the table (its numbers are its summary's, in `runs`), and how `run` ends for that summary."""

    kind: Literal["measured"] = "measured"
    run: str
    """The run's name."""
    dir: str
    """Its folder."""
    label: str
    status: int
    """The exit code of `run` for this summary (`outcome.py`): 0 complete, 3 its numbers do not measure the model,
    4 incomplete (the same command again completes it)."""
    status_lines: list[str]
    """What `run` says last about it: which benchmarks are incomplete or not measured, and what to do."""


TableLine = Annotated[MeasuredLine | PublishedLine, Field(discriminator="kind")]


class ComparedRun(Result):
    """One run of a comparison: its folder and its summary (computed from its store)."""

    dir: str
    summary: RunSummary


class CompareResult(Result):
    """`compare.json`: the runs in the card's row order, each beside the published row it reproduces, and the paired
    differences of every pair of runs."""

    rows: list[TableLine]
    """The table's rows, top to bottom."""
    runs: list[ComparedRun]
    """The runs, in table order."""
    differences: list[TaskDifference]


CardSchema = Literal["llmjp-eval/card/v1"]
CARD_SCHEMA: Final[CardSchema] = "llmjp-eval/card/v1"


class CardSummary(Result):
    """The card's `summary.json` (`card`, `card --collect`): the table over its row folders — compare's, in the card's
    row order — and the rows whose run ended without its report."""

    schema_version: CardSchema = Field(default=CARD_SCHEMA, alias="schema")
    rows: list[TableLine]
    """The table's rows, top to bottom: every published row, each measured row above the one it reproduces, rows
    without a published row last."""
    runs: list[ComparedRun]
    """The measured rows, in table order."""
    differences: list[TaskDifference]
    failed: dict[str, str]
    """By row name: the rows whose run ended without its report (a user error, a crash, a signal), and what each
    said last. A row that stored something before it ended is in the table too."""


PairwiseSchema = Literal["llmjp-eval/pairwise/v1"]
PAIRWISE_SCHEMA: Final[PairwiseSchema] = "llmjp-eval/pairwise/v1"


class SourceRun(Result):
    """One of the two runs a pairwise comparison judged (`python -m eval pairwise RUN_A RUN_B`)."""

    run: str
    """Its folder, as given to pairwise."""
    name: str
    """Its run name."""
    model: str
    """The model that wrote its answers."""
    label: str
    """Its row name in tables."""
    reasoning_effort: str | None
    rounds: int
    """The rounds it planned (the comparison uses the rounds both have, paired by number)."""


class Outcomes(Result):
    """How the pairs of one group ended, for run A, by FastChat's rules: a pair is one question-turn of one round,
    judged in both orders; the same winner in both is a win, a loss or a tie, different winners are inconsistent."""

    pairs: int
    """Pairs with a verdict in both orders."""
    win: int
    loss: int
    tie: int
    inconsistent: int
    """Pairs whose verdict flips with the order; FastChat counts them as ties."""
    errors: int
    """Pairs left out (as FastChat leaves them out): an order without a verdict, or a judgment still missing."""
    win_rate: float | None
    """win / pairs (FastChat's win_rate); null without pairs."""
    loss_rate: float | None
    adjusted_win_rate: float | None
    """(win + ½ · (tie + inconsistent)) / pairs (FastChat's win_rate_adjusted); null without pairs."""
    consistency: float | None
    """(pairs − inconsistent) / pairs: the share whose verdict does not flip with the order."""


class PairwiseTask(Result):
    """One benchmark compared: outcome counts pooled, per round and per category, and the statistics over rounds and
    questions of each rate (`metrics.summarize`, from the pairwise kind's observations)."""

    title: str
    column: str
    variant: str
    questions: int
    """Questions both runs have, compared."""
    only_in_a: int
    """Questions of run A that run B lacks (not compared)."""
    only_in_b: int
    rounds: list[int]
    """The rounds compared: those both runs have."""
    outcomes: Outcomes
    """All rounds and turns pooled."""
    per_round: dict[int, Outcomes]
    per_category: dict[str, Outcomes]
    metrics: dict[str, MetricStats]
    """score (the adjusted win rate), win_rate, loss_rate, tie_rate, inconsistent_rate, consistency, turn<t> and
    category:<c>: each a mean over pairs per round, the mean of the round means, and a 95 % interval over questions
    (a question's rounds and turns resampled together)."""
    counts: Counts
    """How the pairwise run's judge calls ended (two per pair)."""
    no_answer: NoAnswers | None = None
    """Run A's answers the judge saw as None or empty."""


class PairwiseSummary(Result):
    """`summary.json` of a pairwise folder: run A's answers against run B's, per benchmark."""

    schema_version: PairwiseSchema = Field(default=PAIRWISE_SCHEMA, alias="schema")
    run: str
    """The pairwise folder's run name."""
    a: SourceRun
    b: SourceRun
    judge_model: str
    compat: str
    rounds: int
    """Rounds compared."""
    complete: bool
    """Every pair has a final judgment in both orders."""
    skipped: dict[str, str] = {}
    """Benchmarks of both runs that were not compared, and why."""
    tasks: dict[str, PairwiseTask]


R = TypeVar("R", bound=Result)

# Each result file's schema, generated into docs/ (a new result type adds its file here).
SCHEMA_FILES: dict[str, type[Result]] = {"summary.schema.json": RunSummary, "card.schema.json": CardSummary,
                                       "pairwise.schema.json": PairwiseSummary}


def report_order(entries: Mapping[str, TaskResult]) -> list[str]:
    """Tasks in report order: by their files' `report.order`, then those without one, by name."""
    return sorted(entries, key=lambda t: (entries[t].order is None, entries[t].order or 0, t))


def tasks_of(summaries: Iterable[RunSummary]) -> dict[str, TaskResult]:
    """Every task of the summaries in report order, each as the first summary that has it shows it."""
    entries: dict[str, TaskResult] = {}
    for summary in summaries:
        for task, entry in summary.tasks.items():
            entries.setdefault(task, entry)
    return {task: entries[task] for task in report_order(entries)}


class UnreadableResult(UserError):
    """A result file this version cannot read; `reason` says why in a few words, `remedy` what to do."""

    def __init__(self, path: Path, reason: str, remedy: str | None = None):
        self.reason = reason
        self.remedy = remedy or f"`python -m eval report {path.parent}` writes it again from the run's store"
        super().__init__(f"{path}: {reason}; {self.remedy}")


def _described(schema: str) -> str | None:
    """What a result file of this version's `schema` is, in words (None: not one of this version's)."""
    names: dict[type[Result], str] = {RunSummary: "a run's summary", CardSummary: "a card's summary",
                                      PairwiseSummary: "a pairwise comparison"}
    return next((name for kind, name in names.items() if kind.model_fields["schema_version"].default == schema), None)


def read_result(path: Path, kind: type[R]) -> R:
    """A result file through its model `kind` (a file type: it has a `schema_version`), or `UnreadableResult`:
    unreadable, another schema (named), or a field the model refuses (named)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UnreadableResult(path, f"unreadable ({e})") from None
    found = data.get("schema") if isinstance(data, dict) else None
    expected = kind.model_fields["schema_version"].default
    if found != expected:
        if isinstance(found, str) and (other := _described(found)) is not None:
            raise UnreadableResult(path, f"{other} ({found}), not {_described(expected) or expected}",
                                   f"its table.md and report.html are in {path.parent}")
        written = f"schema {found}" if isinstance(found, str) else "no schema field"
        raise UnreadableResult(path, f"{written}, but this version reads {expected}")
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UnreadableResult(path, f"{where}: {first['msg']} (not a {expected} file)") from None


def read_summary(path: Path) -> RunSummary:
    return read_result(path, RunSummary)


def write_result(path: Path, result: Result) -> None:
    """A result file from its model, validated as a reader will validate it before it is written: a file this version
    writes is one it reads."""
    data = result.dump()
    type(result).model_validate(data)
    write_json(path, data)


def write_summary(path: Path, summary: RunSummary) -> None:
    write_result(path, summary)


def json_schema(kind: type[Result]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the files `kind` writes; descriptions are the models' docstrings, unwrapped."""
    schema = kind.model_json_schema(mode="serialization", by_alias=True)
    return _unwrapped({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})


def _unwrapped(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str) else _unwrapped(v)
                for k, v in node.items()}
    return [_unwrapped(v) for v in node] if isinstance(node, list) else node


def schema_text(kind: type[Result]) -> str:
    return json.dumps(json_schema(kind), ensure_ascii=False, indent=2) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Every result file's JSON Schema into `folder` (docs/)."""
    written = []
    for name, kind in SCHEMA_FILES.items():
        path = folder / name
        path.write_text(schema_text(kind), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(written_path)
