"""The config-repository language as immutable values: settings, conditions, rules, files, sets.

Each file of a config set is a mapping with optional ``include``, ``defaults``,
``overrides``, ``rules`` and ``access`` sections (see README); ``parser``
turns one file into a :class:`ConfigFile`, ``loader`` a whole tree into a
:class:`ConfigSet`. Nothing here reads files, knows git or changes once built.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from ..base.issues import ConfigIssue, ConfigWarning
from .rollout import Rollout

_GLOB_CHARS = frozenset("*?[")


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
    # The LMCache versions it was checked against (the server's and global.yaml's); ()
    # when none were declared and the one default schema was used.
    lmcache_versions: tuple[str, ...] = ()
    # What the loader saw but nothing reads (``config.hints``): shown, never refused.
    warnings: tuple[ConfigWarning, ...] = ()
    # layers() per app id (None for the global layer alone): the loader's rule limit, the
    # guardrails and the snapshot all ask, once per app and build each. Filled, never
    # replaced; unknown app ids share the global entry, so it stays bounded by the apps.
    _layers: dict[str | None, tuple[ConfigFile, ...]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def all_files(self) -> tuple[ConfigFile, ...]:
        """global.yaml, every app file and every fragment, each once."""
        own = (self.global_file,) if self.global_file is not None else ()
        return (*own, *self.apps.values(), *self.fragments.values())

    def layers(self, app_id: str | None) -> tuple[ConfigFile, ...]:
        """The files that apply to an app, in order: global.yaml's chain, then the app's.

        Each file comes after the fragments it includes (recursively). A fragment
        is applied once per app, where it is first reached, so a fragment that
        global.yaml already includes is not applied a second time by an app file.
        """
        key = app_id if app_id in self.apps else None
        known = self._layers.get(key)
        if known is None:
            known = self._layers[key] = self._expand(key)
        return known

    def _expand(self, app_id: str | None) -> tuple[ConfigFile, ...]:
        ordered: list[ConfigFile] = []
        seen: set[str] = set()
        if self.global_file is not None:
            _expand_into(ordered, seen, self.global_file, self.fragments)
        app_file = self.apps.get(app_id) if app_id else None
        if app_file is not None:
            _expand_into(ordered, seen, app_file, self.fragments)
        return tuple(ordered)


def _expand_into(
    ordered: list[ConfigFile],
    seen: set[str],
    config_file: ConfigFile,
    fragments: Mapping[str, ConfigFile],
) -> None:
    """Append ``config_file`` after the fragments it includes, each fragment once.

    A function, not a closure that calls itself: such a closure is a reference
    cycle, and 10,000 apps would leave 10,000 of them to the cycle collector.
    """
    for include in config_file.includes:
        if include.path in seen or include.path not in fragments:
            continue
        seen.add(include.path)
        _expand_into(ordered, seen, fragments[include.path], fragments)
    ordered.append(config_file)


def same_files(kept: tuple[ConfigFile, ...], files: tuple[ConfigFile, ...]) -> bool:
    """Whether two layer tuples hold the very same file objects: the parse memo hands back
    the same ``ConfigFile`` for an unchanged file, so what was derived from them holds."""
    return len(kept) == len(files) and all(a is b for a, b in zip(kept, files, strict=True))


def chosen_layers(
    files: Iterable[ConfigFile], matched: tuple[Rule, ...]
) -> list[tuple[Setting, ...]]:
    """The settings that apply, in order: each file's own, then those of its rules that
    matched (``matched``), file by file; later layers win (``effective.merge``)."""
    chosen = set(map(id, matched))
    layers: list[tuple[Setting, ...]] = []
    for config_file in files:
        layers.append(config_file.settings)
        layers.extend(rule.settings for rule in config_file.rules if id(rule) in chosen)
    return layers
