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
