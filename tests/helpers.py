"""Helpers for tests: run the CLI in this process or in a subprocess (network blocked), read JSONL, read mock
counters."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def counters(server) -> dict:
    return server.state.snapshot()["counters"]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """`python -m eval ARGS` run in this process (`eval.cli.main`) from the repository root, with `env` added to the
    environment for the call; what it prints is captured as a subprocess's would be. The test session blocks the
    network as the subprocesses' netblock does (conftest). An unexpected exception propagates, so a bug shows its
    traceback in the test report.

    Use `run_cli` (a real process) only where the process is what is tested: signals, kill points, the exit code and
    output of the real entry point, what a process reads from its environment at start-up."""
    from eval import redact
    from eval.cli import main

    saved_secrets = set(redact._secrets)
    redact._secrets.clear()  # as in a fresh process: a test of redaction must not pass on an earlier test's secrets
    saved_env = {k: os.environ.get(k) for k in env or {}}
    saved_cwd = os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()  # as in a fresh process: the command's own logging set-up writes to the captured stderr
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env or {})
        os.chdir(ROOT)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse: --help, usage errors
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        redact._secrets.clear()
        redact._secrets.update(saved_secrets)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = ROOT,
            network: bool = False) -> subprocess.CompletedProcess:
    """`python -m eval ARGS` in a subprocess; the network is blocked unless `network`. For tests of the process
    itself; everything else uses `cli`."""
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
