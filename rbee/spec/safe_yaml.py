"""A YAML loader with limits: no alias bombs, no deep nesting, no huge documents.

Aliases are not expanded while composing (an alias is the anchored node again), so each node's
*expanded* size and depth are measured once, as it is composed, from its children's; an alias adds
its target's size to the values read so far. A "billion laughs" document is refused after a few
thousand steps, long before any value is built.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
"""Largest spec file read (1 MiB); a real spec is a few KiB."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists, aliases expanded."""
MAX_VALUES = 20_000
"""Most values (scalars, lists, mappings, keys) in the document, aliases expanded; a 500-host spec has ~8000."""


class YamlLimitError(Exception):
    """The document is over a limit; ``mark`` (a ``yaml.Mark`` or None) is where: the node that went over."""

    def __init__(self, problem: str, hint: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.mark = mark


class LimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts values as they are composed (an alias counts what it stands for)
    and measures each node's depth, refusing a document over a limit as soon as it gets there."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._aliases = 0
        self._measures: dict[int, tuple[int, int]] = {}  # id(node) → (values, depth), aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._alias(event)
            return super().compose_node(parent, index)
        self._count(1, event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise YamlLimitError(
                f"nested deeper than {MAX_DEPTH} levels", "a spec is a few levels deep: flatten it", event.start_mark
            )
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._measure(node)
        return node

    def _alias(self, event: yaml.AliasEvent) -> None:
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # PyYAML reports the undefined alias
        if id(target) not in self._measures:
            raise YamlLimitError(
                f"the alias *{event.anchor} refers to a value that contains it",
                "a spec cannot be recursive: write the value out",
                event.start_mark,
            )
        self._aliases += 1
        values, depth = self._measures[id(target)]
        if self._depth + depth > MAX_DEPTH:
            raise YamlLimitError(
                f"nested deeper than {MAX_DEPTH} levels through {self._aliases} YAML alias(es)",
                "a spec is a few levels deep: flatten it",
                event.start_mark,
            )
        self._count(values, event.start_mark)

    def _count(self, values: int, mark: Any) -> None:
        self._values += values
        if self._values <= MAX_VALUES:
            return
        if self._aliases:
            raise YamlLimitError(
                f"YAML aliases expand the document to more than {MAX_VALUES} values "
                f"({self._aliases} aliases so far: an alias bomb?)",
                "write the values out instead of aliasing large blocks",
                mark,
            )
        raise YamlLimitError(f"the document holds more than {MAX_VALUES} values", "trim the spec", mark)

    def _measure(self, node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        measures = [self._measures[id(c)] for c in children]
        values = 1 + sum(m[0] for m in measures)
        depth = 1 + max((m[1] for m in measures), default=0)
        self._measures[id(node)] = (values, depth)


def load_limited(text: str) -> tuple[Any, yaml.Node | None]:
    """The data of a single-document YAML text and its root node; ``YamlLimitError`` over a limit.

    Raises ``yaml.YAMLError`` on bad YAML, as ``yaml.safe_load`` does.
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise YamlLimitError(
            f"the file is {size} bytes, more than the {MAX_BYTES} a spec may have", "a spec is a few KiB", None
        )
    loader = LimitedLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node
