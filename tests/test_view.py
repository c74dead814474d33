"""report.html: the escaping and encoding it relies on, the `view` command, and the page itself in headless Chromium
(Debian's chromium + chromium-driver, driven by selenium). Screenshots go to test-artifacts/view/ for a human to look at.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT, cli, read_jsonl

from eval.summary import DEFAULT_REFERENCE
from eval.view import Strings, render_page, script_json

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "view"
HOSTILE = "</script><script>window.__pwned = 1</script><!-- <img src=x onerror=\"window.__pwned = 2\"> \u2028\u2029 & ]]>"


# ---------------------------------------------------------------- no browser needed


def test_script_json_cannot_close_its_element_and_round_trips():
    data = {"answer": HOSTILE, "nan": float("nan"), "nested": [HOSTILE, {"k<": "<!--"}]}
    text = script_json(data)
    for forbidden in ("<", ">", "&", "\u2028", "\u2029"):
        assert forbidden not in text
    assert json.loads(text) == {"answer": HOSTILE, "nan": None, "nested": [HOSTILE, {"k<": "<!--"}]}


def test_strings_split_reconstructs_judge_messages_exactly_and_reuses_known_texts():
    rng = random.Random(7)
    pieces = ["質問：", "回答を採点してください。", "[[", "]]", "\n", "Answer A", "Answer B", "x" * 20, "ref"]
    for _ in range(300):
        strings = Strings()
        known = rng.sample(pieces, 3) + [""]
        content = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        parts = strings.split(content, known)
        assert "".join(strings.values[i] for i in parts) == content
    strings = Strings()
    answer = "これはモデルの回答です。" * 3
    first = strings.split("prompt A\n" + answer + "\nend", [answer])
    second = strings.split("prompt B\n" + answer + "\nend", [answer])
    assert strings.values[first[1]] == answer and first[1] == second[1]  # the answer is stored once


def test_page_allows_only_its_own_script_and_keeps_the_blob_inert():
    page = render_page({"strings": [HOSTILE], "runs": []})
    head = page.split("<body>", 1)[0]
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', head).group(1)
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "script-src 'sha256-" in csp
    # one data blob and one script; the hostile text did not add an element
    assert page.count("<script") == 2 and page.count("</script>") == 2


def test_view_of_several_runs_needs_out_and_a_missing_summary_names_the_fix(tmp_path):
    (tmp_path / "a").mkdir()
    result = cli("view", str(tmp_path / "a"))
    assert result.returncode == 2 and "no run.sqlite" in result.stderr and "Traceback" not in result.stderr
    sqlite3.connect(tmp_path / "a" / "run.sqlite").close()
    result = cli("view", str(tmp_path / "a"))
    assert result.returncode == 2 and "summary.json" in result.stderr and "eval report" in result.stderr
    result = cli("view", str(tmp_path / "a"), str(tmp_path / "a"))
    assert result.returncode == 2 and "--out" in result.stderr


# ---------------------------------------------------------------- the smoke run's page


@pytest.fixture(scope="module")
def smoke(smoke_run):
    out, result = smoke_run
    assert "report.html" in result.stdout
    return out


def test_view_prints_the_path_and_serves_only_the_page(smoke):
    result = cli("view", str(smoke))
    assert result.returncode == 0 and result.stdout.strip() == str(smoke / "report.html")
    proc = subprocess.Popen([sys.executable, "-m", "eval", "view", str(smoke), "--serve", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        while line and "serving" not in line:
            line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == (smoke / "report.html").read_bytes()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "summary.json", timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("host,answered", [("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST:{port}", 200),
                                           ("attacker.example:{port}", 421), ("127.0.0.1:1", 421), ("", 421),
                                           ("127.0.0.1.attacker.example:{port}", 421)])
def test_the_served_page_answers_only_requests_addressed_to_it(smoke, host, answered):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: its Host header says so and it is refused."""
    import http.client
    import threading

    from eval.view import page_server

    server = page_server(smoke / "report.html", "127.0.0.1", 0)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("GET", "/", skip_host=True)
        if host:
            connection.putheader("Host", host.format(port=port))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == answered
        assert (response.read() == (smoke / "report.html").read_bytes()) == (answered == 200)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path: Path, fragment: str = ""):
    driver.get("about:blank")
    driver.get_log("browser")  # drop what came before
    driver.get(path.resolve().as_uri() + fragment)
    assert driver.execute_script("return document.body.dataset.ready") == "1"


def text(driver, element) -> str:
    return driver.execute_script("return arguments[0].textContent", element)


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def by_id(driver, name):
    return driver.find_element("id", name)


def select(driver, name: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, name)).select_by_value(value)


