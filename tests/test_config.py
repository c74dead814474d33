"""Config errors: one line on stderr naming the file and key, exit code 2, no traceback (the common mistakes are in
the bad-input catalogue, test_bad_inputs.py)."""

from __future__ import annotations

import pytest
from helpers import cli

BASE = """name: t
model: {backend: hf, path: builtin:tiny-harmony}
tasks: [mt_bench_ja]
judge: {model: mock-judge, mock: true}
"""


def _error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unknown_compat_profile_names_the_key_and_the_choices(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "compat: llm-jp-judge-1.0\n")
    line = _error_line(cli("run", str(path)))
    assert str(path) in line and "'compat'" in line and "llm-jp-judge-2.0.0" in line and "strict" in line


def test_the_removed_list_repr_flag_is_an_unknown_key(tmp_path):
    """The list-repr rendering is the compat profile's now; the old per-task flag is refused, not ignored."""
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "task_options: {mt_bench_ja: {judge: {legacy_list_repr: true}}}\n")
    line = _error_line(cli("run", str(path)))
    assert "legacy_list_repr" in line and "unknown key" in line


@pytest.mark.parametrize("text,needle", [
    ("judge: {model: x, api_key_env: sk-abcdefghijklmnop}", "judge.api_key_env"),
    ("judge: {model: x, cache: sometimes}", "judge.cache"),
])
def test_judge_settings_are_validated(tmp_path, text, needle):
    import yaml

    from eval.config import build_config
    from eval.errors import UserError
    data = yaml.safe_load(BASE)
    data["judge"] = yaml.safe_load(text)["judge"]
    with pytest.raises(UserError) as err:
        build_config(data, "c.yaml")
    assert needle in str(err.value)
    assert "sk-abcdefghijklmnop" not in str(err.value)


def test_yaml_on_off_are_accepted_for_switches():
    import yaml

    from eval.config import build_config

    data = yaml.safe_load(BASE.replace("path: builtin:tiny-harmony}", "path: builtin:tiny-harmony, compile: off}"))
    data["judge"]["cache"] = False
    cfg = build_config(data, "c.yaml")
    assert cfg.model.compile == "off" and cfg.judge.cache == "off"


def test_set_overrides_and_unknown_set_key():
    import yaml

    from eval.config import build_config
    from eval.errors import UserError

    data = yaml.safe_load(BASE)
    cfg = build_config(data, "c.yaml", ["judge.concurrency=4", "rounds=2"])
    assert cfg.judge.concurrency == 4 and cfg.rounds == 2
    with pytest.raises(UserError, match=r"unknown key 'judge.bogus' \(from --set\)"):
        build_config(data, "c.yaml", ["judge.bogus=1"])


def test_a_relative_path_in_a_run_config_is_relative_to_the_config_files_folder(tmp_path, monkeypatch):
    import json

    from eval.config import load_config
    from eval.pipeline import load_tasks

    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    row = {"question_id": 7, "category": "writing", "turns": ["a", "b"]}
    (folder / "data" / "q.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "c.yaml").write_text(BASE + "variant: sample\ntask_options:\n  mt_bench_ja:\n    variants:\n      sample:\n"
                                   "        data: {questions: {path: data/q.jsonl}}\n")
    monkeypatch.chdir(tmp_path)  # the command is typed elsewhere
    tasks = load_tasks(load_config(folder / "c.yaml"), None)
    assert [item.item_id for item in tasks["mt_bench_ja"].items] == ["7"]
    # what --set names stays relative to where the command was typed
    cfg = load_config(folder / "c.yaml", ["task_options.mt_bench_ja.variants.sample.data.questions.path=project/data/q.jsonl"])
    assert cfg.task_options["mt_bench_ja"]["variants"]["sample"]["data"]["questions"]["path"] == str(folder / "data" / "q.jsonl")


def test_bounds_and_yaml_limits_hold_in_process():
    import yaml

    from eval.config import build_config, load_config  # noqa: F401
    from eval.errors import UserError

    data = yaml.safe_load(BASE)
    for key, value in (("rounds", 101), ("judge.concurrency", 1025), ("judge.max_retries", 21), ("name", "."), ("name", "../x")):
        with pytest.raises(UserError, match=key.split(".")[-1]):
            build_config(data, "c.yaml", [f"{key}={value}"])
    build_config(data, "c.yaml", ["rounds=100", "judge.concurrency=1024", "name=my.run-1"])
