"""Shared fixtures: an isolated cache (the smoke model is built once per cache), the upstream copies in
../shared/upstream (tests that need them skip without), a mock server, and a CLI runner for subprocesses with the
network blocked to everything but loopback.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache():
    """Every test, and every subprocess it starts, uses the test cache and stays offline for HF."""
    CACHE.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("LLMJP_EVAL_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME")}
    os.environ["LLMJP_EVAL_CACHE"] = str(CACHE)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(CACHE / "hf")
    yield CACHE
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
