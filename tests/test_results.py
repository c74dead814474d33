"""The typed result schema (`eval/results.py`) and the store's typed rows: summary.json written from and read back
through the models, the JSON Schema in docs/ equal to the models' and met by what the harness writes (checked by a
JSON Schema validator, not only by the models), summaries written by earlier versions loaded or refused in one
line, and the meta a store of the current main holds read through the typed keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from helpers import ROOT, assert_valid_summary, cli

from eval.errors import UserError
from eval.results import SCHEMA_FILES, UnreadableResult, read_summary, schema_text, write_summary

DATA = Path(__file__).parent / "data"
MAIN_SUMMARY = DATA / "summary-v2-main.json"  # written by main at 25e44b0 (smoke, 1 item, 2 rounds, relabeled full)


def test_the_committed_schemas_are_the_models():
    for name, kind in SCHEMA_FILES.items():
        committed = (ROOT / "docs" / name).read_text()
        assert committed == schema_text(kind), f"docs/{name} is stale: python -m eval.results docs"
        jsonschema.Draft202012Validator.check_schema(json.loads(committed))


def test_a_smoke_runs_summary_meets_the_schema_and_reads_back_byte_for_byte(smoke_run):
    summary = assert_valid_summary(smoke_run[0] / "summary.json")
    assert summary.complete and set(summary.tasks) == {"mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"}
    assert summary.tasks["mt_bench_ja"].score.per_round.keys() == {1, 2, 3}  # JSON's "1" keys read as rounds


def test_a_summary_of_the_current_main_loads_with_its_verdicts_warnings_and_failures():
    summary = assert_valid_summary(MAIN_SUMMARY)
    assert summary.published_row.matched_by == "the hub id" and not summary.complete and summary.warnings
    ja, en = summary.tasks["mt_bench_ja"], summary.tasks["mt_bench_en"]
    assert ja.published.verdict == "consistent" and ja.published.delta_ci95 is not None
    assert en.counts.failed_on_the_api() == 1 and en.counts.unfinished()["judgments failed on the API"] == 1
    assert summary.tasks["answer_carefully"].published.verdict is None


def test_a_summary_of_the_first_v2_files_loads_with_the_later_fields_defaulted(tmp_path):
    """Fields added to v2 after its first files (greedy, the published row and note, warnings, the no-answer facts,
    gen_missing and no_answer counts) default, as the readers treated their absence before."""
    from eval.outcome import outcome
    from eval.summary import load_published
    from eval.tables import render_markdown

    data = json.loads(MAIN_SUMMARY.read_text())
    for key in ("greedy", "published_row", "published_note", "warnings"):
        del data[key]
    for entry in data["tasks"].values():
        del entry["no_answer"], entry["counts"]["gen_missing"], entry["counts"]["no_answer"]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    summary = read_summary(tmp_path / "summary.json")
    assert summary.warnings == [] and summary.published_row is None and summary.tasks["mt_bench_ja"].no_answer is None
    assert summary.tasks["mt_bench_en"].counts.gen_missing == 0
    assert "| MT-Bench (EN) |" in render_markdown(summary, load_published()) and outcome(summary).code == 4


@pytest.mark.parametrize("change, named", [
    (lambda d: d.update(schema="llmjp-eval/summary/v1"), "schema llmjp-eval/summary/v1, but this version reads llmjp-eval/summary/v2"),
    (lambda d: d.pop("schema"), "no schema field, but this version reads llmjp-eval/summary/v2"),
    (lambda d: d["tasks"]["mt_bench_ja"]["counts"].pop("valid"), "tasks.mt_bench_ja.counts.valid: Field required"),
    (lambda d: d.update(compat_profile="x"), "compat_profile: Extra inputs are not permitted"),
])
def test_a_summary_this_version_cannot_read_is_refused_in_one_line_naming_why(tmp_path, change, named):
    data = json.loads(MAIN_SUMMARY.read_text())
    change(data)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UnreadableResult) as refused:
        read_summary(path)
    message = str(refused.value)
    assert isinstance(refused.value, UserError) and "\n" not in message and named in message
    assert message.startswith(f"{path}: ") and message.endswith(f"`python -m eval report {tmp_path}` writes it again "
                                                                "from the run's store")


def test_runs_and_view_name_the_version_of_an_old_summary(smoke_run, tmp_path):
    run = tmp_path / "results" / "old"
    shutil.copytree(smoke_run[0], run, ignore=shutil.ignore_patterns("run.lock"))
    data = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**data, "schema": "llmjp-eval/summary/v1"}))
    listed = cli("runs", str(tmp_path / "results"))
    assert listed.returncode == 0
    assert "summary.json: schema llmjp-eval/summary/v1, but this version reads llmjp-eval/summary/v2" in listed.stdout
    viewed = cli("view", str(run))
    assert viewed.returncode == 2 and len(viewed.stderr.strip().splitlines()) == 1
    assert "schema llmjp-eval/summary/v1" in viewed.stderr and f"python -m eval report {run}" in viewed.stderr
    assert cli("report", str(run)).returncode == 0 and read_summary(run / "summary.json").schema_version.endswith("/v2")


def test_a_summary_is_validated_before_it_is_written(tmp_path):
    summary = read_summary(MAIN_SUMMARY)
    entry = summary.tasks["mt_bench_ja"]
    wrong = entry.score.model_copy(update={"missing_rounds": [2]})  # model_copy skips validation; writing does not
    broken = summary.model_copy(update={"tasks": {**summary.tasks, "mt_bench_ja": entry.model_copy(update={"metrics": {"score": wrong}})}})
    with pytest.raises(ValueError, match="missing_rounds"):
        write_summary(tmp_path / "summary.json", broken)
    assert not (tmp_path / "summary.json").exists()
    with pytest.raises(ValueError, match="finite"):
        entry.score.model_validate({**entry.score.dump(), "mean": float("nan")})


# ---------------------------------------------------------------- the store's typed rows


def test_the_meta_a_store_of_the_current_main_holds_reads_through_the_typed_keys(tmp_path):
    import sqlite3

    from eval import run_meta
    from eval.config import RunConfig
    from eval.records import Item, TaskMeta, TaskRules
    from eval.store import Store

    stored = json.loads((DATA / "store-meta-main.json").read_text())
    store = Store(tmp_path / "run.sqlite")
    store.db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v, ensure_ascii=False)) for k, v in stored.items()])
    config, tasks, items = store.meta(run_meta.CONFIG), store.meta(run_meta.TASKS), store.meta(run_meta.ITEMS)
    # config.yaml stays as it was, plus the settings added since, at their defaults
    assert isinstance(config, RunConfig) and _within(stored["config"], config.snapshot())
    assert isinstance(tasks["llm_jp_instructions"], TaskMeta)
    assert tasks["llm_jp_instructions"].rules == TaskRules("quality", None, "総合評価", ("正確性", "流暢性", "詳細性", "関連性", "総合評価"))
    assert items["mt_bench_ja"][0] == Item(**{**stored["items"]["mt_bench_ja"][0], "turns": tuple(stored["items"]["mt_bench_ja"][0]["turns"]),
                                              "references": None})
    assert store.meta(run_meta.MODEL_FORMAT)["reasoning_format"] == "harmony"
    assert store.meta(run_meta.JUDGE_CACHE_BEHIND) is None  # never stored
    for key in [v for v in vars(run_meta).values() if isinstance(v, run_meta.MetaKey)]:
        value = store.meta(key)
        if value is not None:  # what is read back is stored again as it was
            store.set_meta(key, value)
            fresh = sqlite3.connect(tmp_path / "run.sqlite").execute("SELECT value FROM meta WHERE key = ?", (key.name,))
            again = json.loads(fresh.fetchone()[0])
            # the config and the tasks' rules gain the fields added since, at their defaults (the tasks: the judge
            # calls a slot needs); the rest comes back as it was
            grows = key in (run_meta.CONFIG, run_meta.TASKS)
            assert _within(stored[key.name], again) if grows else again == stored[key.name], key.name
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'tasks'", (json.dumps({"t": {"title": "T"}}),))
    with pytest.raises(UserError, match=r"run.sqlite: the stored tasks\.t\.column is not readable by this version"):
        store.meta(run_meta.TASKS)
    store.close()


def test_plan_records_and_fields_are_typed_rows(smoke_run):
    from dataclasses import dataclass

    from eval.records import Generation, Judgment, Planned, Slot, SlotRow
    from eval.store import open_run

    @dataclass(frozen=True)
    class Scored(SlotRow):
        status: str
        scores: dict[str, float]

    store = open_run(smoke_run[0])
    try:
        plan = store.plan()
        generations, judgments = list(store.records("generation")), list(store.records("judgment"))
        scored = store.fields("judgment", Scored)
    finally:
        store.close()
    assert all(isinstance(p, Planned) for p in plan) and len(plan) == len(generations) == len(judgments) == len(scored)
    assert all(isinstance(g, Generation) for g in generations) and all(isinstance(j, Judgment) for j in judgments)
    assert [s.slot for s in scored] == [j.slot for j in judgments] == [p.slot for p in plan]  # one order: task, round, …
    assert all(type(s.slot) is Slot and s.scores == j.scores for s, j in zip(scored, judgments, strict=True))


def _within(part: dict, whole: dict) -> bool:
    """Every key of `part` is in `whole` with the same value (mappings compared key by key)."""
    return all(k in whole and (_within(v, whole[k]) if isinstance(v, dict) and isinstance(whole[k], dict) else v == whole[k])
               for k, v in part.items())


def test_a_run_of_replayed_answers_sends_failed_answers_back_to_the_run_that_made_them():
    """rejudge and pairwise replay stored answers: running them again cannot mend an answer that failed in the source
    run, so the last lines say where to complete it, and offer the same command again only for judgments."""
    from eval.outcome import INCOMPLETE, outcome

    summary = read_summary(MAIN_SUMMARY)  # MT-Bench (EN): one judgment failed on the API
    en = summary.tasks["mt_bench_en"]
    judgments_only = outcome(summary, "python -m eval rejudge RUN --out NEW", replayed_from="RUN")
    assert judgments_only.code == INCOMPLETE
    assert judgments_only.lines[1:] == ["Run the same command again to retry the judgments: python -m eval rejudge RUN --out NEW"]

    failed = en.model_copy(update={"counts": en.counts.model_copy(update={"gen_error": 2, "api_error": 0, "timeout": 0})})
    answers_only = summary.model_copy(update={"tasks": {**summary.tasks, "mt_bench_en": failed}})
    lines = outcome(answers_only, "python -m eval rejudge RUN --out NEW", replayed_from="RUN").lines
    assert lines[0].startswith("INCOMPLETE: MT-Bench (EN): 2 answers failed")
    assert lines[1:] == ["The failed or missing answers are those stored in RUN: run again the command that made it to "
                         "complete them, then this one."]
    assert outcome(answers_only, "python -m eval run X").lines[1:] == ["Run the same command again to retry them: "
                                                                        "python -m eval run X"]
