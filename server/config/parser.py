"""One config file's text into a :class:`~server.config.model.ConfigFile`, with every issue.

Parsing never stops at the first problem and never raises: each problem is
collected with its file, line and column, so an author sees them all at once.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Mapping

from yaml.nodes import Node

from ..base.errors import ValueProblem
from ..base.issues import ConfigIssue, quoted
from ..base.yaml_source import YamlFile, where
from .model import Condition, ConfigFile, Include, Origin, Rule, Setting
from .names import include_path_problem
from .rollout import DEFAULT_IDENTITY, Rollout
from .schema import Schema
from .secret_refs import SECRET_NAME_RE, SECRET_NAME_RULE, secret_names
from .versions import VERSIONS_KEY

FILE_SECTIONS = ("include", "defaults", "overrides", "rules", "access")
RULE_KEYS = ("name", "when", "defaults", "overrides")
WHEN_KEYS = ("env", "config", "percent", "by")
ACCESS_KEYS = ("env", "config")


class FileParser:
    """Parses one YAML file into a ConfigFile, collecting issues instead of raising."""

    def __init__(
        self, display_path: str, text: str, schema: Schema, *, global_file: bool = False
    ) -> None:
        self.path = display_path
        self.schema = schema
        self.global_file = global_file
        self.yaml = YamlFile(display_path, text)

    @property
    def issues(self) -> list[ConfigIssue]:
        return self.yaml.issues

    def parse(self) -> ConfigFile:
        settings: list[Setting] = []
        rules: list[Rule] = []
        includes: list[Include] = []
        access: list[Condition] = []
        root = self.yaml.root
        if root is not None:
            sections: dict[str, Node] = {}
            for key, key_node, value_node in self.yaml.mapping(root, "a config file"):
                if key == VERSIONS_KEY:
                    if not self.global_file:
                        self.yaml.report(
                            key_node,
                            f"'{VERSIONS_KEY}' belongs in global.yaml: it declares the LMCache "
                            "versions of the whole fleet",
                        )
                    continue
                if key not in FILE_SECTIONS:
                    # (lmcache_versions was read before parsing: see ``versions``.)
                    allowed = (*FILE_SECTIONS, VERSIONS_KEY) if self.global_file else FILE_SECTIONS
                    self._unknown(key_node, key, allowed, "section")
                    continue
                sections[key] = value_node
            if "include" in sections:
                includes = self._includes(sections["include"])
            settings = self._settings(sections, rule=None)
            if "rules" in sections:
                rules = self._rules(sections["rules"])
            if "access" in sections:
                access, _ = self._conditions(sections["access"], "'access'")
        return ConfigFile(
            path=self.path,
            settings=tuple(settings),
            rules=tuple(rules),
            includes=tuple(includes),
            access=tuple(access),
        )

    def _includes(self, node: Node) -> list[Include]:
        includes: list[Include] = []
        first_line: dict[str, int] = {}
        for item in self.yaml.sequence(node, "include (a list of fragment paths)"):
            written = self.yaml.value(item)
            if not isinstance(written, str) or not written.strip():
                self.yaml.report(item, f"an include must be a path string, got {quoted(written)}")
                continue
            problem = include_path_problem(written)
            if problem:
                self.yaml.report(item, f"cannot include '{written}': {problem}")
                continue
            path = posixpath.normpath(written)
            spot = where(self.path, item)
            if path in first_line:
                self.yaml.report(
                    item, f"'{written}' is already included on line {first_line[path]}"
                )
                continue
            first_line[path] = spot.line
            includes.append(
                Include(path=path, written_in=self.path, line=spot.line, column=spot.column)
            )
        return includes

    def _unknown(self, node: Node, key: str, allowed: tuple[str, ...], what: str) -> None:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        self.yaml.report(node, f"unknown {what} '{key}'; {hint}allowed: {', '.join(allowed)}")

    def _settings(self, sections: Mapping[str, Node], rule: str | None) -> list[Setting]:
        found: dict[str, tuple[bool, int]] = {}
        settings: list[Setting] = []
        for section, override in (("defaults", False), ("overrides", True)):
            if section not in sections:
                continue
            for key, key_node, value_node in self.yaml.mapping(sections[section], section):
                line = key_node.start_mark.line + 1
                if key not in self.schema.fields:
                    self.yaml.report(key_node, self.schema.unknown_key_message(key))
                    continue
                if key in found and found[key][0] != override:
                    self.yaml.report(
                        key_node,
                        f"'{key}' is in both defaults and overrides (other on line "
                        f"{found[key][1]}); keep it in one",
                    )
                    continue
                found[key] = (override, line)
                try:
                    value = self.schema.check_value(key, self.yaml.value(value_node))
                except ValueProblem as problem:
                    self.yaml.report(value_node, str(problem))
                    continue
                names = secret_names(value)
                bad = [name for name in names if not SECRET_NAME_RE.match(name)]
                if bad:
                    self.yaml.report(
                        value_node,
                        f"bad secret reference '${{secret:{bad[0]}}}': {SECRET_NAME_RULE}",
                    )
                    continue
                origin = Origin(path=self.path, line=line, rule=rule)
                settings.append(
                    Setting(key=key, value=value, override=override, origin=origin, secrets=names)
                )
        return settings

    def _rules(self, node: Node) -> list[Rule]:
        rules: list[Rule] = []
        names: dict[str, int] = {}
        for index, rule_node in enumerate(self.yaml.sequence(node, "rules"), start=1):
            parts: dict[str, Node] = {}
            reported = len(self.yaml.issues)
            for key, key_node, value_node in self.yaml.mapping(rule_node, f"rule {index}"):
                if key not in RULE_KEYS:
                    self._unknown(key_node, key, RULE_KEYS, "rule key")
                    continue
                parts[key] = value_node
            if not parts:
                if len(self.yaml.issues) == reported:  # not already said (not a mapping, typos)
                    self.yaml.report(
                        rule_node, f"rule {index} is empty: give it a 'when' and what it sets"
                    )
                continue
            name = f"rule {index}"
            if "name" in parts:
                raw_name = self.yaml.value(parts["name"])
                if isinstance(raw_name, str) and raw_name.strip():
                    name = raw_name
                else:
                    self.yaml.report(parts["name"], "a rule name must be a non-empty string")
            line = rule_node.start_mark.line + 1
            if name in names:
                self.yaml.report(
                    rule_node, f"duplicate rule name '{name}' (first on line {names[name]})"
                )
            names[name] = line
            if "when" not in parts:
                self.yaml.report(
                    rule_node,
                    f"rule '{name}' has no 'when'; put unconditional settings in the file's "
                    "own defaults/overrides",
                )
                continue
            conditions, rollout = self._conditions(parts["when"], f"'when' of rule '{name}'", name)
            settings = self._settings(parts, rule=name)
            if "defaults" not in parts and "overrides" not in parts:
                self.yaml.report(
                    rule_node, f"rule '{name}' sets nothing: add defaults or overrides"
                )
            origin = Origin(path=self.path, line=line, rule=name)
            rules.append(
                Rule(
                    name=name,
                    origin=origin,
                    conditions=tuple(conditions),
                    settings=tuple(settings),
                    rollout=rollout,
                )
            )
        return rules

    def _rollout(self, parts: Mapping[str, tuple[Node, Node]], rule: str) -> Rollout | None:
        """``percent: N`` and optional ``by: FIELD | config:FIELD | env:NAME``."""
        if "percent" not in parts:
            if "by" in parts:
                self.yaml.report(parts["by"][0], f"'by' of rule '{rule}' needs a 'percent'")
            return None
        percent_node = parts["percent"][1]
        percent = self.yaml.value(percent_node)
        if (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or not 0 <= percent <= 100
        ):
            self.yaml.report(
                percent_node, f"percent must be a number from 0 to 100, got {quoted(percent)}"
            )
            return None
        source, name = "config", DEFAULT_IDENTITY
        if "by" in parts:
            by_node = parts["by"][1]
            by = self.yaml.value(by_node)
            if not isinstance(by, str) or not by.strip():
                self.yaml.report(
                    by_node,
                    f"'by' must name the worker identity: a current_config field such as "
                    f"{DEFAULT_IDENTITY}, or env:NAME for an environment variable; "
                    f"got {quoted(by)}",
                )
                return None
            prefix, colon, rest = by.partition(":")
            if colon and prefix in {"env", "config"} and rest:
                source, name = prefix, rest
            elif colon:
                self.yaml.report(
                    by_node,
                    f"'by: {by}' is not understood: write env:NAME or config:FIELD (or FIELD)",
                )
                return None
            else:
                name = by
            if source == "config" and name not in self.schema.fields:
                self.yaml.report(by_node, self.schema.unknown_key_message(name))
                return None
        return Rollout(percent=float(percent), source=source, name=name)

    def _conditions(
        self, node: Node, what: str, rule: str | None = None
    ) -> tuple[list[Condition], Rollout | None]:
        """Conditions of a rule's ``when`` (with a rollout) or of a file's ``access``."""
        conditions: list[Condition] = []
        written = 0
        rollout_parts: dict[str, tuple[Node, Node]] = {}
        allowed = WHEN_KEYS if rule is not None else ACCESS_KEYS
        for source, key_node, value_node in self.yaml.mapping(node, what):
            if source not in allowed:
                self._unknown(key_node, source, allowed, "condition")
                continue
            if source in {"percent", "by"}:
                rollout_parts[source] = (key_node, value_node)
                written += source == "percent"
                continue
            for name, name_node, pattern_node in self.yaml.mapping(value_node, f"when.{source}"):
                written += 1
                pattern = self.yaml.value(pattern_node)
                if source == "env":
                    if not isinstance(pattern, str):
                        self.yaml.report(
                            pattern_node,
                            f"env condition '{name}' must be a string or glob (environment "
                            f"values are strings), got {quoted(pattern)}; quote it",
                        )
                        continue
                else:
                    if name not in self.schema.fields:
                        self.yaml.report(name_node, self.schema.unknown_key_message(name))
                        continue
                    if not isinstance(pattern, str):
                        try:
                            # A condition matches what a worker sends: its type, not a range.
                            pattern = self.schema.check_value(name, pattern, limits=False)
                        except ValueProblem as problem:
                            self.yaml.report(pattern_node, str(problem))
                            continue
                conditions.append(Condition(source=source, name=name, pattern=pattern))
        rollout = self._rollout(rollout_parts, rule) if rule is not None else None
        if not written:
            self.yaml.report(node, f"{what} is empty")
        return conditions, rollout


def parse_file(
    display: str, text: str, schema: Schema, *, global_file: bool = False
) -> tuple[ConfigFile | None, list[ConfigIssue]]:
    """One file's ConfigFile and issues; never raises, so a file cannot end a sync."""
    try:
        parser = FileParser(display, text, schema, global_file=global_file)
        return parser.parse(), parser.issues
    except RecursionError:
        # PyYAML recurses per nesting level: thousands of [ or { exhaust the stack.
        message = "YAML nested too deeply"
    except Exception as exc:  # a loader bug must reject the commit, not crash the sync
        message = f"cannot load: {type(exc).__name__}"
    return None, [ConfigIssue(path=display, line=1, column=1, message=message)]
