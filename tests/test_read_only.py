"""Archived runs: every command that only reads a run works on a folder that cannot be written, and `run` on a
read-only finished run says so instead of failing.

The folder is made read-only in a way root cannot bypass (the tests run as root): a read-only bind mount in a mount
namespace of the test's own (`unshare -m`). A non-root user gets the same from the folder's write bits. The commands
run in one process inside that namespace (`cli`, as everywhere in the tests), which reports each one's exit code
and output as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT

DRIVER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from helpers import cli
    results = [cli(*command).__dict__ for command in json.loads(sys.argv[2])]
    print("RESULTS " + json.dumps(results))
""")


def _unshare_works(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && ! touch "$0/x" 2>/dev/null',
                            str(folder)], capture_output=True)
    return probe.returncode == 0


def run_read_only(folder: Path, commands: list[list[str]]) -> list[dict]:
    """Each command in one process that cannot write `folder`; [{returncode, stdout, stderr}, …]."""
    argv = [sys.executable, "-c", DRIVER, str(ROOT / "tests"), json.dumps(commands)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "netblock"), str(ROOT)]))
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    elif _unshare_works(folder):
        argv = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder), *argv]
    else:
        pytest.skip("as root, a read-only folder needs a mount namespace (unshare -m), which this machine refuses")
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    line = next((line for line in result.stdout.splitlines() if line.startswith("RESULTS ")), None)
    assert line is not None, result.stderr[-3000:]
    return json.loads(line.removeprefix("RESULTS "))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def archive(smoke_run, tmp_path_factory):
    """Two finished smoke runs in an archive folder."""
    folder = tmp_path_factory.mktemp("archive")
    for name in ("smoke-a", "smoke-b"):
        shutil.copytree(smoke_run[0], folder / name, ignore=shutil.ignore_patterns("run.lock"))
    return folder


def test_reading_commands_and_run_work_on_a_read_only_archive(archive, tmp_path):
    a, b, out = archive / "smoke-a", archive / "smoke-b", tmp_path / "out"
    before = digest(archive)
    commands = {
        "report": ["report", str(a), "--out", str(out / "report")],
        "report in place": ["report", str(a)],
        "view": ["view", str(a), "--out", str(out / "view")],
        "view in place": ["view", str(a)],
        "compare": ["compare", str(a), str(b), "--out", str(out / "compare")],
        "agree": ["agree", str(a), str(b), "--out", str(out / "agree")],
        "runs": ["runs", str(archive), "--out", str(out / "index")],
        "run": ["run", "configs/smoke.yaml", "--out", str(a)],
        "run more rounds": ["run", "configs/smoke.yaml", "--out", str(a), "--rounds", "4"],
    }
    results = dict(zip(commands, run_read_only(archive, list(commands.values())), strict=True))
    for name in ("report", "view", "compare", "agree", "runs", "run"):
        assert results[name]["returncode"] == 0, (name, results[name]["stderr"][-2000:])
    assert digest(archive) == before  # nothing written, not even SQLite's -wal/-shm files

    summary = json.loads((a / "summary.json").read_text())
    assert json.loads((out / "report" / "summary.json").read_text()) == summary
    for name in ("table.md", "manifest.json", "report.html", "plots/benchmarks.png"):
        assert (out / "report" / name).is_file(), name
    assert (out / "view" / "report.html").is_file() and (out / "agree" / "agree.md").is_file()
    assert f"Comparison written to {out / 'compare'}/" in results["compare"]["stdout"]
    assert (out / "index" / "index.html").is_file() and str(a) in results["runs"]["stdout"]
    assert f"{a} is read-only and complete: nothing to compute, nothing written" in results["run"]["stdout"]

    for name in ("report in place", "view in place"):  # where nothing can be written, say so and what to give
        assert results[name]["returncode"] == 2
        assert f"error: {a} is read-only" in results[name]["stderr"] and "--out" in results[name]["stderr"]
    more = results["run more rounds"]
    assert more["returncode"] == 2 and "read-only and incomplete: 24 answers and 24 judgments" in more["stderr"]
