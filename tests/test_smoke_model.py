"""The built-in smoke model trains on a fixed corpus of its own: the registered tasks never change it, and its cache
name follows the corpus (and the recipe)."""

from __future__ import annotations

import random
import shutil

import pytest
import yaml

from eval import smoke_model
from eval.task_files import BUNDLED_TASKS


def test_the_training_examples_do_not_depend_on_the_registered_tasks(tmp_path, monkeypatch):
    tokenizer = smoke_model.build_tokenizer()
    before = smoke_model._examples(tokenizer, random.Random(0))
    name_before = smoke_model.model_dir().name
    # a user's benchmark with no sample variant, which a model trained on the tasks' sample sets cannot load
    spec = yaml.safe_load((BUNDLED_TASKS / "mt_bench_en.yaml").read_text(encoding="utf-8"))
    spec["name"] = "full_only"
    del spec["variants"]["sample"]
    (tmp_path / "full_only.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    monkeypatch.setenv("LLMJP_EVAL_TASKS", str(tmp_path))
    assert smoke_model._examples(tokenizer, random.Random(0)) == before
    assert smoke_model.model_dir().name == name_before


def test_the_cache_name_changes_with_the_corpus(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.yaml"
    shutil.copy(smoke_model.CORPUS, corpus)
    original = smoke_model.model_dir()
    monkeypatch.setattr(smoke_model, "CORPUS", corpus)
    assert smoke_model.model_dir() == original  # the name is the content's, not the file's
    corpus.write_text(corpus.read_text(encoding="utf-8").replace("Here is my answer.", "Here is what I think."),
                      encoding="utf-8")
    changed = smoke_model.model_dir()
    assert changed != original and changed.parent == original.parent and changed.name.startswith("tiny-harmony-")


def test_a_build_finished_second_keeps_the_model_already_in_place(tmp_path):
    target, late = tmp_path / "model", tmp_path / "late-build"
    for folder, text in ((target, "first"), (late, "second")):
        folder.mkdir()
        (folder / "config.json").write_text(text)
    smoke_model._publish(late, target)  # the other process won the race: no error, its model stays
    assert (target / "config.json").read_text() == "first"
    smoke_model._publish(late, tmp_path / "fresh")  # nobody else: the build moves into place
    assert (tmp_path / "fresh" / "config.json").read_text() == "second" and not late.exists()
    broken, other = tmp_path / "broken", tmp_path / "other"
    for folder in (broken, other):
        folder.mkdir()
        (folder / "stray").write_text("")
    with pytest.raises(OSError):  # a folder in the way that holds no model is not taken for one
        smoke_model._publish(other, broken)


def test_building_says_what_it_does_and_shows_its_progress(tmp_path, capsys):
    """Before: about 45 s of silence on first use."""
    smoke_model.build(tmp_path / "model", steps=2)
    err = capsys.readouterr().err
    assert err.startswith("building the smoke model builtin:tiny-harmony (first use only: 2 training steps")
    assert "smoke model: 2/2 step (100 %)" in err and "smoke model built in" in err
    assert (tmp_path / "model" / "config.json").is_file()