def test_smoke_page_shows_the_table_counts_and_plots_without_console_errors(smoke, browser):
    summary = json.loads((smoke / "summary.json").read_text())
    open_page(browser, smoke / "report.html")
    assert console_errors(browser) == []
    measured = browser.find_element("css selector", "#model-card tr.measured").text
    for task in summary["tasks"].values():
        assert f"{task['metrics']['score']['mean']:.2f}" in measured
    published = browser.find_elements("css selector", "#model-card tr.published")
    assert len(published) == len(DEFAULT_REFERENCE.read_text().strip().splitlines()) - 1
    for name, task in summary["tasks"].items():
        for key, value in task["counts"].items():
            cell = browser.find_element("css selector", f'td[data-task="{name}"][data-count="{key}"]')
            assert cell.text == str(value)
    images = browser.find_elements("css selector", ".plots img")
    assert len(images) == len(list((smoke / "plots").glob("*.png")))
    assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 100 for img in images)
    assert "mock-judge" in by_id(browser, "tab-summary").text  # the manifest's judge
    browser.save_screenshot(str(ARTIFACTS / "summary.png"))


def test_the_table_shows_the_delta_to_a_published_row_and_the_summarys_other_fields(smoke, browser, tmp_path):
    from eval.metrics import reproduction
    from eval.results import read_summary, write_summary
    from eval.view import write_page

    run = tmp_path / "published"
    shutil.copytree(smoke, run, ignore=shutil.ignore_patterns("run.lock"))
    summary = read_summary(run / "summary.json")
    task = summary.tasks["mt_bench_en"]
    versus = reproduction([7.0, 7.1, 7.2], 7.79).model_copy(update={"delta": task.score.mean - 7.79, "p": 0.0031})
    tasks = {**summary.tasks, "mt_bench_en": task.model_copy(update={"published": versus})}
    write_summary(run / "summary.json", summary.model_copy(update={"tasks": tasks}))
    open_page(browser, write_page([run]))
    rows = [r.text for r in browser.find_elements("css selector", "#model-card tbody tr")]
    assert f"{versus.delta:+.2f} · lower (p = 0.0031)" in rows[1] and rows[1].startswith("Δ vs published")
    assert "compat llm-jp-judge-2.0.0" in by_id(browser, "tab-summary").text  # a field the table does not show
    assert console_errors(browser) == []


def test_the_page_shows_the_no_answer_warnings_and_the_published_note(smoke, browser, tmp_path):
    from eval.results import read_summary, write_summary
    from eval.view import write_page

    run = tmp_path / "warned"
    shutil.copytree(smoke, run, ignore=shutil.ignore_patterns("run.lock"))
    summary = read_summary(run / "summary.json").model_copy(
        update={"warnings": ["MT-Bench (EN): 9 of 10 answers (90%) had no final answer (no_final 9), …"]})
    write_summary(run / "summary.json", summary)
    open_page(browser, write_page([run]))
    shown = [p.text for p in browser.find_elements("css selector", "#tab-summary p.warning")]
    assert shown == [f"WARNING ({summary.run}): {summary.warnings[0]}"]
    note = by_id(browser, "tab-summary").find_element("css selector", "p.published-note").text
    assert note == summary.published_note and note.startswith("No published row: the model's identity is unknown")
    assert console_errors(browser) == []


def test_status_filters_show_exactly_the_counts_of_summary_json(smoke, browser):
    summary = json.loads((smoke / "summary.json").read_text())
    open_page(browser, smoke / "report.html", "#items")
    total = sum(t["counts"]["planned"] for t in summary["tasks"].values())
    assert by_id(browser, "f-count").text == f"{total} of {total} rows"
    checks = [("f-judge-status", "ok", "valid"), ("f-gen-status", "truncated", "gen_truncated"),
              ("f-gen-status", "no_final", "gen_no_final")]
    seen = 0
    for control, status, key in checks:
        expected = sum(t["counts"][key] for t in summary["tasks"].values())
        if not expected:
            continue
        seen += 1
        select(browser, control, status)
        assert by_id(browser, "f-count").text == f"{expected} of {total} rows"
        shown = browser.find_elements("css selector", "#item-list .vrow")
        column = 6 if control == "f-judge-status" else 5
        assert shown and all(row.find_elements("css selector", "span")[column].text == status for row in shown)
        for name, task in summary["tasks"].items():  # and per task
            select(browser, "f-task", name)
            assert by_id(browser, "f-count").text == f"{task['counts'][key]} of {total} rows"
        select(browser, "f-task", "")
        select(browser, control, "")
    assert seen >= 2  # the smoke run has truncated answers as well as valid judgments
    assert console_errors(browser) == []


