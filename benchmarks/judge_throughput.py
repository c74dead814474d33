"""Judge-stage throughput against the mock server with latency: the harness's async client vs llm-jp-judge's
staggered schedule (request i starts at i × 0.5 s), and a pass with injected faults that must still end with
exactly one stored judgment per request. The last line is one JSON object.

    python benchmarks/judge_throughput.py                    # N=3168, latency 1 s ± 0.2, concurrency 64, 10 % faults
    python benchmarks/judge_throughput.py --n 500 --latency 0.2
    python benchmarks/judge_throughput.py --n 20 --latency 0.05 --concurrency 8 --baseline-n 5 --baseline-interval 0.02
                                                             # CI size, seconds (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval.config import MAX_CONCURRENCY, JudgeConfig, MockSettings  # noqa: E402
from eval.judge.client import JudgeClient  # noqa: E402
from eval.judge.ledger import Ledger  # noqa: E402
from eval.judge.mock_server import MockServer  # noqa: E402
from eval.judge.parsing import Parser  # noqa: E402
from eval.judge.requests import JudgeRequest  # noqa: E402
from eval.records import Slot  # noqa: E402
from eval.store import Store  # noqa: E402

RETRIED_FAULTS = ("429", "500", "503", "drop", "malformed", "empty")


def requests(n: int) -> list[JudgeRequest]:
    return [JudgeRequest(Slot(1 + i // 1056, "bench", str(i % 1056), 1), f"k{i}", "g", "single-v1", "sha",
                         [{"role": "system", "content": "You grade answers."},
                          {"role": "user", "content": f"Question {i}. Answer text {i}. Grade on a scale of 1 to 10 as [[n]]."}],
                         {"temperature": 0.0, "top_p": None, "max_tokens": 2048, "seed": i, "reasoning_effort": None},
                         Parser("single", r"\[\[(10|[1-9])\]\]", 1, 10), 3, None) for i in range(n)]


async def harness_pass(url: str, reqs: list[JudgeRequest], concurrency: int, store: Store) -> tuple[float, list, int]:
    """Wall time, judgments, and how many requests were stored more than once."""
    config = JudgeConfig(model="mock-judge", mock=True, concurrency=concurrency, max_retries=8, timeout_s=30)
    client = JudgeClient(config, url, Ledger(config))
    puts = Counter()

    async def one(request: JudgeRequest):
        judgment = await client.judge(request)
        store.put_judgment(judgment)
        puts[request.key] += 1
        return judgment

    started = time.perf_counter()
    judgments = await asyncio.gather(*(one(r) for r in reqs))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, judgments, sum(n - 1 for n in puts.values())


async def staggered_pass(url: str, reqs: list[JudgeRequest], interval: float) -> float:
    """llm-jp-judge's schedule: request i waits i × interval before it starts; the concurrency bound (the config's
    largest) is never reached at that schedule."""
    config = JudgeConfig(model="mock-judge", mock=True, concurrency=MAX_CONCURRENCY, max_retries=8, timeout_s=30)
    client = JudgeClient(config, url, Ledger(config))

    async def one(i: int, request: JudgeRequest):
        await asyncio.sleep(i * interval)
        return await client.judge(request)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3168)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--baseline-n", type=int, default=200)
    parser.add_argument("--baseline-interval", type=float, default=0.5)
    args = parser.parse_args()
    reqs = requests(args.n)
    ideal = args.concurrency / args.latency

    clean = MockServer(MockSettings(latency_s=args.latency, latency_jitter_s=args.jitter)).start()
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, judgments, _ = asyncio.run(harness_pass(clean.url, reqs, args.concurrency, Store(Path(tmp) / "a.sqlite")))
    achieved = args.n / elapsed
    print(f"harness, no faults: {args.n} judgments in {elapsed:.1f} s = {achieved:.1f} req/s "
          f"(ideal C/L = {ideal:.1f}; ratio {achieved / ideal:.3f}); statuses {dict(Counter(j.status for j in judgments))}", flush=True)
    baseline_n = min(args.baseline_n, args.n)
    baseline_s = asyncio.run(staggered_pass(clean.url, reqs[:baseline_n], args.baseline_interval))
    baseline = baseline_n / baseline_s
    print(f"llm-jp-judge schedule (start i at i × {args.baseline_interval} s), {baseline_n} requests: {baseline_s:.1f} s = "
          f"{baseline:.2f} req/s; speed-up {achieved / baseline:.1f}×", flush=True)
    clean.stop()

    per_fault = args.fault_rate / len(RETRIED_FAULTS)
    faulty = MockServer(MockSettings(latency_s=args.latency, latency_jitter_s=args.jitter, seed=1, retry_after_s=0.5,
                                     **{f"rate_{f}": per_fault for f in RETRIED_FAULTS})).start()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "b.sqlite")
        faulty_s, judgments, duplicates = asyncio.run(harness_pass(faulty.url, reqs, args.concurrency, store))
        rows = store.counts()["judgment"]
    faults = {k: v for k, v in faulty.state.snapshot()["counters"].items() if k in RETRIED_FAULTS}
    faulty.stop()
    attempts = Counter(j.attempts for j in judgments)
    lost = args.n - rows
    statuses = Counter(j.status for j in judgments)
    print(f"harness, {args.fault_rate:.0%} faults {faults}: {args.n} requests in {faulty_s:.1f} s; stored {rows} "
          f"(lost {lost}, duplicates {duplicates}); statuses {dict(statuses)}; attempts per judgment {dict(sorted(attempts.items()))}", flush=True)
    print(json.dumps({"machine": f"{platform.machine()} {platform.python_version()}", "n": args.n, "latency_s": args.latency,
                      "concurrency": args.concurrency, "achieved_rps": round(achieved, 2), "ideal_rps": round(ideal, 2),
                      "ratio": round(achieved / ideal, 3), "baseline_rps": round(baseline, 3),
                      "speedup_vs_baseline": round(achieved / baseline, 1), "fault_rate": args.fault_rate,
                      "faulty_rps": round(args.n / faulty_s, 2), "lost": lost, "duplicates": duplicates,
                      "all_ok_with_faults": statuses == Counter({"ok": args.n}),
                      "attempts": {str(k): v for k, v in sorted(attempts.items())}}))


if __name__ == "__main__":
    main()
