"""`runs`: one table of the runs found in folders, read from their summary.json and manifest.json, and an index.html
whose rows link each run's report.html (opened in headless Chromium, as the report page is)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import cli
from test_view import browser, console_errors, open_page  # noqa: F401 (the Chromium fixture of the page tests)


@pytest.fixture(scope="module")
def results(smoke_run, tmp_path_factory) -> Path:
    """Three smoke runs: one as it is, one whose summary matched a published row (Δ), one nested a level deeper whose
    store lost a judgment (incomplete)."""
    from eval.metrics import reproduction
    from eval.report import regenerate
    from eval.results import read_summary, write_summary

    folder = tmp_path_factory.mktemp("runs") / "results"
    for name in ("smoke", "matched", "older/partial"):
        shutil.copytree(smoke_run[0], folder / name, ignore=shutil.ignore_patterns("run.lock"))
    summary_path = folder / "matched" / "summary.json"
    summary = read_summary(summary_path)
    entry = summary.tasks["mt_bench_en"]
    versus = reproduction([7.0, 7.1, 7.2], 7.79).model_copy(update={"delta": entry.score.mean - 7.79})
    tasks = {**summary.tasks, "mt_bench_en": entry.model_copy(update={"published": versus})}
    write_summary(summary_path, summary.model_copy(update={"tasks": tasks}))
    db = sqlite3.connect(folder / "older" / "partial" / "run.sqlite")
    db.execute("DELETE FROM judgments WHERE task = 'mt_bench_ja' AND item_id = (SELECT MIN(item_id) FROM judgments) "
               "AND turn = 1 AND round = 1")
    db.commit()
    db.close()
    regenerate(folder / "older" / "partial")
    return folder


def test_runs_prints_one_row_per_run_with_status_means_and_delta(results):
    result = cli("runs", str(results))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:7] == ["run", "model", "effort", "profile", "judge", "rounds", "status"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert list(rows) == [str(results / "matched"), str(results / "older" / "partial"), str(results / "smoke")]
    smoke = json.loads((results / "smoke" / "summary.json").read_text())
    for run, line in rows.items():
        assert "builtin:tiny-harmony  medium  llm-jp-judge-2.0.0  mock-judge  3" in line
        for task in smoke["tasks"].values():
            if not run.endswith("partial"):
                assert f"{task['metrics']['score']['mean']:.2f}" in line
    delta = json.loads((results / "matched" / "summary.json").read_text())["tasks"]["mt_bench_en"]["published"]["delta"]
    assert f"({delta:+.2f})" in rows[str(results / "matched")] and "(" not in rows[str(results / "smoke")].split("3  ", 1)[1]
    assert "  complete  " in rows[str(results / "smoke")]
    assert "incomplete: 1 judgments missing" in rows[str(results / "older" / "partial")]


def test_runs_of_an_empty_folder_says_so(tmp_path):
    result = cli("runs", str(tmp_path))
    assert result.returncode == 2 and "no runs in" in result.stderr


def test_the_index_page_links_each_runs_report_and_opens_offline(results, browser, tmp_path):  # noqa: F811
    out = tmp_path / "index"
    result = cli("runs", str(results), "--out", str(out))
    assert result.returncode == 0 and f"Index written to {out / 'index.html'}" in result.stdout
    index = (out / "index.html").resolve().as_uri()
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get(index)
    assert console_errors(browser) == []  # nothing the page's Content-Security-Policy had to block
    rows = browser.find_elements("css selector", "#runs tbody tr")
    assert len(rows) == 3
    assert "incomplete: 1 judgments missing" in rows[1].text and "partial" in rows[1].find_elements("css selector", "td")[6].get_attribute("class")
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "#runs a")]
    assert len(links) == 3
    for link, run in zip(links, ("matched", "older/partial", "smoke"), strict=True):
        assert link == (results / run / "report.html").resolve().as_uri()
        browser.get(index)
        browser.find_element("css selector", f'#runs a[href$="{run}/report.html"]').click()
        assert browser.current_url == link
        assert browser.execute_script("return document.body.dataset.ready") == "1"  # the report page ran
        assert console_errors(browser) == []
    open_page(browser, results / "smoke" / "report.html")  # the page itself is unchanged by being linked


def test_the_index_page_loads_nothing_from_the_network(results, tmp_path):
    from eval.runs import find_runs, index_page, task_columns

    runs = find_runs([results])
    page = index_page(runs, task_columns(runs), tmp_path)
    csp = page.split('Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert csp.startswith("default-src 'none';") and "script-src" not in csp and "<script" not in page
    assert "http://" not in page.replace("http-equiv", "") and "https://" not in page