def test_an_item_opens_with_its_answer_judge_messages_and_output(smoke, browser):
    judgments = {(j["task"], j["item_id"], j["turn"], j["round"]): j for j in read_jsonl(smoke / "judgments.jsonl")}
    generations = {(g["task"], g["item_id"], g["turn"], g["round"]): g for g in read_jsonl(smoke / "generations.jsonl")}
    open_page(browser, smoke / "report.html", "#items")
    select(browser, "f-task", "mt_bench_ja")
    select(browser, "f-sort", "score-desc")
    row = browser.find_element("css selector", "#item-list .vrow")
    link = row.get_attribute("data-link")
    task, item_id, turn, rnd = link[1:].split("/")
    row.click()
    detail = by_id(browser, "detail")
    assert detail.is_displayed()
    assert browser.current_url.endswith(link)
    judged = judgments[(task, item_id, int(turn), int(rnd))]
    current = detail.find_element("css selector", ".round.current")
    assert text(browser, current.find_element("css selector", ".judge-output")) == judged["raw"]
    assert current.find_element("css selector", ".judge-score").text == f"{judged['scores']['score']:.2f}"
    final = generations[(task, item_id, int(turn), int(rnd))]["final"]
    if final:
        assert text(browser, current.find_element("css selector", ".final-answer")) == final
    current.find_element("css selector", ".judge-messages summary").click()
    shown = [text(browser, m) for m in current.find_elements("css selector", ".judge-messages pre")]
    assert shown == [m["content"] for m in judged["messages"]]  # rebuilt from the string table, exactly
    browser.save_screenshot(str(ARTIFACTS / "item.png"))
    # a deep link opens the same item on a fresh load
    open_page(browser, smoke / "report.html", link)
    assert by_id(browser, "detail").is_displayed() and f"{item_id} · turn {turn} · round {rnd}" in by_id(browser, "detail-title").text
    assert console_errors(browser) == []


def _set_record(run_dir: Path, table: str, slot: tuple, **fields) -> None:
    db = sqlite3.connect(run_dir / "run.sqlite")
    try:
        for path, value in fields.items():
            db.execute(f"UPDATE {table} SET record = json_set(record, '$.{path}', json(?)) "
                       "WHERE task = ? AND item_id = ? AND turn = ? AND round = ?", (json.dumps(value), *slot))
        db.commit()
    finally:
        db.close()


def test_an_answer_with_script_markup_is_shown_as_text_and_never_runs(smoke, browser, tmp_path):
    from eval.report import regenerate

    run = tmp_path / "hostile"
    shutil.copytree(smoke, run, ignore=shutil.ignore_patterns("run.lock"))
    slot = ("mt_bench_en", "81", 1, 1)
    _set_record(run, "generations", slot, final=HOSTILE)
    _set_record(run, "judgments", slot, raw=HOSTILE + " Rating: [[3]]")
    regenerate(run)
    open_page(browser, run / "report.html", "#mt_bench_en/81/1/1")
    assert browser.execute_script("return window.__pwned") is None
    current = by_id(browser, "detail").find_element("css selector", ".round.current")
    assert text(browser, current.find_element("css selector", ".final-answer")) == HOSTILE
    assert text(browser, current.find_element("css selector", ".judge-output")) == HOSTILE + " Rating: [[3]]"
    assert browser.find_elements("css selector", "#detail img") == []
    by_id(browser, "detail-close").click()
    by_id(browser, "f-search").send_keys("</script><script>")  # search sees it as text too
    assert by_id(browser, "f-count").text.startswith("1 of ")
    assert browser.execute_script("return window.__pwned") is None
    assert console_errors(browser) == []


def test_search_finds_japanese_text_in_full_and_half_width_forms(smoke, browser):
    open_page(browser, smoke / "report.html", "#items")
    total = by_id(browser, "f-count").text.split(" of ")[1]
    by_id(browser, "f-search").send_keys("パスワード")
    full = by_id(browser, "f-count").text
    assert not full.startswith("0 ") and full.endswith(total)
    by_id(browser, "f-search").clear()
    by_id(browser, "f-search").send_keys("ﾊﾟｽﾜｰﾄﾞ")  # half-width katakana: NFKC makes it the same word
    assert by_id(browser, "f-count").text == full


