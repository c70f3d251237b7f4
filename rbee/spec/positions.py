"""Parse YAML keeping where every key and value sits, so errors can name FILE:LINE:COL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from rbee.spec.safe_yaml import YamlLimitError, load_limited

PathPart = str | int
Path_ = tuple[PathPart, ...]


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column in the source file."""

    line: int
    col: int


@dataclass
class PositionMap:
    """Source positions of the values (and of the keys) of a parsed YAML document."""

    values: dict[Path_, Mark] = field(default_factory=dict)
    keys: dict[Path_, Mark] = field(default_factory=dict)
    duplicate_keys: list[tuple[Path_, Mark]] = field(default_factory=list)

    def value_of(self, path: Path_) -> Mark:
        """Where the value at ``path`` is, or the nearest enclosing value that exists."""
        for cut in range(len(path), -1, -1):
            mark = self.values.get(path[:cut])
            if mark is not None:
                return mark
        return Mark(1, 1)

    def key_of(self, path: Path_) -> Mark:
        """Where the key of ``path`` is written (falls back to the value position)."""
        return self.keys.get(path) or self.value_of(path)


class YamlSyntaxError(Exception):
    """The file is not valid YAML; ``mark`` says where the parser gave up."""

    def __init__(self, problem: str, mark: Mark) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(node: yaml.Node, path: Path_, positions: PositionMap) -> None:
    positions.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if key in seen:
                positions.duplicate_keys.append((child, _mark(key_node)))
            seen.add(key)
            positions.keys[child] = _mark(key_node)
            _walk(value_node, child, positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), positions)


def _reader_mark(text: str, exc: yaml.reader.ReaderError) -> Mark:
    before = text[: exc.position]
    return Mark(before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)


def load_yaml_with_positions(text: str) -> tuple[Any, PositionMap]:
    """Return the document's data and its position map.

    Raises ``YamlSyntaxError`` on bad YAML, ``YamlLimitError`` (``rbee.spec.safe_yaml``) over a size,
    depth or alias limit, before any value is built.
    """
    try:
        data, node = load_limited(text)
    except YamlLimitError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(problem, where) from exc
    except yaml.reader.ReaderError as exc:
        char = exc.character
        problem = f"the character {chr(char)!r} is not allowed in a spec" if isinstance(char, int) else str(exc)
        raise YamlSyntaxError(problem, _reader_mark(text, exc)) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), Mark(1, 1)) from exc
    positions = PositionMap()
    if node is not None:
        _walk(node, (), positions)
    return data, positions
