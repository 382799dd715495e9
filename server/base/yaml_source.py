"""YAML reading that keeps line numbers and refuses what PyYAML lets through silently.

PyYAML's ``safe_load`` keeps the last of two duplicate keys and forgets where
each value came from. Config authors need ``file:line`` for every error, so
files are composed into nodes (which carry marks), checked for duplicate keys
and alias blow-ups, and only then turned into Python values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .issues import ConfigIssue, quoted

_STANDARD_TAGS = frozenset(
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge", "timestamp")
)
# libyaml's composer when PyYAML was built with it: the same nodes and marks, ~10x faster,
# which is what keeps a cold build of 10,000 app files within seconds. A file it refuses
# is composed again by the pure-Python composer, whose error messages are the clearer.
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _compose_all(text: str) -> list[Node]:
    """The documents of a file that are not empty."""
    if _FAST_LOADER is not None:
        try:
            return [doc for doc in yaml.compose_all(text, Loader=_FAST_LOADER) if doc is not None]
        except yaml.YAMLError:
            pass
    return [doc for doc in yaml.compose_all(text, Loader=yaml.SafeLoader) if doc is not None]


# Aliases can make a small file expand enormously ("billion laughs"); cap the walk.
MAX_NODES_PER_FILE = 100_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Where:
    """A position in a file: 1-based line and column."""

    path: str
    line: int
    column: int

    def issue(self, message: str) -> ConfigIssue:
        return ConfigIssue(path=self.path, line=self.line, column=self.column, message=message)


def where(path: str, node: Node) -> Where:
    mark = node.start_mark
    return Where(path=path, line=mark.line + 1, column=mark.column + 1)


class YamlFile:
    """One parsed YAML file: its root node, plus helpers that report into ``issues``."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.issues: list[ConfigIssue] = []
        self.root: Node | None = None
        self._constructor = yaml.SafeLoader("")
        # Only its constructor is used. A new loader's parser state is a bound method of
        # itself: a reference cycle that would leave it, and every node it constructed, to
        # the cycle collector (a build made some 80 such objects per file).
        self._constructor.dispose()
        try:
            documents = _compose_all(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            reason = " ".join(part for part in (exc.context, exc.problem) if part)
            context = exc.context_mark
            if context is not None and mark is not None and context.line != mark.line:
                reason += f" (the construct began on line {context.line + 1})"
            self._add(line, column, f"YAML syntax error: {reason}")
            return
        except yaml.YAMLError as exc:
            self._add(1, 1, f"YAML error: {exc}")
            return
        if len(documents) > 1:
            second = where(path, documents[1])
            self._add(second.line, second.column, "only one YAML document per file is allowed")
            return
        if documents:
            self.root = documents[0]
            self._check_tree(self.root)

    def _add(self, line: int, column: int, message: str) -> None:
        self.issues.append(ConfigIssue(path=self.path, line=line, column=column, message=message))

    def report(self, node: Node, message: str) -> None:
        self.issues.append(where(self.path, node).issue(message))

    def _check_tree(self, root: Node) -> None:
        """Walk every node once: duplicate keys anywhere, and the node budget."""
        visited = 0
        checked: set[int] = set()
        stack: list[Node] = [root]
        while stack:
            node = stack.pop()
            visited += 1
            if visited > MAX_NODES_PER_FILE:
                self.report(
                    root,
                    f"file expands to more than {MAX_NODES_PER_FILE} YAML nodes "
                    "(aliases nested too deep?)",
                )
                self.root = None
                return
            first_visit = id(node) not in checked
            checked.add(id(node))
            if first_visit and node.tag not in _STANDARD_TAGS:
                self.report(node, f"YAML tag {node.tag} is not allowed in config files")
                self.root = None
            if isinstance(node, MappingNode):
                seen: dict[str, int] = {}
                for key_node, value_node in node.value:
                    if (
                        first_visit
                        and isinstance(key_node, ScalarNode)
                        and key_node.tag != "tag:yaml.org,2002:merge"
                    ):
                        key = key_node.value
                        if key in seen:
                            self.report(
                                key_node,
                                f"duplicate key '{key}' (first set on line {seen[key]}); "
                                "YAML would silently keep only the last one",
                            )
                        else:
                            seen[key] = key_node.start_mark.line + 1
                    stack.append(value_node)
            elif isinstance(node, SequenceNode):
                stack.extend(node.value)

    def value(self, node: Node) -> Any:
        """The Python value of a node (after the tree check, so it is bounded)."""
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: Node, what: str) -> Iterator[tuple[str, Node, Node]]:
        """Yield (key, key node, value node) of a mapping node; report anything else."""
        if not isinstance(node, MappingNode):
            self.report(node, f"{what} must be a mapping")
            return
        self._constructor.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.value(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.report(key_node, f"keys of {what} must be strings, got {quoted(key)}")
                continue
            yield key, key_node, value_node

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.report(node, f"{what} must be a list")
            return []
        return list(node.value)
