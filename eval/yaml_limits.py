"""YAML read with limits: every YAML the harness reads (configs, `--set` values, task files, prompt files) goes
through `load`, which refuses documents nested deeper than `MAX_DEPTH` (PyYAML's composer recurses and would die
with a RecursionError) and documents whose aliases expand to more than `MAX_VALUES` values (a "billion laughs"
document is small on disk but explodes in every later copy, dump or validation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import UserError

MAX_DEPTH = 64
MAX_VALUES = 200_000


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document over a limit; `problem` and `problem_mark` say which and where, as for a syntax error."""


class _LimitedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimitError(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {})
        return node


def _expanded_size(node: Node, sizes: dict[int, int | None]) -> int:
    """How many values the node stands for once every alias is expanded (a shared node counts at each use)."""
    if id(node) in sizes:
        size = sizes[id(node)]
        if size is None:
            raise YAMLLimitError(problem="an alias refers to a node that contains it", problem_mark=node.start_mark)
        return size
    sizes[id(node)] = None
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    if size > MAX_VALUES:
        raise YAMLLimitError(problem=f"aliases expand to more than {MAX_VALUES:,} values (a 'billion laughs' document?)",
                             problem_mark=node.start_mark)
    sizes[id(node)] = size
    return size


def load(text: str) -> Any:
    """`yaml.safe_load` with the limits above; raises `yaml.YAMLError` (a `YAMLLimitError` for a limit)."""
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str = "config") -> Any:
    """A YAML file read through `load`; a missing, unreadable, malformed or refused file is a one-line `UserError`
    naming the file (and the line)."""
    if not path.exists():
        raise UserError(f"{path}: {what} file not found")
    if not path.is_file():
        raise UserError(f"{path}: {what} path is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read {what} file ({e})") from None
    try:
        return load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        kind = "refused" if isinstance(e, YAMLLimitError) else "syntax error"
        raise UserError(f"{path}: YAML {kind} at {where}: {problem}") from None
