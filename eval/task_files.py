"""Where benchmark files are found: the folders listed in `LLMJP_EVAL_TASKS` (a path list, like `PATH`), then the
bundled `eval/resources/tasks`.

A user's folders add benchmarks to the bundled ones; they never replace one. A task name must be unique across all
folders (it keys results, the published table and comparisons between runs), so a second file of the same name is
refused: a changed bundled benchmark is a new name, or the bundled one changed through a run config's
`task_options`. Asset tables (`_assets.yaml`) merge instead, the first folder's entry of a name winning: an entry
pins its file by sha256, so another address for it (a mirror server) cannot change the content.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UserError
from .yaml_limits import read_yaml

ENV = "LLMJP_EVAL_TASKS"
BUNDLED_TASKS = Path(__file__).resolve().parent / "resources" / "tasks"
ASSET_TABLE = "_assets.yaml"


def task_dirs() -> list[Path]:
    """The folders searched, in order: those of `LLMJP_EVAL_TASKS`, then the bundled one."""
    folders = [Path(entry).expanduser().resolve() for entry in os.environ.get(ENV, "").split(os.pathsep) if entry]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{ENV}: {folder} is not a folder; list folders of task YAML files, separated by "
                            f"{os.pathsep!r}")
    return list(dict.fromkeys([*folders, BUNDLED_TASKS]))  # each folder once, at its first place


def task_files() -> dict[str, Path]:
    """Task name → its YAML file (files whose name starts with `_` are not tasks)."""
    found: dict[str, Path] = {}
    for folder in task_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if path.name.startswith("_"):
                continue
            if path.stem in found:
                raise UserError(f"{path}: a task named {path.stem!r} exists already ({found[path.stem]}); task names "
                                "are unique: give this file (and its name:) another name, or change the other task "
                                "through task_options in a run config")
            found[path.stem] = path
    return found


def task_names() -> list[str]:
    return sorted(task_files())


def task_file(name: str) -> Path:
    files = task_files()
    if name not in files:
        raise UserError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(files))}")
    return files[name]


def asset_table() -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(bases, assets) of every folder's `_assets.yaml`, the first folder's entry of a name winning."""
    tables = [folder / ASSET_TABLE for folder in task_dirs()]
    return _merged_tables(tuple((path, path.stat().st_mtime_ns) for path in tables if path.is_file()))


@lru_cache(maxsize=8)
def _merged_tables(tables: tuple[tuple[Path, int], ...]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    bases: dict[str, str] = {}
    assets: dict[str, dict[str, Any]] = {}
    for path, _ in reversed(tables):
        data = read_yaml(path, "asset table") or {}
        if not isinstance(data, dict) or not all(isinstance(data.get(k) or {}, dict) for k in ("bases", "assets")):
            raise UserError(f"{path}: an asset table is a mapping with 'bases' (name: address) and 'assets' "
                            "(name: {base, path, sha256})")
        bases.update(data.get("bases") or {})
        assets.update(data.get("assets") or {})
    return bases, assets
