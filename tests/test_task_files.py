"""Task discovery: a user's task folders (LLMJP_EVAL_TASKS, a path list) add benchmarks to the bundled ones, a
task file's relative paths are relative to its own folder, names stay unique, asset tables merge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from eval.errors import UserError
from eval.task_files import BUNDLED_TASKS, asset_table, task_dirs, task_file, task_names

BUNDLED = {"mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"}


def user_benchmark(folder, name="my_bench"):
    """A copy of the bundled MT-Bench EN task under another name, with sample data of its own beside it."""
    spec = yaml.safe_load((BUNDLED_TASKS / "mt_bench_en.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    (folder / "data").mkdir(parents=True)
    shutil.copy(BUNDLED_TASKS / "samples" / "prompts" / "mt_bench.yaml", folder / "data" / "prompts.yaml")
    questions = [{"question_id": 1, "category": "writing", "turns": ["自作の質問です。", "続けてください。"]},
                 {"question_id": 2, "category": "roleplay", "turns": ["Another question of mine.", "And more."]}]
    (folder / "data" / "q.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions),
                                             encoding="utf-8")
    sample = spec["variants"]["sample"]
    sample["data"] = {"format": "mt_bench", "questions": {"path": "data/q.jsonl"}}
    sample["judge_prompts"] = {"path": "data/prompts.yaml", "format": "llm_jp_judge"}
    sample.pop("expected_items", None)
    spec.setdefault("judge", {})["reference_categories"] = []
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return folder / f"{name}.yaml"


def test_a_users_task_folder_adds_to_the_bundled_tasks_and_its_paths_are_its_own(tmp_path, monkeypatch):
    from eval.config import load_config
    from eval.tasks import load_spec, load_task

    mine = user_benchmark(tmp_path / "mine")
    monkeypatch.setenv("LLMJP_EVAL_TASKS", os.pathsep.join([str(tmp_path / "mine"), "mine", str(BUNDLED_TASKS)]))
    monkeypatch.chdir(tmp_path)  # relative paths in a task file are its folder's, not the working directory's
    assert task_dirs() == [mine.parent, BUNDLED_TASKS]  # each folder searched once
    assert set(task_names()) == BUNDLED | {"my_bench"}
    assert task_file("my_bench") == mine and task_file("mt_bench_ja") == BUNDLED_TASKS / "mt_bench_ja.yaml"
    task = load_task(load_spec("my_bench"), "sample", {})
    assert [item.turns[0] for item in task.items] == ["自作の質問です。", "Another question of mine."]
    assert {p["path"] for p in task.provenance} >= {str(mine.parent / "data" / "q.jsonl"),
                                                     str(mine.parent / "data" / "prompts.yaml")}
    config = tmp_path / "c.yaml"
    config.write_text("name: c\nmodel: {backend: hf, path: builtin:tiny-harmony}\njudge: {model: m, mock: true}\n"
                      "variant: sample\ntasks: [my_bench, mt_bench_en]\n")
    assert load_config(config).tasks == ["my_bench", "mt_bench_en"]


def test_a_user_task_with_a_bundled_name_is_refused_naming_both_files(tmp_path, monkeypatch):
    shutil.copy(BUNDLED_TASKS / "mt_bench_ja.yaml", tmp_path / "mt_bench_ja.yaml")
    monkeypatch.setenv("LLMJP_EVAL_TASKS", str(tmp_path))
    with pytest.raises(UserError) as e:
        task_names()
    assert str(tmp_path / "mt_bench_ja.yaml") in str(e.value) and str(BUNDLED_TASKS / "mt_bench_ja.yaml") in str(e.value)


def test_a_listed_folder_that_does_not_exist_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMJP_EVAL_TASKS", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"LLMJP_EVAL_TASKS: .*missing is not a folder"):
        task_names()


def test_a_users_asset_table_adds_entries_and_readdresses_a_base(tmp_path, monkeypatch):
    from eval.tasks import asset_ref

    _, bundled_assets = asset_table()
    (tmp_path / "_assets.yaml").write_text(yaml.safe_dump({
        "bases": {"llm_jp_judge": "http://mirror.example/ljj/", "mine": "http://mirror.example/mine/"},
        "assets": {"mine/questions": {"base": "mine", "path": "q.jsonl", "sha256": "0" * 64}}}))
    monkeypatch.setenv("LLMJP_EVAL_TASKS", str(tmp_path))
    bases, assets = asset_table()
    assert set(assets) == set(bundled_assets) | {"mine/questions"}
    assert bases["fastchat"].startswith("https://raw.githubusercontent.com/")  # untouched bundled base
    pinned = bundled_assets["config/generate"]
    ref = asset_ref("config/generate", "x")
    assert ref.url == "http://mirror.example/ljj/" + pinned["path"] and ref.sha256 == pinned["sha256"]
    assert asset_ref("mine/questions", "x").url == "http://mirror.example/mine/q.jsonl"


def test_config_and_task_discovery_load_without_the_task_loader():
    """No import cycle: the run config validates task names through the discovery module alone."""
    code = "import sys, eval.config; print('eval.tasks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_tasks_command_shows_a_user_task_without_a_sample_variant_as_such(tmp_path, monkeypatch):
    from helpers import cli

    mine = user_benchmark(tmp_path / "mine", name="full_only")
    spec = yaml.safe_load(mine.read_text(encoding="utf-8"))
    del spec["variants"]["sample"]  # the included files still describe a sample variant: they must not create one
    mine.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    result = cli("tasks", "--variant", "sample", env={"LLMJP_EVAL_TASKS": str(mine.parent)})
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["full_only"][-3:] == ["no", "sample", "variant"]
    assert all(rows[name][-1] == "cached" for name in BUNDLED)


@pytest.mark.parametrize("key", ["system_prompt", "judge_system_prompt"])
def test_a_plain_string_for_a_prompt_says_to_write_text(key):
    """Before: "Input should be a valid dictionary or instance of TextSpec"."""
    from eval.tasks import load_spec

    with pytest.raises(UserError) as caught:
        load_spec("llm_jp_instructions", {"variants": {"sample": {key: "Answer politely."}}})
    message = str(caught.value)
    assert f"'variants.sample.{key}': a plain string is not read as the prompt" in message
    assert 'write {text: "Answer politely."}' in message and "TextSpec" not in message