def test_compare_sorts_items_by_the_difference_and_shows_the_paired_cis(smoke, browser, tmp_path):
    from eval.compare import compare
    from eval.report import regenerate

    judged = read_jsonl(smoke / "judgments.jsonl")
    a_scores: dict[str, dict[int, float]] = {}
    for j in judged:
        if j["task"] == "mt_bench_en" and j["turn"] == 1 and j["status"] == "ok":
            a_scores.setdefault(j["item_id"], {})[j["round"]] = j["scores"]["score"]
    mean = {i: sum(s.values()) / len(s) for i, s in a_scores.items()}
    raised = min(mean, key=mean.get)          # set to 10 in every round of b: the largest difference
    nudged = max(mean, key=mean.get)          # round 1 moved by one point: a small difference
    assert mean[raised] < 9 and raised != nudged
    b = tmp_path / "b"
    shutil.copytree(smoke, b, ignore=shutil.ignore_patterns("run.lock"))
    db = sqlite3.connect(b / "run.sqlite")
    config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps({**config, "name": "smoke-b"}),))
    db.commit()
    db.close()
    for rnd in a_scores[raised]:
        _set_record(b, "judgments", ("mt_bench_en", raised, 1, rnd), **{"scores.score": 10.0})
    step = -1.0 if a_scores[nudged][1] > 1 else 1.0
    _set_record(b, "judgments", ("mt_bench_en", nudged, 1, 1), **{"scores.score": a_scores[nudged][1] + step})
    regenerate(b)
    result = compare([smoke, b], None, tmp_path / "cmp")
    open_page(browser, tmp_path / "cmp" / "report.html", "#compare")
    assert console_errors(browser) == []
    rows = browser.find_elements("css selector", "#compare-list .vrow")
    diffs = [float(r.find_element("css selector", ".diff").text) for r in rows]
    assert diffs == sorted(diffs, key=abs, reverse=True)
    first, second = (r.find_elements("css selector", "span") for r in rows[:2])
    assert (first[0].text, first[1].text, first[2].text) == ("mt_bench_en", raised, "1")
    assert diffs[0] == pytest.approx(10 - mean[raised], abs=0.006)
    assert (second[1].text, diffs[1]) == (nudged, pytest.approx(step / len(a_scores[nudged]), abs=0.006))
    assert all(d == 0 for d in diffs[2:])
    overall = next(d for d in result.differences if d.task == "mt_bench_en")
    paired = by_id(browser, "paired").text
    lo, hi = overall.ci95
    assert f"+{overall.difference:.2f}" in paired and f"[{lo:.2f}, {hi:.2f}]" in paired
    rows[0].click()
    assert "smoke-b" in by_id(browser, "detail").text and by_id(browser, "detail").is_displayed()
    browser.save_screenshot(str(ARTIFACTS / "compare-item.png"))
    by_id(browser, "detail-close").click()
    browser.save_screenshot(str(ARTIFACTS / "compare.png"))
    assert console_errors(browser) == []


def test_a_disagreement_of_agree_opens_both_judgments_side_by_side(smoke, browser, tmp_path):
    from eval.agree import agree_command
    from eval.report import regenerate

    judged = [j for j in read_jsonl(smoke / "judgments.jsonl") if j["task"] == "mt_bench_ja" and j["status"] == "ok"]
    lowest = min(judged, key=lambda j: (j["scores"]["score"], j["item_id"], j["turn"], j["round"]))
    b = tmp_path / "b"
    shutil.copytree(smoke, b, ignore=shutil.ignore_patterns("run.lock"))
    slot = ("mt_bench_ja", lowest["item_id"], lowest["turn"], lowest["round"])
    _set_record(b, "judgments", slot, **{"scores.score": 10.0, "raw": "Rating: [[10]] (changed by the test)"})
    regenerate(b)
    result = agree_command([smoke, b], [], tmp_path / "agreement", top=5)
    first, = result["tasks"]["mt_bench_ja"]["disagreements"]
    assert (first["item_id"], first["a"], first["b"]) == (lowest["item_id"], lowest["scores"]["score"], 10.0)
    open_page(browser, tmp_path / "agreement" / "report.html", first["link"])
    detail = by_id(browser, "detail")
    assert detail.is_displayed() and f"mt_bench_ja / {lowest['item_id']} · turn {lowest['turn']}" in detail.text
    assert "Rating: [[10]] (changed by the test)" in text(browser, detail)  # B's judgment beside A's
    assert lowest["raw"] in text(browser, detail)
    assert console_errors(browser) == []


def test_the_summary_never_scrolls_sideways_on_a_narrow_window(smoke, browser):
    """The manifest's long values (packages, paths) wrap inside their table, and the plots fit the window (before:
    the manifest table was 2181 px wide in a 1000 px window and dragged the plots out with it)."""
    browser.set_window_size(800, 900)
    try:
        open_page(browser, smoke / "report.html")
        browser.execute_script("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        for image in browser.find_elements("css selector", ".plots img"):
            assert browser.execute_script("return arguments[0].getBoundingClientRect().right", image) <= width
    finally:
        browser.set_window_size(1400, 1000)


def test_open_says_so_where_no_browser_can_start(smoke, monkeypatch):
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda url, *args, **kwargs: False)  # what it answers on a headless node
    result = cli("view", str(smoke), "--open")
    assert result.returncode == 2 and result.stdout.strip() == str(smoke / "report.html")
    assert result.stderr.startswith("error: --open: no browser can be started") and "--serve" in result.stderr
