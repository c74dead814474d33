"""Shared set-up: an isolated cache (the smoke model is built once per cache and kept between sessions), the network
blocked to everything but loopback (in this process and in the CLI subprocesses), the upstream copies in
../shared/upstream (tests that need them skip without), and a mock server.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream"
LJJ_BASE = "https://raw.githubusercontent.com/llm-jp/llm-jp-judge/4392b3b00ddd08bd4bed008ab44516daeb3fc824/src/llm_jp_judge/"
FASTCHAT_BASE = "https://raw.githubusercontent.com/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/fastchat/llm_judge/data/"
CACHE = Path(os.environ.get("LLMJP_EVAL_TEST_CACHE", ROOT / ".test-cache"))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the slow tests (full kill-point set, soak)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """Every test, and every subprocess it starts, uses the test cache, stays offline for HF, reaches loopback only
    and runs torch on one thread. Set before any test module is imported: huggingface_hub, datasets and torch read
    these variables at import."""
    CACHE.mkdir(parents=True, exist_ok=True)
    # The tiny test models gain nothing from a second thread, and on a loaded 2-core machine two OpenMP threads per
    # process wait on each other: generation runs several times slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["LLMJP_EVAL_CACHE"] = str(CACHE)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(CACHE / "hf")
    runpy.run_path(str(ROOT / "tests" / "netblock" / "sitecustomize.py"))  # what the subprocesses get through PYTHONPATH


def pytest_sessionstart(session):
    """The built-in smoke model, built once before any test (or test worker) starts, so parallel workers never build
    it at the same time; a later session finds it in the test cache."""
    if not hasattr(session.config, "workerinput"):
        from eval.smoke_model import builtin_path

        builtin_path("builtin:tiny-harmony")


@pytest.fixture(scope="session")
def upstream() -> Path:
    if not (UPSTREAM / "llm-jp-judge").is_dir():
        pytest.skip("../shared/upstream is absent")
    return UPSTREAM


@pytest.fixture(scope="session")
def mirrors(upstream) -> dict[str, str]:
    return {LJJ_BASE: str(upstream / "llm-jp-judge") + "/", FASTCHAT_BASE: str(upstream / "fastchat") + "/"}


@pytest.fixture(scope="session")
def smoke_model_dir() -> Path:
    from eval.smoke_model import builtin_path

    return builtin_path("builtin:tiny-harmony")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The README's smoke command, `python -m eval run configs/smoke.yaml` (three rounds, built-in mock judge), run once
    as a real process; tests read its run directory and must not change it (copy it first)."""
    from helpers import run_cli

    out = tmp_path_factory.mktemp("smoke") / "run"
    result = run_cli("run", "configs/smoke.yaml", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture
def mock_server():
    from eval.judge.mock_server import MockServer

    servers = []

    def start(**kwargs):
        from eval.config import MockSettings

        settings = kwargs.pop("settings", None) or MockSettings(**kwargs.pop("faults", {}))
        server = MockServer(settings, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
