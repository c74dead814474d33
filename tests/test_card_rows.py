"""Every row of the model card is one command, and a run is compared with the row it reproduces on purpose.

The published row comes from the config's `published:` key or from the model's identity (hub id, hub-cache snapshot
path, a local folder's config.json `_name_or_path`, the served model name), never from `label`; when none matches,
the summary and the table say so in one sentence naming the key to set. Each row of `eval/resources/model_card.csv`
has a bundled config (`python -m eval configs` lists them); the API-model configs send llm-jp-judge's request for an
API generator and dry-run offline.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from helpers import cli

from eval.config import BUNDLED_CONFIGS, load_config
from eval.published import card_row, model_identity
from eval.summary import DEFAULT_REFERENCE

API_CONFIGS = ("gpt-4o", "gpt-5.4-low", "gpt-5.4-medium", "gpt-5.4-high")


def config(model: dict, **top) -> dict:
    return {"model": model, **top}


# ---------------------------------------------------------------- the model's identity


def test_the_identity_comes_from_the_hub_id_snapshot_path_config_json_or_served_name(tmp_path):
    snapshot = tmp_path / "hub" / "models--llm-jp--llm-jp-4-8b-thinking" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    renamed = tmp_path / "my-checkpoint"
    renamed.mkdir()
    (renamed / "config.json").write_text(json.dumps({"_name_or_path": "openai/gpt-oss-20b"}))
    bare = tmp_path / "llm-jp-4-8b-thinking"  # the card's name as a folder name is no identity
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    assert model_identity({"backend": "hf", "path": "llm-jp/llm-jp-4-8b-thinking"}) == ("llm-jp-4-8b-thinking", "the hub id")
    assert model_identity({"backend": "vllm", "path": str(snapshot)}) == ("llm-jp-4-8b-thinking", "the hub-cache snapshot path")
    assert model_identity({"backend": "hf", "path": str(renamed)}) == ("gpt-oss-20b", "config.json's _name_or_path")
    assert model_identity({"backend": "hf", "path": str(bare)})[0] is None
    assert model_identity({"backend": "openai", "path": "gpt-4o-2024-08-06"}) == ("gpt-4o-2024-08-06", "the served model name")
    assert model_identity({"backend": "openai", "path": "llm-jp/llm-jp-4-8b-thinking"})[0] == "llm-jp-4-8b-thinking"
    assert model_identity({"backend": "hf", "path": "builtin:tiny-harmony"})[0] is None


def test_the_row_is_chosen_by_identity_and_effort_or_by_the_published_key_never_by_label():
    hub = {"backend": "hf", "path": "llm-jp/llm-jp-4-8b-thinking", "chat_template_kwargs": {"reasoning_effort": "low"}}
    assert card_row(config(hub, label="gpt-oss-20b")).row["mt_bench_ja"] == 7.23
    unset = card_row(config({**hub, "chat_template_kwargs": {}}))
    assert unset.row is None and unset.note == (
        "No published row for model 'llm-jp-4-8b-thinking' with no reasoning_effort (the hub id); set `published: "
        "{model: …, reasoning_effort: …}` in the config to compare with a row of the card, or `published: none`.")
    chosen = card_row(config({"backend": "hf", "path": "/data/ckpt-9000"},
                             published={"model": "gpt-oss-20b", "reasoning_effort": "medium"}))
    assert chosen.row["mt_bench_en"] == 7.85 and chosen.matched.matched_by == "published: in the config"
    none = card_row(config(hub, published="none"))
    assert (none.row, none.note) == (None, "No published row: the config says `published: none`.")
    unknown = card_row(config({"backend": "hf", "path": "builtin:tiny-harmony"}))
    assert unknown.note.startswith("No published row: the model's identity is unknown (builtin:tiny-harmony is a builtin")
    api = card_row(config({"backend": "openai", "path": "gpt-5.4-2026-03-05", "reasoning_effort": "high"}))
    assert api.row["mt_bench_ja"] == 8.98


# ---------------------------------------------------------------- every card row is one command


def test_every_card_row_has_exactly_one_bundled_config():
    by_row: dict[tuple[str, str], list[str]] = {}
    for path in sorted(BUNDLED_CONFIGS.glob("*.yaml")):
        match = card_row(load_config(path))
        if match.row is not None:
            by_row.setdefault((match.row["model"], match.row["reasoning_effort"]), []).append(path.stem)
    card = pd.read_csv(DEFAULT_REFERENCE, dtype=str, keep_default_na=False)
    rows = [(r["model"], r["reasoning_effort"]) for r in card.to_dict("records")]
    assert {row: by_row.get(row) for row in rows} == {row: [name] for row, name in zip(rows, [
        "gpt-4o", "gpt-5.4-low", "gpt-5.4-medium", "gpt-5.4-high", "gpt-oss-20b-low", "gpt-oss-20b-medium", "8b-low",
        "8b-medium", "32b-a3b-low", "32b-a3b-medium"], strict=True)}


def test_the_configs_command_lists_each_bundled_config_with_its_row():
    result = cli("configs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(list(BUNDLED_CONFIGS.glob("*.yaml")))
    row = next(line for line in lines if line.startswith("gpt-5.4-medium "))
    assert row.split() == ["gpt-5.4-medium", "openai", "gpt-5.4-2026-03-05", "gpt-5.4-2026-03-05", "(reasoning_effort",
                           "=", "medium)"]
    assert next(line for line in lines if line.startswith("smoke ")).split()[3:6] == ["–", "(No", "published"]


@pytest.mark.parametrize("name", API_CONFIGS)
def test_the_api_configs_dry_run_offline_on_sample_data(name, monkeypatch, tmp_path):
    """Without the key the estimate is printed, then the key is named as what the run would miss (exit 2); with it,
    the dry run is clean. Nothing is sent and nothing is written either way."""
    args = ("run", name, "--dry-run", "--set", "variant=sample", "--out", str(tmp_path / "run"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for key, code in ((None, 2), ("a-key-for-the-dry-run", 0)):
        if key:
            monkeypatch.setenv("OPENAI_API_KEY", key)
        result = cli(*args)
        assert result.returncode == code, result.stderr
        assert f"Dry run for {load_config(name).name}: nothing is sent" in result.stdout
        assert "split by the server" in result.stdout
        assert "total           72              72" in result.stdout
        assert ("OPENAI_API_KEY is not set" in result.stderr) == (key is None)
        assert not (tmp_path / "run").exists()


def test_an_api_generator_gets_upstreams_request_and_drops_a_parameter_the_api_refuses(mock_server, monkeypatch):
    """llm-jp-judge's `openai` client for a gpt-5 model: max_completion_tokens for max_tokens, no top_p, the task's
    other parameters and reasoning_effort. The mock refuses `temperature` (as gpt-5.4 does at a reasoning effort):
    the backend leaves it out from then on, and every answer arrives."""
    from eval.backends import openai_server
    from eval.backends.base import GenerationRequest, Sampling
    from eval.backends.openai_server import OpenAIServerBackend
    from eval.config import OpenAIModel
    from eval.records import Slot

    server = mock_server(reject_params=("temperature",))
    cfg = OpenAIModel(backend="openai", path="gpt-5.4-2026-03-05", base_urls=[server.url], reasoning_effort="low",
                      concurrency=2)
    sent = []
    real = openai_server.openai.resources.chat.AsyncCompletions.create

    async def spy(self, **kwargs):
        sent.append(kwargs)
        return await real(self, **kwargs)

    monkeypatch.setattr(openai_server.openai.resources.chat.AsyncCompletions, "create", spy)
    requests = [GenerationRequest(Slot(1, "t", str(i), 1), [{"role": "user", "content": f"q{i}"}],
                                  Sampling(0.7, 0.95, 64, 0.0), 1234) for i in range(4)]
    results = []
    OpenAIServerBackend(cfg).generate(requests, results.append)
    assert len(results) == 4 and {r.parsed.status for r in results} == {"ok"}
    first = {k: v for k, v in sent[0].items() if k not in ("model", "messages")}
    assert first == {"max_completion_tokens": 64, "temperature": 0.7, "seed": 1234, "frequency_penalty": 0.0,
                     "reasoning_effort": "low"}
    assert all("temperature" not in body for body in sent[-4:])


# ---------------------------------------------------------------- a run at a hub-cache snapshot path


def test_a_snapshot_of_the_8b_model_gets_its_published_row_delta_and_verdict(smoke_model_dir, mirrors, tmp_path):
    """The smoke model placed where the hub cache keeps llm-jp/llm-jp-4-8b-thinking, effort medium, three rounds on
    the full MT-Bench data (its first items, coding questions sampled at temperature 1 so that the rounds differ): its row is the card's 8B
    medium row."""
    snapshot = tmp_path / "hub" / "models--llm-jp--llm-jp-4-8b-thinking" / "snapshots" / "5f0c2e1d9a"
    shutil.copytree(smoke_model_dir, snapshot)
    out = tmp_path / "run"
    mirror = next(iter(mirrors.items()))
    result = cli("run", "--out", str(out), "--set", f"model.path={snapshot}", "--set", "variant=full",
                 "--set", "tasks=[mt_bench_ja]", "--limit", "3", "--set", f"asset_mirrors={{'{mirror[0]}': '{mirror[1]}'}}",
                 "--set", "task_options.mt_bench_ja.generation.category_temperature.coding=1.0")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"] == "llm-jp-4-8b-thinking (reasoning_effort = medium)"
    assert summary["published_row"] == {"model": "llm-jp-4-8b-thinking", "reasoning_effort": "medium",
                                        "matched_by": "the hub-cache snapshot path"}
    assert summary["published_note"] is None
    published = summary["tasks"]["mt_bench_ja"]["published"]
    assert published["value"] == 7.54 and published["delta"] == pytest.approx(
        summary["tasks"]["mt_bench_ja"]["metrics"]["score"]["mean"] - 7.54)
    assert published["verdict"] in ("consistent", "higher", "lower")
    assert "Δ vs published · verdict" in (out / "table.md").read_text()
    compared = cli("compare", str(out))
    assert "| gpt-oss-20b (reasoning_effort = low) | published |" in compared.stdout  # the baselines stay in view


def test_a_run_without_a_card_row_says_why_in_one_sentence(smoke_run):
    out, _ = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    note = ("No published row: the model's identity is unknown (builtin:tiny-harmony is a builtin test model); set "
            "`published: {model: …, reasoning_effort: …}` in the config to compare with a row of the card.")
    assert summary["published_row"] is None and summary["published_note"] == note
    assert f"\n{note}\n" in (out / "table.md").read_text()
