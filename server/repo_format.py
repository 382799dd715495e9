"""The config repository format (v1): parse and validate it into immutable objects.

Layout, below the repository root or ``--path``::

    global.yaml           optional, applies to every app
    apps/<app_id>.yaml    one file per app; the file name is the app id

Each file is a mapping with optional ``defaults``, ``overrides`` and ``rules``
sections (see README). Loading never stops at the first problem: every issue in
every file is collected, with its file, line and reason, and a config set is
produced only when there are none.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from yaml.nodes import Node

from .config_issues import ConfigIssue
from .lmcache_schema import Schema, ValueProblem
from .yaml_source import YamlFile

GLOBAL_FILE = "global.yaml"
APPS_DIR = "apps"
APP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
APP_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"

FILE_SECTIONS = ("defaults", "overrides", "rules", "access")
RULE_KEYS = ("name", "when", "defaults", "overrides")
WHEN_KEYS = ("env", "config")
_GLOB_CHARS = frozenset("*?[")
# ${secret:NAME} in a string value: resolved from the server's secrets at snapshot build.
SECRET_REF_RE = re.compile(r"\$\{secret:([^}]*)\}")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Origin:
    """Where a setting was written: for provenance in answers, render and logs."""

    path: str
    line: int
    rule: str | None = None

    def __str__(self) -> str:
        suffix = f" (rule '{self.rule}')" if self.rule else ""
        return f"{self.path}:{self.line}{suffix}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    key: str
    value: Any  # canonical JSON value, checked against the schema; ${secret:...} unresolved
    override: bool
    origin: Origin
    secrets: tuple[str, ...] = ()  # names of the secrets the value refers to


@dataclasses.dataclass(frozen=True, kw_only=True)
class Condition:
    """One ``when`` entry: an env variable or a current_config field against a pattern."""

    source: str  # "env" or "config"
    name: str
    pattern: Any

    @property
    def is_glob(self) -> bool:
        return isinstance(self.pattern, str) and not _GLOB_CHARS.isdisjoint(self.pattern)

    def matches(self, env: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
        values = env if self.source == "env" else config
        if self.name not in values:
            return False
        actual = values[self.name]
        if isinstance(self.pattern, str):
            text = _as_text(actual)
            if text is None:
                return False
            return fnmatch.fnmatchcase(text, self.pattern) if self.is_glob else text == self.pattern
        if isinstance(self.pattern, bool) or isinstance(actual, bool):
            return actual is self.pattern
        return bool(actual == self.pattern)


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    origin: Origin
    conditions: tuple[Condition, ...]
    settings: tuple[Setting, ...]

    def matches(self, env: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
        return all(condition.matches(env, config) for condition in self.conditions)

    @property
    def env_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions if c.source == "env")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigFile:
    path: str
    settings: tuple[Setting, ...]
    rules: tuple[Rule, ...]
    access: tuple[Condition, ...] = ()  # all must hold for a worker to be answered at all

    def all_settings(self) -> tuple[Setting, ...]:
        return (*self.settings, *(s for rule in self.rules for s in rule.settings))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigSet:
    global_file: ConfigFile | None
    apps: Mapping[str, ConfigFile]


class _FileParser:
    """Parses one YAML file into a ConfigFile, collecting issues instead of raising."""

    def __init__(self, display_path: str, text: str, schema: Schema) -> None:
        self.path = display_path
        self.schema = schema
        self.yaml = YamlFile(display_path, text)

    @property
    def issues(self) -> list[ConfigIssue]:
        return self.yaml.issues

    def parse(self) -> ConfigFile:
        settings: list[Setting] = []
        rules: list[Rule] = []
        access: list[Condition] = []
        root = self.yaml.root
        if root is not None:
            sections: dict[str, Node] = {}
            for key, key_node, value_node in self.yaml.mapping(root, "a config file"):
                if key not in FILE_SECTIONS:
                    self._unknown(key_node, key, FILE_SECTIONS, "section")
                    continue
                sections[key] = value_node
            settings = self._settings(sections, rule=None)
            if "rules" in sections:
                rules = self._rules(sections["rules"])
            if "access" in sections:
                access = self._conditions(sections["access"], "'access'")
        return ConfigFile(
            path=self.path, settings=tuple(settings), rules=tuple(rules), access=tuple(access)
        )

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
                names = _secret_names(value)
                bad = [name for name in names if not SECRET_NAME_RE.match(name)]
                if bad:
                    self.yaml.report(
                        value_node,
                        f"bad secret reference '${{secret:{bad[0]}}}': names are 1-128 "
                        "characters from A-Z a-z 0-9 _ . -",
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
            for key, key_node, value_node in self.yaml.mapping(rule_node, f"rule {index}"):
                if key not in RULE_KEYS:
                    self._unknown(key_node, key, RULE_KEYS, "rule key")
                    continue
                parts[key] = value_node
            if not parts:
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
            conditions = self._conditions(parts["when"], f"'when' of rule '{name}'")
            settings = self._settings(parts, rule=name)
            if "defaults" not in parts and "overrides" not in parts:
                self.yaml.report(
                    rule_node, f"rule '{name}' sets nothing: add defaults or overrides"
                )
            origin = Origin(path=self.path, line=line, rule=name)
            rules.append(
                Rule(
                    name=name, origin=origin, conditions=tuple(conditions), settings=tuple(settings)
                )
            )
        return rules

    def _conditions(self, node: Node, what: str) -> list[Condition]:
        """Conditions of a rule's ``when`` or of a file's ``access`` (same form)."""
        conditions: list[Condition] = []
        written = 0
        for source, key_node, value_node in self.yaml.mapping(node, what):
            if source not in WHEN_KEYS:
                self._unknown(key_node, source, WHEN_KEYS, "condition")
                continue
            for name, name_node, pattern_node in self.yaml.mapping(value_node, f"when.{source}"):
                written += 1
                pattern = self.yaml.value(pattern_node)
                if source == "env":
                    if not isinstance(pattern, str):
                        self.yaml.report(
                            pattern_node,
                            f"env condition '{name}' must be a string or glob (environment "
                            f"values are strings), got {pattern!r}; quote it",
                        )
                        continue
                else:
                    if name not in self.schema.fields:
                        self.yaml.report(name_node, self.schema.unknown_key_message(name))
                        continue
                    if not isinstance(pattern, str):
                        try:
                            pattern = self.schema.check_value(name, pattern)
                        except ValueProblem as problem:
                            self.yaml.report(pattern_node, str(problem))
                            continue
                conditions.append(Condition(source=source, name=name, pattern=pattern))
        if not written:
            self.yaml.report(node, f"{what} is empty")
        return conditions


def _secret_names(value: Any) -> tuple[str, ...]:
    """Names of the ${secret:...} references anywhere in a (nested) value."""
    found: list[str] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            found.extend(SECRET_REF_RE.findall(current))
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            stack.extend(current.values())
    return tuple(dict.fromkeys(found))


def resolve_secrets(value: Any, secrets: Mapping[str, str]) -> Any:
    """``value`` with every ${secret:NAME} replaced by its secret (all names must exist)."""
    if isinstance(value, str):
        return SECRET_REF_RE.sub(lambda match: secrets[match.group(1)], value)
    if isinstance(value, list):
        return [resolve_secrets(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: resolve_secrets(item, secrets) for key, item in value.items()}
    return value


def _is_yaml(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepoLimits:
    """Bounds on what one commit may make the server parse (hostile or runaway repos)."""

    max_file_bytes: int = 1024 * 1024
    max_files: int = 50_000
    max_total_bytes: int = 256 * 1024 * 1024


def _limit_issues(
    files: Mapping[str, bytes], limits: RepoLimits, display_prefix: str
) -> list[ConfigIssue]:
    def issue(path: str, message: str) -> ConfigIssue:
        return ConfigIssue(path=display_prefix + path, line=1, column=1, message=message)

    if len(files) > limits.max_files:
        return [issue(".", f"{len(files)} config files; the limit is {limits.max_files}")]
    total = sum(len(data) for data in files.values())
    if total > limits.max_total_bytes:
        return [
            issue(".", f"config files total {total} bytes; the limit is {limits.max_total_bytes}")
        ]
    return [
        issue(path, f"file is {len(data)} bytes; the limit is {limits.max_file_bytes}")
        for path, data in sorted(files.items())
        if len(data) > limits.max_file_bytes
    ]


def load_config_set(
    files: Mapping[str, bytes],
    schema: Schema,
    *,
    display_prefix: str = "",
    limits: RepoLimits = RepoLimits(),
) -> tuple[ConfigSet | None, list[ConfigIssue]]:
    """Parse and validate the files of one commit.

    ``files`` maps paths relative to the config root to their bytes; issues name
    paths with ``display_prefix`` in front so they match the repository.
    Returns the config set, or None with every issue found.
    """
    limit_issues = _limit_issues(files, limits, display_prefix)
    if limit_issues:
        return None, limit_issues
    issues: list[ConfigIssue] = []
    global_file: ConfigFile | None = None
    apps: dict[str, ConfigFile] = {}

    def parse(relative: str) -> ConfigFile | None:
        display = display_prefix + relative
        try:
            text = files[relative].decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(ConfigIssue(path=display, line=1, column=1, message=f"not UTF-8: {exc}"))
            return None
        parser = _FileParser(display, text, schema)
        try:
            parsed = parser.parse()
        except Exception as exc:  # a loader bug must reject the commit, not crash the sync
            parser.issues.append(
                ConfigIssue(path=display, line=1, column=1, message=f"cannot load: {exc!r}")
            )
            parsed = None
        issues.extend(parser.issues)
        return parsed

    for relative in sorted(files):
        display = display_prefix + relative
        if relative == GLOBAL_FILE:
            global_file = parse(relative)
        elif relative == "global.yml":
            issues.append(
                ConfigIssue(path=display, line=1, column=1, message="rename to global.yaml")
            )
        elif relative.startswith(APPS_DIR + "/"):
            name = relative[len(APPS_DIR) + 1 :]
            app_id, dot, extension = name.rpartition(".")
            if "/" in name:
                message = "apps/ holds files only: apps/<app_id>.yaml (no subdirectories)"
            elif not dot or extension not in {"yaml", "yml"}:
                if not _is_yaml(name) and name.startswith((".", "README")):
                    continue  # README.md, .gitkeep and the like are fine beside app files
                message = f"app files are named apps/<app_id>.yaml; '{name}' is not"
            elif extension == "yml":
                message = f"rename to apps/{app_id}.yaml (the extension must be .yaml)"
            elif not APP_ID_RE.match(app_id):
                message = f"bad app id '{app_id}' in the file name: app ids are {APP_ID_RULE}"
            else:
                parsed = parse(relative)
                if parsed is not None:
                    apps[app_id] = parsed
                continue
            issues.append(ConfigIssue(path=display, line=1, column=1, message=message))

    issues.sort()
    if issues:
        return None, issues
    return ConfigSet(global_file=global_file, apps=apps), []


def config_paths(relative: str) -> bool:
    """Whether a path (relative to the config root) is part of the config set."""
    return relative in {GLOBAL_FILE, "global.yml"} or relative.startswith(APPS_DIR + "/")
