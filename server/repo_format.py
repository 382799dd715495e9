"""The config repository format (v1): parse and validate it into immutable objects.

Layout, below the repository root or ``--path``::

    global.yaml           optional, applies to every app
    apps/<app_id>.yaml    one file per app; the file name is the app id

Each file is a mapping with optional ``include``, ``defaults``, ``overrides`` and
``rules`` sections (see README). ``include`` names fragment files (paths relative
to the config root, e.g. ``profiles/h100.yaml``) applied before the file's own
sections. Loading never stops at the first problem: every issue in every file is
collected, with its file, line and reason, and a config set is produced only
when there are none.

Files come from a :class:`ConfigSource` (a commit tree, a directory, or memory);
the server and the authoring commands load through the same
:func:`load_config_set`, so they agree on every commit.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from yaml.nodes import Node

from .config_issues import ConfigIssue
from .lmcache_schema import Schema, ValueProblem
from .rollout import DEFAULT_IDENTITY, Rollout
from .yaml_source import YamlFile, where

if TYPE_CHECKING:
    from .parse_memo import ParseMemo

GLOBAL_FILE = "global.yaml"
APPS_DIR = "apps"
APP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
APP_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"

FILE_SECTIONS = ("include", "defaults", "overrides", "rules", "access")
RULE_KEYS = ("name", "when", "defaults", "overrides")
WHEN_KEYS = ("env", "config", "percent", "by")
ACCESS_KEYS = ("env", "config")
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
    rollout: Rollout | None = None

    def matches(
        self, env: Mapping[str, Any], config: Mapping[str, Any], app_id: str | None = None
    ) -> bool:
        """All conditions hold, and the worker is in the rollout when there is one."""
        if not all(condition.matches(env, config) for condition in self.conditions):
            return False
        return self.rollout is None or self.rollout.includes(
            app_id=app_id, rule=self.name, env=env, config=config
        )

    @property
    def env_names(self) -> tuple[str, ...]:
        names = [c.name for c in self.conditions if c.source == "env"]
        if self.rollout is not None and self.rollout.source == "env":
            names.append(self.rollout.name)
        return tuple(names)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Include:
    """One ``include:`` entry: the fragment's path relative to the config root, and where."""

    path: str
    written_in: str  # display path of the including file
    line: int
    column: int

    def issue(self, message: str) -> ConfigIssue:
        return ConfigIssue(
            path=self.written_in, line=self.line, column=self.column, message=message
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigFile:
    path: str
    settings: tuple[Setting, ...]
    rules: tuple[Rule, ...]
    includes: tuple[Include, ...] = ()
    access: tuple[Condition, ...] = ()  # all must hold for a worker to be answered at all

    def all_settings(self) -> tuple[Setting, ...]:
        return (*self.settings, *(s for rule in self.rules for s in rule.settings))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigSet:
    global_file: ConfigFile | None
    apps: Mapping[str, ConfigFile]
    fragments: Mapping[str, ConfigFile] = dataclasses.field(default_factory=dict)

    def layers(self, app_id: str | None) -> tuple[ConfigFile, ...]:
        """The files that apply to an app, in order: global.yaml's chain, then the app's.

        Each file comes after the fragments it includes (recursively). A fragment
        is applied once per app, where it is first reached, so a fragment that
        global.yaml already includes is not applied a second time by an app file.
        """
        ordered: list[ConfigFile] = []
        seen: set[str] = set()

        def expand(config_file: ConfigFile) -> None:
            for include in config_file.includes:
                if include.path in seen or include.path not in self.fragments:
                    continue
                seen.add(include.path)
                expand(self.fragments[include.path])
            ordered.append(config_file)

        if self.global_file is not None:
            expand(self.global_file)
        app_file = self.apps.get(app_id) if app_id else None
        if app_file is not None:
            expand(app_file)
        return tuple(ordered)


class SourceProblem(Exception):
    """A file that a source cannot hand over: missing, a symbolic link, a directory."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigSource(Protocol):
    """Where one config set's files are read from: a commit tree, a directory, or memory."""

    def selected_paths(self) -> list[str]:
        """Paths (relative to the config root) of global.yaml/global.yml and all below apps/."""
        ...

    def size(self, relative: str) -> int:
        """The size of one file in bytes, found without reading it; raises SourceProblem."""
        ...

    def read(self, relative: str) -> bytes:
        """The bytes of one file; raises SourceProblem when it cannot be read."""
        ...


class MemorySource:
    """Files held in a mapping of relative path to bytes (tests, and tools that have them)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    def selected_paths(self) -> list[str]:
        return sorted(path for path in self._files if config_paths(path))

    def size(self, relative: str) -> int:
        return len(self.read(relative))

    def read(self, relative: str) -> bytes:
        if relative not in self._files:
            raise SourceProblem("no such file")
        return self._files[relative]


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
        includes: list[Include] = []
        access: list[Condition] = []
        root = self.yaml.root
        if root is not None:
            sections: dict[str, Node] = {}
            for key, key_node, value_node in self.yaml.mapping(root, "a config file"):
                if key not in FILE_SECTIONS:
                    self._unknown(key_node, key, FILE_SECTIONS, "section")
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
                self.yaml.report(item, f"an include must be a path string, got {written!r}")
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
                percent_node, f"percent must be a number from 0 to 100, got {percent!r}"
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
                    f"{DEFAULT_IDENTITY}, or env:NAME for an environment variable; got {by!r}",
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
        rollout = self._rollout(rollout_parts, rule) if rule is not None else None
        if not written:
            self.yaml.report(node, f"{what} is empty")
        return conditions, rollout


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


def _app_file_name(relative: str) -> tuple[str | None, str | None]:
    """(app id, None) for a good app file; (None, why) for a bad one; (None, None) to skip."""
    if relative == "global.yml":
        return None, "rename to global.yaml"
    if not relative.startswith(APPS_DIR + "/"):
        return None, None
    name = relative[len(APPS_DIR) + 1 :]
    app_id, dot, extension = name.rpartition(".")
    if "/" in name:
        return None, "apps/ holds files only: apps/<app_id>.yaml (no subdirectories)"
    if not dot or extension not in {"yaml", "yml"}:
        if not _is_yaml(name) and name.startswith((".", "README")):
            return None, None  # README.md, .gitkeep and the like are fine beside app files
        return None, f"app files are named apps/<app_id>.yaml; '{name}' is not"
    if extension == "yml":
        return None, f"rename to apps/{app_id}.yaml (the extension must be .yaml)"
    if not APP_ID_RE.match(app_id):
        return None, f"bad app id '{app_id}' in the file name: app ids are {APP_ID_RULE}"
    return app_id, None


def include_path_problem(written: str) -> str | None:
    """Why an include path is not allowed, or None; paths are relative to the config root."""
    if written.startswith("/") or posixpath.isabs(written):
        return "absolute paths are not allowed; write the path relative to the config root"
    path = posixpath.normpath(written)
    if path == ".." or path.startswith("../"):
        return "the path leaves the config root"
    if not path.endswith(".yaml"):
        return "fragment files end in .yaml"
    if path == GLOBAL_FILE or path.startswith(APPS_DIR + "/"):
        return "only fragment files can be included (not global.yaml or apps/ files)"
    return None


class _LimitedReader:
    """Reads through a source within RepoLimits: sizes are checked before a byte is read."""

    def __init__(self, source: ConfigSource, limits: RepoLimits, display_prefix: str) -> None:
        self.source = source
        self.limits = limits
        self.prefix = display_prefix
        self.total = 0

    def _issue(self, path: str, message: str) -> ConfigIssue:
        return ConfigIssue(path=self.prefix + path, line=1, column=1, message=message)

    def refusals(self, selected: list[str]) -> list[ConfigIssue]:
        """Issues for too many files, too many bytes, or files too big; none to go ahead."""
        limits = self.limits
        if len(selected) > limits.max_files:
            return [
                self._issue(".", f"{len(selected)} config files; the limit is {limits.max_files}")
            ]
        sizes: dict[str, int] = {}
        for relative in selected:
            try:
                sizes[relative] = self.source.size(relative)
            except SourceProblem:
                continue  # reported when the file is read
        total = sum(sizes.values())
        if total > limits.max_total_bytes:
            return [
                self._issue(
                    ".", f"config files total {total} bytes; the limit is {limits.max_total_bytes}"
                )
            ]
        return [
            self._issue(path, f"file is {size} bytes; the limit is {limits.max_file_bytes}")
            for path, size in sorted(sizes.items())
            if size > limits.max_file_bytes
        ]

    def read(self, relative: str) -> bytes:
        size = self.source.size(relative)
        if size > self.limits.max_file_bytes:
            raise SourceProblem(f"file is {size} bytes; the limit is {self.limits.max_file_bytes}")
        if self.total + size > self.limits.max_total_bytes:
            raise SourceProblem(
                f"config files total more than {self.limits.max_total_bytes} bytes with this one"
            )
        self.total += size
        return self.source.read(relative)


def load_config_set(
    files: ConfigSource | Mapping[str, bytes],
    schema: Schema,
    *,
    display_prefix: str = "",
    limits: RepoLimits = RepoLimits(),
    memo: ParseMemo | None = None,
) -> tuple[ConfigSet | None, list[ConfigIssue]]:
    """Parse and validate one config set: the one path every commit takes before serving.

    ``files`` is a ConfigSource, or a mapping of paths relative to the config root
    to their bytes. Issues name paths with ``display_prefix`` in front so they
    match the repository. Returns the config set, or None with every issue found.
    With a ``memo``, files an earlier build parsed cleanly are reused, not re-parsed.
    """
    source: ConfigSource = MemorySource(files) if isinstance(files, Mapping) else files
    reader = _LimitedReader(source, limits, display_prefix)
    issues: list[ConfigIssue] = []
    global_file: ConfigFile | None = None
    apps: dict[str, ConfigFile] = {}

    def parse(relative: str) -> ConfigFile | None:
        try:
            data = reader.read(relative)
        except SourceProblem as problem:
            issues.append(
                ConfigIssue(
                    path=display_prefix + relative, line=1, column=1, message=problem.message
                )
            )
            return None
        return parse_bytes(relative, data)

    def parse_bytes(relative: str, data: bytes) -> ConfigFile | None:
        display = display_prefix + relative
        if memo is not None and (known := memo.get(display, data)) is not None:
            return known
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(ConfigIssue(path=display, line=1, column=1, message=f"not UTF-8: {exc}"))
            return None
        parsed, file_issues = _parse_file(display, text, schema)
        issues.extend(file_issues)
        if memo is not None and parsed is not None and not file_issues:
            memo.put(display, data, parsed)
        return parsed

    try:
        selected = source.selected_paths()
    except SourceProblem as problem:
        root = display_prefix.rstrip("/") or "."
        return None, [ConfigIssue(path=root, line=1, column=1, message=problem.message)]
    refusals = reader.refusals(selected)
    if refusals:
        return None, refusals

    for relative in selected:
        display = display_prefix + relative
        if relative == GLOBAL_FILE:
            global_file = parse(relative)
            continue
        app_id, message = _app_file_name(relative)
        if app_id is not None:
            parsed = parse(relative)
            if parsed is not None:
                apps[app_id] = parsed
        elif message is not None:
            issues.append(ConfigIssue(path=display, line=1, column=1, message=message))

    roots = [f for f in (global_file, *apps.values()) if f is not None]
    fragments = _load_fragments(roots, reader.read, parse_bytes, issues)
    if issues:
        return None, sorted(set(issues))
    return ConfigSet(global_file=global_file, apps=apps, fragments=fragments), []


def _parse_file(
    display: str, text: str, schema: Schema
) -> tuple[ConfigFile | None, list[ConfigIssue]]:
    """One file's ConfigFile and issues; never raises, so a file cannot end a sync."""
    try:
        parser = _FileParser(display, text, schema)
        return parser.parse(), parser.issues
    except RecursionError:
        # PyYAML recurses per nesting level: thousands of [ or { exhaust the stack.
        message = "YAML nested too deeply"
    except Exception as exc:  # a loader bug must reject the commit, not crash the sync
        message = f"cannot load: {type(exc).__name__}"
    return None, [ConfigIssue(path=display, line=1, column=1, message=message)]


def _load_fragments(
    roots: list[ConfigFile],
    read: Callable[[str], bytes],
    parse: Callable[[str, bytes], ConfigFile | None],
    issues: list[ConfigIssue],
) -> dict[str, ConfigFile]:
    """Read every fragment reachable by ``include`` from the roots; report cycles and misses.

    A depth-first walk: a fragment met again while it is still being expanded
    closes a cycle, reported at the include that closes it.
    """
    fragments: dict[str, ConfigFile] = {}
    unreadable: set[str] = set()
    finished: set[str] = set()
    stack: list[str] = []

    def visit(config_file: ConfigFile) -> None:
        for include in config_file.includes:
            if include.path in stack:
                cycle = [*stack[stack.index(include.path) :], include.path]
                issues.append(include.issue(f"include cycle: {' -> '.join(cycle)}"))
                continue
            if include.path in finished or include.path in unreadable:
                continue
            if include.path not in fragments:
                try:
                    data = read(include.path)
                except SourceProblem as problem:
                    issues.append(
                        include.issue(f"cannot include '{include.path}': {problem.message}")
                    )
                    unreadable.add(include.path)
                    continue
                parsed = parse(include.path, data)
                if parsed is None:
                    unreadable.add(include.path)
                    continue
                fragments[include.path] = parsed
            stack.append(include.path)
            visit(fragments[include.path])
            stack.pop()
            finished.add(include.path)

    for root in roots:
        visit(root)
    return fragments


def config_paths(relative: str) -> bool:
    """Whether a path (relative to the config root) is part of the config set."""
    return relative in {GLOBAL_FILE, "global.yml"} or relative.startswith(APPS_DIR + "/")
