"""``lmcache_versions`` in global.yaml: the LMCache versions the fleet runs.

The versions decide the schema every file of the commit is checked against,
so they are read from global.yaml before any file is parsed; the parser then
skips the key there (and refuses it anywhere else). Only YAML that composes
cleanly is read here: a broken global.yaml is reported by the parser, once.
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode

from ..base.issues import ConfigIssue, quoted
from ..base.yaml_source import YamlFile
from .schema import version_problem

VERSIONS_KEY = "lmcache_versions"


def _versions_node(source: YamlFile) -> tuple[Node, Node] | None:
    root = source.root
    if source.issues or not isinstance(root, MappingNode):
        return None
    for key_node, value_node in root.value:
        if isinstance(key_node, ScalarNode) and key_node.value == VERSIONS_KEY:
            return key_node, value_node
    return None


def declared_versions(display: str, data: bytes) -> tuple[tuple[str, ...], list[ConfigIssue]]:
    """The versions global.yaml declares (those that are valid), and the issues of the key."""
    if VERSIONS_KEY.encode() not in data:
        return (), []  # the common case, without composing the file twice
    try:
        source = YamlFile(display, data.decode("utf-8"))
    except UnicodeDecodeError:
        return (), []  # the loader reports it
    found = _versions_node(source)
    if found is None:
        return (), []
    key_node, node = found
    items = source.sequence(node, f"'{VERSIONS_KEY}' (a list of LMCache versions)")
    if not items and not source.issues:
        source.report(
            key_node,
            f"'{VERSIONS_KEY}' is empty: list the LMCache versions the fleet runs, or leave "
            "the key out",
        )
    versions: list[str] = []
    for item in items:
        value = source.value(item)
        if not isinstance(value, str):
            source.report(
                item,
                f'an LMCache version must be a string such as "0.5.6", got {quoted(value)}; '
                "quote it",
            )
            continue
        if (problem := version_problem(value.strip())) is not None:
            source.report(item, f"{VERSIONS_KEY}: {problem}")
            continue
        if value.strip() in versions:
            source.report(item, f"{VERSIONS_KEY}: '{value}' is listed twice")
            continue
        versions.append(value.strip())
    return tuple(versions), source.issues
