"""Helpers for tests: run the CLI in a subprocess (network blocked), read JSONL, read mock counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def counters(server) -> dict:
    return server.state.snapshot()["counters"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = ROOT,
            network: bool = False) -> subprocess.CompletedProcess:
    """`python -m eval ARGS` in a subprocess; the network is blocked unless `network`."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(([] if network else [str(ROOT / "tests" / "netblock")]) + [str(ROOT)])
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "eval", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SECRET = "sk-test-SECRETKEY-0123456789abcdefABCDEF"  # a recognizable fake judge key


def smoke_args(out: Path, server, *extra: str) -> list[str]:
    """The smoke config pointed at an external mock server (so tests can count its requests)."""
    return ["run", "configs/smoke.yaml", "--out", str(out), "--set", "judge.mock=false", "--set", f"judge.base_url={server.url}",
            "--set", "judge.api_key_env=MOCK_JUDGE_KEY", *extra]


def popen_cli(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """A background `python -m eval` (network blocked); its output goes to `log` (never to an unread pipe)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "netblock"), str(ROOT)])
    full_env.update(env or {})
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "eval", *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def body_hash(judgment: dict) -> str:
    """How the mock server identifies the request behind a stored judgment (its whole body)."""
    from eval.judge.mock_server import request_hash

    return request_hash({"model": judgment["judge_model"], "messages": judgment["messages"], **judgment["params"]})


def stored(run_dir: Path, table: str) -> list[dict]:
    import sqlite3

    path = run_dir / "run.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        return [json.loads(r[0]) for r in db.execute(f"SELECT record FROM {table}")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def wait_until(predicate, timeout: float = 120, interval: float = 0.05) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
