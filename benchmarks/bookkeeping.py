"""The harness's own bookkeeping at full size, with nothing else to wait for: one configuration's item counts
(MT-Bench JA/EN 80 × 2 turns, AnswerCarefully 336, llm-jp-instructions 400; 3 rounds = 3 168 generations and
3 168 judgments), answers replayed instantly from a file, the built-in mock judge answering at once, the shared
judge cache in read_write mode. What is left is the pipeline: planning, resume checks, store and cache writes,
reports, progress output. A second invocation of the finished run measures "nothing to do".

    python benchmarks/bookkeeping.py                 # full size, ~1 min on 2 shared cores
    python benchmarks/bookkeeping.py --scale 0.05    # CPU dry run, seconds

Measured per invocation: wall time, slots the store loaded from its database one at a time (`Store.generation`, `Store.judgments`), time the event
loop spent in judge-cache writes, lines written to the (non-interactive) progress log. The last line is one JSON
object. Run it from the tree under test (`PYTHONPATH=<tree> python <tree>/benchmarks/bookkeeping.py`) to compare
two checkouts one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval import pipeline  # noqa: E402
from eval.config import load_config  # noqa: E402
from eval.judge import cache as judge_cache  # noqa: E402
from eval.store import Store  # noqa: E402

FULL = {"mt_bench_ja": 80, "mt_bench_en": 80, "answer_carefully": 336, "llm_jp_instructions": 400}
CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]


def write_data(root: Path, scale: float) -> dict[str, dict]:
    """Synthetic benchmark files of full size, named through task_options (the shipped sample prompts are used)."""
    options: dict[str, dict] = {}
    for task, full in FULL.items():
        n = max(2, round(full * scale))
        if task.startswith("mt_bench"):
            questions, references = root / f"{task}_q.jsonl", root / f"{task}_r.jsonl"
            with questions.open("w") as q, references.open("w") as r:
                for i in range(1, n + 1):
                    category = CATEGORIES[i % len(CATEGORIES)]
                    q.write(json.dumps({"question_id": i, "category": category,
                                        "turns": [f"Question {i}, first turn.", f"Question {i}, second turn."]}) + "\n")
                    r.write(json.dumps({"question_id": i, "choices": [{"index": 0, "turns": [f"Ref {i}.1", f"Ref {i}.2"]}]}) + "\n")
            data = {"questions": {"path": str(questions)}, "references": {"path": str(references)}}
        else:
            folder = root / task
            (folder / "v").mkdir(parents=True)
            (folder / "README.md").write_text("---\nconfigs:\n- config_name: v\n  data_files:\n  - split: test\n"
                                              "    path: v/test.jsonl\n---\n")
            with (folder / "v" / "test.jsonl").open("w") as f:
                for i in range(n):
                    f.write(json.dumps({"ID": f"{task}-{i}", "text": f"Instruction {i}.", "output": f"Reference {i}."}) + "\n")
            data = {"dataset": str(folder), "config": "v"}
        options[task] = {"variants": {"sample": {"data": data, "expected_items": n}}}
    return options


def write_answers(path: Path, cfg_tasks: dict) -> int:
    rows = 0
    with path.open("w") as f:
        for task in cfg_tasks.values():
            for item in task.items:
                for turn in range(1, len(item.turns) + 1):
                    final = f"Answer to {item.item_id} turn {turn}."
                    f.write(json.dumps({"task": task.name, "item_id": item.item_id, "turn": turn, "round": 1,
                                        "final": final, "raw": final, "status": "ok"}) + "\n")
                    rows += 1
    return rows


class Meters:
    """Counts store loads and times cache writes on the calling thread, around the real methods."""

    def __init__(self) -> None:
        self.loads = 0
        self.cache_write_s = 0.0
        self._generation = Store.generation
        self._judgments = Store.judgments
        self._put = judge_cache.JudgeCache.put

    def __enter__(self) -> Meters:
        meters = self

        def counted_generation(store, slot):
            meters.loads += slot not in store.generations
            return meters._generation(store, slot)

        def counted_judgments(store, slot):
            meters.loads += slot not in store.judged
            return meters._judgments(store, slot)

        def timed_put(cache, judgment):
            started = time.perf_counter()
            try:
                return meters._put(cache, judgment)
            finally:
                meters.cache_write_s += time.perf_counter() - started

        Store.generation = counted_generation
        Store.judgments = counted_judgments
        judge_cache.JudgeCache.put = timed_put
        return self

    def __exit__(self, *exc) -> None:
        Store.generation = self._generation
        Store.judgments = self._judgments
        judge_cache.JudgeCache.put = self._put


def invocation(cfg, out: Path, log: Path) -> dict:
    with Meters() as meters, log.open("w") as stream, contextlib.redirect_stderr(stream), \
            contextlib.redirect_stdout(open(os.devnull, "w")):
        started = time.perf_counter()
        pipeline.run(cfg, pipeline.RunOptions(out=out))
        wall = time.perf_counter() - started
    text = log.read_text()
    return {"wall_s": round(wall, 2), "store_loads": meters.loads, "cache_write_s_on_caller": round(meters.cache_write_s, 3),
            "log_lines": len([line for line in text.replace("\r", "\n").split("\n") if line.strip()])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full item counts (default 1)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["LLMJP_EVAL_CACHE"] = str(root / "cache")  # the synthetic datasets' cache stays in here
        options = write_data(root, args.scale)
        answers = root / "answers.jsonl"
        answers.write_text('{"task": "x", "item_id": "0", "turn": 1, "round": 1, "final": "", "status": "ok"}\n')
        settings = {"name": "bookkeeping", "model": {"backend": "replay", "path": str(answers)}, "rounds": 3,
                    "variant": "sample", "tasks": list(FULL), "task_options": options,
                    "judge": {"model": "mock-judge", "mock": True, "concurrency": args.concurrency, "cache": "read_write",
                              "cache_path": str(root / "judge-cache.sqlite")}}
        config = root / "bookkeeping.yaml"
        config.write_text(json.dumps(settings))
        cfg = load_config(str(config), [])
        slots = write_answers(answers, pipeline.load_tasks(cfg, None))
        first = invocation(cfg, root / "run", root / "first.log")
        second = invocation(cfg, root / "run", root / "second.log")
        store = Store(root / "run" / "run.sqlite")
        counts = store.counts()
        store.close()
    result = {"benchmark": "bookkeeping", "scale": args.scale, "slots_per_round": slots, "rounds": 3,
              "stored": counts, "first_run": first, "finished_run": second,
              "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}}
    print(f"first run:    {first}")
    print(f"finished run: {second}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
