"""The package as users get it: a wheel that holds every module and bundled resource, installed away from the source
tree and run from another directory (bundled tasks, configs, sample data, view page, the published table)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT


def package_files() -> set[str]:
    """Every file of the source package, as a path inside a wheel (compiled caches aside)."""
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / "eval").rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source (so the build leaves nothing in the working tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT / "eval", source / "eval", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def test_the_wheel_holds_every_module_and_bundled_resource_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    expected = package_files()
    assert {"eval/resources/model_card.csv", "eval/resources/configs/smoke.yaml", "eval/resources/tasks/_assets.yaml",
            "eval/resources/tasks/samples/answer_carefully/v2.0/test.jsonl", "eval/view_page/page.js"} <= expected
    assert sorted(expected - names) == []
    assert sorted(n for n in names if not n.startswith(("eval/", "llmjp_judge_harness-"))) == []
    assert "llmjp-eval = eval.cli:main" in entry_points


def test_the_installed_package_runs_from_another_directory(wheel, tmp_path, smoke_model_dir):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the installed copy only (no source tree on the path); its dependencies come from this interpreter
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "netblock"), str(site)]),
           "LLMJP_EVAL_TASKS": ""}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=600)

    where = run("-c", "import eval; print(eval.__file__)")
    assert where.stdout.strip() == str(site / "eval" / "__init__.py"), where.stderr[-2000:]
    tasks = run("-m", "eval", "tasks", "--variant", "sample")
    assert tasks.returncode == 0, tasks.stderr[-2000:]
    rows = [line.split() for line in tasks.stdout.splitlines()[1:]]
    assert {row[0]: row[-1] for row in rows} == {
        "answer_carefully": "cached", "llm_jp_instructions": "cached", "mt_bench_en": "cached", "mt_bench_ja": "cached"}
    assert all(str(site / "eval" / "resources" / "tasks" / "samples") in line for line in tasks.stdout.splitlines()[1:])
    smoke = run("-m", "eval", "run", "--limit", "1", "--rounds", "1")  # the embedded default: the bundled smoke config
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    out = elsewhere / "results" / "smoke"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and set(summary["tasks"]) == {
        "mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"}
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "MT-Bench (JA)" in table and "gpt-oss-20b (reasoning_effort = low) (published)" in table  # model_card.csv
    assert (out / "report.html").is_file()
    script = subprocess.run([str(site / "bin" / "llmjp-eval"), "--help"], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=60)
    assert script.returncode == 0 and "llm-jp-4 model-card evaluation harness" in script.stdout


def test_a_config_argument_that_is_no_file_here_names_a_bundled_config(tmp_path, monkeypatch):
    from eval.config import BUNDLED_CONFIGS, config_path, load_config
    from eval.errors import UserError

    monkeypatch.chdir(tmp_path)
    for argument in ("configs/8b-medium.yaml", "8b-medium.yaml", "8b-medium"):
        assert config_path(argument) == BUNDLED_CONFIGS / "8b-medium.yaml"
    assert load_config("8b-medium").name == "llm-jp-4-8b-thinking-medium"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "8b-medium.yaml").write_text((BUNDLED_CONFIGS / "smoke.yaml").read_text())
    assert load_config("configs/8b-medium.yaml").name == "smoke"  # a file here wins over the bundled one
    with pytest.raises(UserError, match=r"8b-mediun: config file not found, and no bundled config has that name "
                                        r"\(bundled: 32b-a3b-low, .*8b-medium, .*smoke\)"):
        load_config("8b-mediun")


def test_the_manifest_names_a_commit_only_for_a_source_tree_at_the_top_of_its_repository(tmp_path):
    import subprocess

    from eval.manifest import git_commit

    repo = tmp_path / "some project"
    installed = repo / "venv" / "site-packages"
    installed.mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == head
    assert git_commit(installed) is None  # a package installed inside another repository
    assert git_commit(tmp_path) is None  # no repository at all
