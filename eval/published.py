"""Which published row (`eval/resources/model_card.csv`) a run reproduces, decided on purpose and never from `label`:

1. the config's `published:` — `{model, reasoning_effort}` names a row, `none` compares with none;
2. otherwise the model's identity: a hub id (`llm-jp/llm-jp-4-8b-thinking`), a hub-cache snapshot path
   (`…/models--llm-jp--llm-jp-4-8b-thinking/snapshots/<hash>`), a local folder's `config.json` `_name_or_path`, the
   model name an OpenAI-compatible server is asked for; with the configured reasoning effort.

`card_row(config)` is the one mapping from a config to its row; `summary.py`, the `configs` command and the tests of
the bundled configs use it. It reads a config as plain data (a `RunConfig` or the snapshot a run stores), and looks at
the file system only for a local model folder's `config.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig
from .results import MatchedRow

_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/[^/]+/?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SET_IT = "set `published: {model: …, reasoning_effort: …}` in the config to compare with a row of the card"


@dataclass(frozen=True)
class CardKey:
    """The published row a config asks for: the card's `model` and `reasoning_effort` cells, and how they were found."""

    model: str | None  # None: the model's identity is unknown
    reasoning_effort: str | None
    source: str

    def describe(self) -> str:
        effort = f"reasoning_effort {self.reasoning_effort}" if self.reasoning_effort else "no reasoning_effort"
        return f"model {self.model!r} with {effort} ({self.source})"


@dataclass(frozen=True)
class CardMatch:
    row: dict[Hashable, Any] | None  # the published row (a record of the table), None when there is none to compare with
    key: CardKey | None  # None: `published: none`
    note: str | None  # one sentence when no row matched: why, and the key to set

    @property
    def matched(self) -> MatchedRow | None:
        """The row as the summary names it (`published_row`), None when there is none."""
        if self.row is None or self.key is None or self.key.model is None:
            return None
        return MatchedRow(model=self.key.model, reasoning_effort=self.key.reasoning_effort, matched_by=self.key.source)


def plain(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    return config.model_dump(mode="json") if isinstance(config, RunConfig) else config


def answering_model(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The config of the model that wrote the answers (a replayed run names the model it replays)."""
    model = plain(config)["model"]
    return model.get("source_model") or model


def reasoning_effort(model: dict[str, Any]) -> str | None:
    effort = model.get("reasoning_effort") or (model.get("chat_template_kwargs") or {}).get("reasoning_effort")
    return None if effort is None else str(effort)


def model_identity(model: dict[str, Any]) -> tuple[str | None, str]:
    """The model's name as the card writes it (the hub id without its organisation), and where it was read."""
    path = str(model.get("path") or "")
    backend = model.get("backend")
    if backend == "replay":
        return None, "a replay file names no model"
    if path.startswith("builtin:"):
        return None, f"{path} is a builtin test model"
    if snapshot := _SNAPSHOT.search(path.rstrip("/") + "/"):
        return snapshot.group("name"), "the hub-cache snapshot path"
    if backend == "openai":
        return path.rstrip("/").rsplit("/", 1)[-1], "the served model name"
    folder = Path(path).expanduser()
    if folder.is_dir():
        return _from_config_json(folder)
    if _HUB_ID.match(path):
        return path.rsplit("/", 1)[-1], "the hub id"
    return None, f"{path!r} is neither a hub id nor a model folder"


def _from_config_json(folder: Path) -> tuple[str | None, str]:
    try:
        name_or_path = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        name_or_path = None
    if isinstance(name_or_path, str) and name_or_path:
        if snapshot := _SNAPSHOT.search(name_or_path.rstrip("/") + "/"):
            return snapshot.group("name"), "config.json's _name_or_path"
        if _HUB_ID.match(name_or_path):
            return name_or_path.rsplit("/", 1)[-1], "config.json's _name_or_path"
    return None, f"the local folder {folder} has no config.json naming a hub id (_name_or_path)"


def card_key(config: RunConfig | dict[str, Any]) -> CardKey | None:
    """The row the config asks for; None when it says `published: none`."""
    chosen = plain(config).get("published")
    if chosen == "none":
        return None
    if isinstance(chosen, dict):
        return CardKey(chosen["model"], chosen.get("reasoning_effort"), "published: in the config")
    model = answering_model(config)
    name, source = model_identity(model)
    return CardKey(name, reasoning_effort(model), source)


def card_row(config: RunConfig | dict[str, Any], table: pd.DataFrame | None = None) -> CardMatch:
    """The published row the config reproduces, or the sentence that says why there is none."""
    from .summary import load_published

    key = card_key(config)
    if key is None:
        return CardMatch(None, None, "No published row: the config says `published: none`.")
    if key.model is None:
        return CardMatch(None, key, f"No published row: the model's identity is unknown ({key.source}); {SET_IT}.")
    table = load_published() if table is None else table
    match = table[(table["model"] == key.model) & (table["reasoning_effort"] == (key.reasoning_effort or ""))]
    if match.empty:
        return CardMatch(None, key, f"No published row for {key.describe()}; {SET_IT}, or `published: none`.")
    return CardMatch(match.iloc[0].to_dict(), key, None)
