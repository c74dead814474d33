"""The README's commands run as written: every command block of "Choosing a judge", by bash, in a folder where copies
of the smoke run stand in for the runs it names (their mock judge answers whatever judge the commands name), with
the network blocked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from helpers import ROOT


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_the_commands_of_choosing_a_judge_run_as_written(smoke_run, tmp_path):
    text = section("Choosing a judge")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    # The runs the section starts from: every results/<name> it names that no command of it writes.
    written = set(re.findall(r"--out (?:results/)?([\w$./-]+)", text))
    named = {name for name in re.findall(r"results/([\w-]+)(?![\w.-])", text) if name not in written and
             not name.startswith("agree-")}
    assert {"llm-jp-4-8b-thinking-medium", "llm-jp-4-8b-thinking-low", "gpt-oss-20b-medium", "smoke"} <= named
    for name in named:
        shutil.copytree(smoke_run[0], tmp_path / "results" / name, ignore=shutil.ignore_patterns("run.lock"))
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "netblock"), str(ROOT)]))
    def start(block: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # A block that names no run of the others (the smoke path) runs beside them; the others in order.
    alone = [b for b in blocks if "results/smoke" in b]
    beside = [start(block) for block in alone]
    for block in (b for b in blocks if b not in alone):
        process = start(block)
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, (block, err[-3000:])
    for block, process in zip(alone, beside, strict=True):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, (block, err[-3000:])
    results = tmp_path / "results"
    for folder in ("llm-jp-4-8b-thinking-medium.gpt-5-mini", "llm-jp-4-8b-thinking-medium.qwen3",
                   "gpt-oss-20b-medium.gpt-5-mini", "smoke.lenient"):
        assert json.loads((results / folder / "summary.json").read_text())["complete"] is True, folder
    assert (results / "agree-gpt-5-mini" / "agree.md").is_file() and (results / "agree-smoke" / "report.html").is_file()
    lenient = json.loads((results / "agree-smoke" / "agree.json").read_text())
    assert lenient["tasks"]["mt_bench_en"]["metrics"]["score"]["within_one"] == 1.0
