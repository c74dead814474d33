"""Pinned downloads through a local HTTP server, the cache, checksums; HF-layout folders through load_dataset."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import pytest
from conftest import LJJ_BASE, UPSTREAM
from helpers import cli

from eval.errors import UserError
from eval.sources import FileRef, resolve_file


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", hits
    server.shutdown()
    server.server_close()


def test_download_is_verified_cached_and_reused(file_server, tmp_path, monkeypatch):
    root, base, hits = file_server
    monkeypatch.setenv("LLMJP_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = b'{"question_id": 1}\n'
    (root / "q.jsonl").write_bytes(data)
    ref = FileRef("questions", url=base + "q.jsonl", sha256=hashlib.sha256(data).hexdigest())
    first = resolve_file(ref)
    assert first.path.read_bytes() == data and hits == ["/q.jsonl"]
    second = resolve_file(ref)
    assert second.path == first.path and hits == ["/q.jsonl"]  # served from the cache


def test_corrupt_download_and_corrupt_cache_fail_the_checksum_with_both_hashes(file_server, tmp_path, monkeypatch):
    root, base, _ = file_server
    monkeypatch.setenv("LLMJP_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (root / "q.jsonl").write_bytes(b"tampered\n")
    pinned = hashlib.sha256(b"original\n").hexdigest()
    with pytest.raises(UserError) as err:
        resolve_file(FileRef("task x: questions", url=base + "q.jsonl", sha256=pinned))
    message = str(err.value)
    assert "task x: questions" in message and pinned in message and hashlib.sha256(b"tampered\n").hexdigest() in message
    # a cached copy that went bad is caught too
    good = FileRef("q", url=base + "good.jsonl", sha256=hashlib.sha256(b"good\n").hexdigest())
    (root / "good.jsonl").write_bytes(b"good\n")
    path = resolve_file(good).path
    path.write_bytes(b"bad\n")
    with pytest.raises(UserError, match="checksum mismatch for cached copy"):
        resolve_file(good)


def test_offline_or_unreachable_downloads_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMJP_EVAL_CACHE", str(tmp_path / "cache"))
    ref = FileRef("task y: questions", url="http://127.0.0.1:9/none.jsonl", sha256="0" * 64)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="python -m eval fetch"):
        resolve_file(ref)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(UserError, match="cannot download http://127.0.0.1:9/none.jsonl"):
        resolve_file(ref)


def test_mirror_maps_a_pinned_address_to_a_local_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.jsonl").write_bytes(b"x\n")
    ref = FileRef("f", url="https://example.invalid/repo/data/f.jsonl", sha256=hashlib.sha256(b"x\n").hexdigest())
    resolved = resolve_file(ref, {"https://example.invalid/repo/": str(tmp_path) + "/"})
    assert resolved.path == tmp_path / "data" / "f.jsonl" and resolved.url == ref.url


def _standin(folder: Path, config: str, rows: list[dict]) -> Path:
    (folder / config).mkdir(parents=True)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: test\n    path: {config}/test.jsonl\n---\n")
    (folder / config / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return folder


def test_hf_layout_folder_loads_through_load_dataset_and_missing_fields_are_named(tmp_path):
    from eval.tasks import load_spec, load_task

    good = _standin(tmp_path / "good", "v2.0", [{"ID": "1", "text": "質問", "output": "参考"}])
    spec = load_spec("answer_carefully", {"variants": {"full": {"data": {"dataset": str(good)}}}})
    if (UPSTREAM / "llm-jp-judge").is_dir():  # the judge prompt files come from the upstream copies
        task = load_task(spec, "full", {LJJ_BASE: str(UPSTREAM / "llm-jp-judge")})
        assert [(i.item_id, i.turns, i.references) for i in task.items] == [("1", ("質問",), ("参考",))]
        assert any("expected 336 items, found 1" in w for w in task.warnings)
    bad = _standin(tmp_path / "bad", "v2.0", [{"ID": "1", "question": "質問", "output": "参考"}])
    from eval.tasks import _load_items

    spec = load_spec("answer_carefully", {"variants": {"full": {"data": {"dataset": str(bad)}}}})
    with pytest.raises(UserError) as err:
        _load_items(spec, spec.variant("full").data, {}, [])
    assert "no field 'text'" in str(err.value) and "ID, output, question" in str(err.value)


def test_tasks_command_lists_the_four_benchmarks_with_their_sources():
    result = cli("tasks")
    assert result.returncode == 0, result.stderr
    for needle in ("mt_bench_ja", "question_full-v3.jsonl", "mt_bench_en", "question-v0.jsonl",
                   "llm-jp/AnswerCarefully (v2.0/test)", "llm-jp/llm-jp-instructions (v1.0/test)", "336", "400"):
        assert needle in result.stdout
    sample = cli("tasks", "--variant", "sample")
    assert sample.returncode == 0, sample.stderr
    rows = [re.split(r"\s{2,}", line) for line in sample.stdout.splitlines()[1:]]
    # the sample sets ship with the project: every one is cached and loads its four items
    assert {row[0]: (row[-2], row[-1]) for row in rows} == \
        dict.fromkeys(("mt_bench_ja", "mt_bench_en", "answer_carefully", "llm_jp_instructions"), ("4", "cached"))



def test_fetch_downloads_and_verifies_everything_a_config_needs(tmp_path, file_server, smoke_model_dir):
    import shutil

    import yaml

    root, base, hits = file_server
    if not (UPSTREAM / "llm-jp-judge").is_dir():
        pytest.skip("../shared/upstream is absent")
    shutil.copytree(UPSTREAM / "llm-jp-judge", root / "ljj")
    standin = _standin(tmp_path / "ac", "v2.0", [{"ID": "1", "text": "q", "output": "r"}])
    config = {"name": "f", "variant": "full", "tasks": ["mt_bench_en", "answer_carefully"],
              "model": {"backend": "hf", "path": "builtin:tiny-harmony"}, "judge": {"model": "m", "mock": True},
              "asset_mirrors": {}, "task_options": {"answer_carefully": {"variants": {"full": {"data": {"dataset": str(standin)}}}}}}
    # Point the pinned llm-jp-judge addresses at the local server: a user's asset table readdresses the base.
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "_assets.yaml").write_text(yaml.safe_dump({"bases": {"llm_jp_judge": base + "ljj/"}}))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"LLMJP_EVAL_TASKS": str(tasks_dir), "LLMJP_EVAL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    # The built-in model is not fetched (it is built on first use); the dry run finds it in the cache, as built.
    shutil.copytree(smoke_model_dir, tmp_path / "cache" / "models" / smoke_model_dir.name)
    result = cli("fetch", str(path), "--no-model", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok  task mt_bench_en: 80 items" in result.stdout and "ok  task answer_carefully: 1 items" in result.stdout
    assert any(h.endswith("question-v0.jsonl") for h in hits)
    offline = cli("run", str(path), "--dry-run", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr[-2000:]  # everything needed is now in the cache


def prepare_hub_dataset(cache: Path, repo_id: str, config: str, rows: list[dict]) -> None:
    """What `load_dataset(repo_id, config)` leaves in the datasets cache after a download, built by datasets itself."""
    import datasets
    from datasets.packaged_modules.generator.generator import Generator

    builder = Generator(cache_dir=str(cache), dataset_name=repo_id.split("/")[-1], repo_id=repo_id, config_name=config,
                        config_id=config, generator=lambda: iter(rows), split=datasets.Split.TEST, hash="0123abcd")
    builder.download_and_prepare()


def test_hf_is_cached_finds_a_hub_dataset_where_datasets_reads_it_back_offline(tmp_path, monkeypatch):
    import datasets

    from eval.sources import hf_is_cached

    cache = tmp_path / "datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert not hf_is_cached("llm-jp/AnswerCarefully", "v2.0")
    prepare_hub_dataset(cache, "llm-jp/AnswerCarefully", "v2.0", [{"ID": "1", "text": "q", "output": "r"}])
    # datasets itself loads it offline from there (folder llm-jp___answer_carefully: the name is snake-cased)...
    rows = datasets.load_dataset("llm-jp/AnswerCarefully", "v2.0", split="test", cache_dir=str(cache))
    assert rows[0] == {"ID": "1", "text": "q", "output": "r"}
    # ...and so the check says cached, for that config only
    assert hf_is_cached("llm-jp/AnswerCarefully", "v2.0")
    assert not hf_is_cached("llm-jp/AnswerCarefully", "v2")
    assert not hf_is_cached("llm-jp/AnswerCarefully", "v1.0")
    assert not hf_is_cached("other/AnswerCarefully", "v2.0")


def test_hf_datasets_cache_follows_the_rule_of_datasets_config(tmp_path, monkeypatch):
    import subprocess
    import sys

    from eval.sources import hf_datasets_cache

    cases = [{"HF_DATASETS_CACHE": str(tmp_path / "explicit")}, {"HF_HOME": str(tmp_path / "hf")},
             {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}]
    expected = []
    for case in cases:
        for name in ("HF_DATASETS_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in case.items():
            monkeypatch.setenv(name, value)
        expected.append(str(hf_datasets_cache()))
    probe = ("import importlib, json, os, sys, datasets.config as c\n"
             "for case in json.loads(sys.argv[1]):\n"
             "    for n in ('HF_DATASETS_CACHE', 'HF_HOME', 'XDG_CACHE_HOME'): os.environ.pop(n, None)\n"
             "    os.environ.update(case); print(os.path.expanduser(str(importlib.reload(c).HF_DATASETS_CACHE)))\n")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(cases)], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == expected


def test_every_bundled_sample_set_is_cached_from_any_working_directory(tmp_path, monkeypatch):
    from eval.task_files import task_names
    from eval.tasks import cache_status, load_spec

    monkeypatch.chdir(tmp_path)
    assert {name: cache_status(load_spec(name), "sample", {}) for name in task_names()} == dict.fromkeys(task_names(), "cached")
