"""report.html at full size: page size, build time, open time and filter times in headless Chromium.

Synthetic runs with the shape of one model-card configuration (MT-Bench JA and EN 80 questions × 2 turns,
AnswerCarefully 336, llm-jp-instructions 400; 3 rounds = 3 168 slots per run), written through the real store and
report code, then one comparison page over all runs. Texts are random Japanese or English of realistic lengths
(log-normal; medians: question 150 characters, answer 1 200, reasoning 2 500 (English by default), judge output
500; judge prompts hold a 1 500-character template plus the question, reference and answers, as the real ones do).
Each measured step starts from all rows of all runs (3 × 3 168 at full size).

    python benchmarks/view_page.py                      # full size: 3 runs × 3 168 slots
    python benchmarks/view_page.py --scale 0.05         # CPU dry run in seconds

Prints a table and, last, one JSON object. Needs /usr/bin/chromium and chromedriver (Debian packages) and selenium.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

from eval.config import RunConfig
from eval.records import Generation, Judgment, Slot
from eval.report import write_reports
from eval.run_meta import CONFIG, ITEMS
from eval.run_meta import TASKS as META_TASKS
from eval.store import Store
from eval.view import write_page

TASKS = {  # name: (title, metric, items, turns, categories, criteria, language)
    "mt_bench_ja": ("MT-Bench (JA)", "mt_bench", 80, 2, ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"], [], "ja"),
    "mt_bench_en": ("MT-Bench (EN)", "mt_bench", 80, 2, ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"], [], "en"),
    "answer_carefully": ("AnswerCarefully", "safety", 336, 1, ["差別", "プライバシー", "違法行為", "誤情報", "有害な助言"], [], "ja"),
    "llm_jp_instructions": ("llm-jp-instructions", "quality", 400, 1, [None], ["正確性", "流暢性", "詳細性", "関連性", "総合評価"], "ja"),
}
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコ"
KANJI = "日本語評価回答質問安全性正確詳細関連流暢総合理由説明方法結果問題解決計算確認必要場合可能情報"
WORDS = "the model answer should explain each step clearly and the judge reads it carefully before it gives a score".split()


def text(rng: random.Random, language: str, median: int) -> str:
    n = max(8, int(rng.lognormvariate(0, 0.6) * median))
    if language == "en":
        out, size = [], 0
        while size < n:
            word = rng.choice(WORDS)
            out.append(word)
            size += len(word) + 1
        return " ".join(out)
    chars = [rng.choice(KANJI) if rng.random() < 0.3 else rng.choice(KANA) for _ in range(n)]
    for i in range(40, n, 40):
        chars[i] = "。\n" if rng.random() < 0.3 else "、"
    return "".join(chars)


def build_run(run_dir: Path, name: str, seed: int, scale: float, reasoning_language: str | None) -> None:
    rng = random.Random(seed)
    run_dir.mkdir(parents=True)
    store = Store(run_dir / "run.sqlite")
    metas, items_meta, plan = {}, {}, []
    for task, (title, metric, n_items, turns, categories, criteria, language) in TASKS.items():
        metas[task] = {"title": title, "column": title, "metric": metric, "turns": turns, "variant": "full",
                       "rules": {"metric": metric, "api_error_score": 1.0 if metric == "safety" else None,
                                 "primary_criterion": "総合評価" if metric == "quality" else None, "criteria": criteria},
                       "no_answer": "judge_empty", "greedy_categories": [], "expected_items": n_items}
        task_rng = random.Random(task)  # the same questions in every run
        items = []
        for i in range(max(2, int(n_items * scale))):
            category = categories[i % len(categories)]
            items.append({"task": task, "item_id": str(i + 1), "category": category,
                          "turns": [text(task_rng, language, 150) for _ in range(turns)],
                          "references": [text(task_rng, language, 300) for _ in range(turns)] if i % 3 == 0 else None})
        items_meta[task] = items
        plan += [((r, task, item["item_id"], t), item["category"]) for r in (1, 2, 3) for item in items for t in range(1, turns + 1)]
    store.set_meta(CONFIG, RunConfig.model_validate(
        {"name": name, "model": {"backend": "hf", "path": f"synthetic/{name}", "chat_template_kwargs": {"reasoning_effort": "medium"}},
         "judge": {"model": "gpt-5.4-2026-03-05"}, "variant": "full", "rounds": 3, "tasks": list(TASKS)}))
    store.set_meta(META_TASKS, metas)
    store.set_meta(ITEMS, items_meta)
    store.set_plan([(Slot(*s), c) for s, c in plan])
    template = text(random.Random(0), "ja", 1500)
    items_by_key = {(t, i["item_id"]): i for t, items in items_meta.items() for i in items}
    finals: dict[tuple, str] = {}
    for (rnd, task, item_id, turn), _ in plan:
        title, metric, _, _, _, criteria, language = TASKS[task]
        item = items_by_key[task, item_id]
        status = rng.choices(["ok", "truncated", "no_final"], [0.93, 0.05, 0.02])[0]
        final = text(rng, language, 1200) if status == "ok" else None
        finals[rnd, task, item_id, turn] = final or ""
        key = f"{name}-{rnd}-{task}-{item_id}-{turn}"
        store.put_generation(Generation(key, rnd, seed, task, item_id, turn, [], "", None, "", final, text(rng, reasoning_language or language, 2500),
                                        status, "stop" if status == "ok" else "length", 500, rng.randint(200, 8000), 1.0))
        references = item["references"] or [""] * turn
        judged_text = "".join(f"\n[質問]\n{item['turns'][t]}\n[参考]\n{references[t]}\n[回答]\n{finals[rnd, task, item_id, t + 1]}"
                              for t in range(turn))
        jstatus = rng.choices(["ok", "parse_failed", "api_error"], [0.97, 0.02, 0.01])[0]
        if metric == "quality":
            scores = {c: float(rng.randint(1, 5)) for c in criteria}
        else:
            scores = {"score": float(rng.randint(1, 10 if metric == "mt_bench" else 5))}
        store.put_judgment(Judgment(key + "-j", key, rnd, task, item_id, turn, "gpt-5.4-2026-03-05", "single", "h", {},
                                    [{"role": "system", "content": "あなたは公平な採点者です。"},
                                     {"role": "user", "content": template + judged_text}],
                                    text(rng, language, 500) + f" [[{scores.get('score', 3):.0f}]]", scores if jstatus == "ok" else {},
                                    jstatus, 1 + (jstatus != "ok"), returned_model="gpt-5.4-2026-03-05", fingerprint="fp_x"))
    write_reports(run_dir, store)
    store.close()


def wait_for_warm(driver) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = driver.execute_script("return window.__view.searchWarmMs")
        if done:
            return done
        time.sleep(0.05)
    raise RuntimeError("the page never finished normalizing its texts for search")


def measure(page: Path, repeats: int) -> dict[str, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    # Every step starts from all rows of all runs; one input or change event, its synchronous filter and render,
    # and the layout it forces, timed inside the page.
    reset = """for (const id of ['f-task', 'f-category', 'f-round', 'f-gen-status', 'f-judge-status']) document.getElementById(id).value = '';
               for (const id of ['f-score-min', 'f-score-max', 'f-search']) document.getElementById(id).value = '';
               document.getElementById('f-sort').value = 'item'; const run = document.getElementById('f-run');
               run.value = 'all'; run.dispatchEvent(new Event('change'));"""
    change = """const [id, value, kind] = arguments; const t0 = performance.now();
                const el = document.getElementById(id); el.value = value; el.dispatchEvent(new Event(kind));
                document.getElementById('item-list').offsetHeight; return performance.now() - t0;"""
    steps = [("filter_judge_status_ms", "f-judge-status", "parse_failed", "change", True),
             ("filter_task_ms", "f-task", "mt_bench_ja", "change", True),
             ("filter_round_ms", "f-round", "2", "change", True),
             ("filter_score_range_ms", "f-score-min", "7", "input", True),
             ("sort_spread_ms", "f-sort", "spread-desc", "change", True),
             ("search_ja_first_ms", "f-search", "評価", "input", True),
             ("search_ja_typing_ms", "f-search", "評価方", "input", False),
             ("search_en_ms", "f-search", "carefully before", "input", True)]
    results: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            driver.get("about:blank")
            t0 = time.perf_counter()
            driver.get(page.resolve().as_uri() + "#items")
            wall = time.perf_counter() - t0
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return {ready: window.__view.readyMs, loaded: n.responseEnd, script: window.__view.startMs,"
                " parse: window.__view.parseMs, heap: performance.memory ? performance.memory.usedJSHeapSize : null}")
            numbers = {"open_ms (page ready)": timing["ready"], "open_wall_ms (driver.get)": wall * 1000,
                       "file_read_ms (responseEnd)": timing["loaded"], "script_start_ms": timing["script"],
                       "json_parse_ms": timing["parse"], "heap_mb": (timing["heap"] or 0) / 2**20}
            for name, control, value, kind, fresh in steps:
                if name == "search_ja_first_ms":  # the cold case: before the page's idle-time normalization ends
                    numbers["search_ja_cold_ms"] = driver.execute_script(reset + change, control, value, kind)
                    numbers["search_warm_done_ms"] = wait_for_warm(driver)
                if fresh:
                    driver.execute_script(reset)
                numbers[name] = driver.execute_script(change, control, value, kind)
            numbers["rows_all_runs"] = int(driver.find_element("id", "f-count").text.split(" of ")[1].split()[0])
            for k, v in numbers.items():
                results.setdefault(k, []).append(v)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return {k: sorted(v)[len(v) // 2] for k, v in results.items()}  # median of the repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each benchmark's items (1 = full size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the runs here and keep them (a second call reuses them)")
    parser.add_argument("--reasoning-language", choices=["en", "ja", "task"], default="en",
                        help="language of the reasoning texts (default en, as gpt-oss-style analysis channels mostly are; "
                             "task: the task's language, which makes a page about 1.6 times larger)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="view-bench-"))
    t0 = time.perf_counter()
    dirs = []
    for i in range(args.runs):
        run_dir = root / f"run{i + 1}"
        if not (run_dir / "summary.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            build_run(run_dir, f"synthetic-{i + 1}", 100 + i, args.scale,
                              None if args.reasoning_language == "task" else args.reasoning_language)
        dirs.append(run_dir)
    built = time.perf_counter() - t0
    slots = sum(t["counts"]["planned"] for t in json.loads((dirs[0] / "summary.json").read_text())["tasks"].values())
    t0 = time.perf_counter()
    page = write_page(dirs, root / "compare")
    write_s = time.perf_counter() - t0
    numbers = {"runs": args.runs, "slots_per_run": slots, "reasoning_language": args.reasoning_language,
               "page_mb": page.stat().st_size / 2**20,
               "write_page_s": write_s, **measure(page, args.repeats)}
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    print(f"synthetic runs built in {built:.1f} s ({root}); machine: {machine}")
    print("| measure | value |\n|---|---:|")
    for k, v in numbers.items():
        print(f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({**numbers, "machine": machine, "scale": args.scale}))


if __name__ == "__main__":
    main()
