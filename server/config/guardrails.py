"""What a commit must pass beyond its files being valid one by one: the server's guardrails.

Three checks, each naming file:line and a reason:

1. the key policy (``config.policy``): keys the repository may not serve;
2. secret scopes: a ``${secret:NAME}`` is served only to the apps the operator
   allowed NAME for (``--secret-scopes``, never the repository);
3. LMCache's own validation (``config.engine_check``) on each app's effective
   config, for each rule outcome that can be reached: no rule matched, each
   rule alone, every rule together (all combinations would be 2^n; a clash
   needs a rule's keys, and those outcomes hold each rule's keys).

The engine check is the costly one; results are kept per app by the parsed
files it was computed from (the parse memo hands back the same objects for
unchanged files), so a one-file commit re-checks only the apps that file reaches.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Mapping

from ..base.issues import ConfigIssue
from .effective import EXTRA_CONFIG, EffectiveSetting, merge
from .engine_check import EngineCheck, keys_named
from .model import ConfigFile, ConfigSet, Rule, Setting, chosen_layers, same_files
from .names import APPS_DIR
from .policy import KeyPolicy

# The commit-message trailer that says a commit removes apps on purpose.
REMOVES_APPS = "Removes-Apps:"
# Apps named in one message before "and N more".
_APPS_SHOWN = 5
# Per-app engine results kept between builds (the memo is one builder's, on one thread).
_MEMO_APPS = 50_000


@dataclasses.dataclass(frozen=True)
class SecretScopes:
    """Which apps (id globs) each secret may be served to; from the server's configuration."""

    apps_by_secret: Mapping[str, tuple[str, ...]]
    source: str
    default: tuple[str, ...] = ()  # the apps of a secret not named (the file's "*" entry)

    def patterns(self, secret: str) -> tuple[str, ...]:
        return self.apps_by_secret.get(secret, self.default)

    def allows(self, secret: str, app_id: str | None) -> bool:
        patterns = self.patterns(secret)
        if app_id is None:  # the global layer: served to every app id, known or not
            return "*" in patterns
        return any(fnmatch.fnmatchcase(app_id, pattern) for pattern in patterns)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Clash:
    """One refusal of LMCache's validation, and where the keys it names were set."""

    message: str
    origins: tuple[str, ...]
    path: str
    line: int


class EngineMemo:
    """Engine-check results per app, by the identity of the files they came from; and
    LMCache's verdicts by the values it read (many apps serve the same few)."""

    def __init__(self) -> None:
        self._results: dict[str | None, tuple[tuple[ConfigFile, ...], list[_Clash]]] = {}
        self.verdicts: dict[str, str | None] = {}

    def get(self, app_id: str | None, files: tuple[ConfigFile, ...]) -> list[_Clash] | None:
        kept = self._results.get(app_id)
        return kept[1] if kept is not None and same_files(kept[0], files) else None

    def put(self, app_id: str | None, files: tuple[ConfigFile, ...], clashes: list[_Clash]) -> None:
        if len(self._results) >= _MEMO_APPS and app_id not in self._results:
            self._results.clear()  # a repository this big rebuilds its memo once
        self._results[app_id] = (files, clashes)
        if len(self.verdicts) >= _MEMO_APPS:
            self.verdicts.clear()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Guardrails:
    policy: KeyPolicy
    engine: EngineCheck | None  # None: not checked (say so where it matters)
    scopes: SecretScopes | None  # None: secret scopes not checked (the CLI without them)

    def issues(self, config_set: ConfigSet, memo: EngineMemo | None = None) -> list[ConfigIssue]:
        """Every refusal of the three checks."""
        return sorted({*self.content_issues(config_set, memo), *self.scope_issues(config_set)})

    def content_issues(
        self, config_set: ConfigSet, memo: EngineMemo | None = None
    ) -> list[ConfigIssue]:
        """The key policy and LMCache's validation: what the commit itself must change."""
        found = self.policy.issues(config_set)
        if self.engine is not None:
            found.extend(_engine_issues(config_set, self.engine, memo))
        return sorted(set(found))

    def scope_issues(self, config_set: ConfigSet) -> list[ConfigIssue]:
        """Secrets used beyond their scope: scoping them on the server is enough to serve."""
        if self.scopes is None:
            return []
        return sorted(set(_scope_issues(config_set, self.scopes)))


def _scope_issues(config_set: ConfigSet, scopes: SecretScopes) -> list[ConfigIssue]:
    refused: dict[tuple[str, int, str], list[str | None]] = {}
    for app_id in (None, *sorted(config_set.apps)):
        for config_file in config_set.layers(app_id):
            for setting in config_file.all_settings():
                for name in setting.secrets:
                    if not scopes.allows(name, app_id):
                        key = (setting.origin.path, setting.origin.line, name)
                        refused.setdefault(key, []).append(app_id)
    issues = []
    for (path, line, name), apps in refused.items():
        allowed = scopes.patterns(name)
        global_layer = None in apps
        whom = "every app (it is in the global layer)" if global_layer else _whom(apps)
        limit = f"it is allowed for {', '.join(allowed)} only" if allowed else "no app may have it"
        issues.append(
            ConfigIssue(
                path=path,
                line=line,
                column=1,
                message=(
                    f"secret '{name}' would be served to {whom}, but {limit} ({scopes.source})"
                ),
            )
        )
    return issues


def _engine_issues(
    config_set: ConfigSet, engine: EngineCheck, memo: EngineMemo | None
) -> list[ConfigIssue]:
    by_clash: dict[tuple[str, int, str, tuple[str, ...]], list[str | None]] = {}
    verdicts = memo.verdicts if memo is not None else {}
    for app_id in (None, *sorted(config_set.apps)):
        files = config_set.layers(app_id)
        clashes = memo.get(app_id, files) if memo is not None else None
        if clashes is None:
            clashes = _check_app(files, engine, verdicts)
            if memo is not None:
                memo.put(app_id, files, clashes)
        for clash in clashes:
            by_clash.setdefault((clash.path, clash.line, clash.message, clash.origins), []).append(
                app_id
            )
    issues = []
    for (path, line, message, origins), apps in by_clash.items():
        whom = _whom(apps)
        where = f" (set at {', '.join(origins)})" if origins else ""
        issues.append(
            ConfigIssue(
                path=path,
                line=line,
                column=1,
                message=(
                    f"LMCache would refuse this config for {whom}: {message}{where} "
                    f"[{engine.source}]; a worker given it fails to start"
                ),
            )
        )
    return issues


def _whom(apps: list[str | None]) -> str:
    """ "the global layer and apps 'a', 'b'", "app 'a'"..."""
    named = [app for app in apps if app is not None]
    parts = ["the global layer"] if None in apps else []
    if named:
        parts.append(("apps " if len(named) > 1 else "app ") + _names(apps))
    return " and ".join(parts)


def _names(apps: list[str | None]) -> str:
    named = [app for app in apps if app is not None]
    shown = ", ".join(f"'{app}'" for app in named[:_APPS_SHOWN])
    more = len(named) - _APPS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _matters(setting: Setting, relevant: frozenset[str]) -> bool:
    """Whether the validation reads what ``setting`` serves."""
    if setting.key != EXTRA_CONFIG:
        return setting.key in relevant
    # LMCache reads extra_config only for its NIXL storage switches (enable_nixl_storage...).
    value = setting.value
    return isinstance(value, dict) and any("nixl" in key for key in value)


def _check_app(
    files: tuple[ConfigFile, ...], engine: EngineCheck, verdicts: dict[str, str | None]
) -> list[_Clash]:
    relevant = engine.relevant_keys
    base = [config_file.settings for config_file in files]
    rules = [rule for config_file in files for rule in config_file.rules]
    if not any(_matters(setting, relevant) for layer in base for setting in layer) and not any(
        _matters(setting, relevant) for rule in rules for setting in rule.settings
    ):
        return []  # nothing the validation reads is served: LMCache's defaults pass it
    outcomes: list[tuple[Rule, ...]] = [()]
    touching = [rule for rule in rules if any(_matters(s, relevant) for s in rule.settings)]
    outcomes.extend((rule,) for rule in touching)
    if len(rules) > 1 and touching:
        outcomes.append(tuple(rules))
    clashes: list[_Clash] = []
    seen: set[str] = set()
    for matched in outcomes:
        # Only what the validation reads: its verdict depends on nothing else.
        layers = [
            tuple(s for s in layer if _matters(s, relevant))
            for layer in chosen_layers(files, matched)
        ]
        effective = merge(layers)
        values = {key: item.value for key, item in effective.items()}
        seen_values = json.dumps(values, sort_keys=True, default=repr)
        if seen_values in verdicts:
            message = verdicts[seen_values]
        else:
            message = verdicts[seen_values] = engine.problem(values)
        if message is None or message in seen:
            continue
        seen.add(message)
        clashes.append(_clash(message, effective, files, matched, relevant))
    return clashes


def _clash(
    message: str,
    effective: Mapping[str, EffectiveSetting],
    files: tuple[ConfigFile, ...],
    matched: tuple[Rule, ...],
    relevant: frozenset[str],
) -> _Clash:
    """Blame the settings of the keys the message names (else the relevant ones served)."""
    named = [key for key in keys_named(message, relevant) if key in effective]
    if not named:
        named = [key for key in effective if key in relevant]
    origins = tuple(str(origin) for key in named for origin in effective[key].origins)
    first = effective[named[0]].origins[-1] if named else None
    if matched and len(matched) == 1:
        message = f"{message} (when rule '{matched[0].name}' matches)"
    elif matched:
        message = f"{message} (when all its rules match)"
    path = first.path if first is not None else (files[-1].path if files else ".")
    line = first.line if first is not None else 1
    return _Clash(message=message, origins=origins, path=path, line=line)


def vanished_apps(
    config_set: ConfigSet, in_use: Mapping[str, int], intended: frozenset[str]
) -> list[ConfigIssue]:
    """An issue for each app whose file the commit removes while workers still ask for it.

    ``in_use``: workers per app id, of the apps served now that workers asked for within
    ``--fleet-ttl``; ``intended``: the apps the commit message says it removes on purpose.
    """
    issues = []
    for app_id, workers in sorted(in_use.items()):
        if app_id in config_set.apps or app_id in intended or "*" in intended:
            continue
        issues.append(
            ConfigIssue(
                path=f"{APPS_DIR}/{app_id}.yaml",
                line=1,
                column=1,
                message=(
                    f"the commit removes app '{app_id}', which {workers} worker(s) asked for "
                    "within --fleet-ttl: they would get the global layer only. If that is "
                    f"intended, add the trailer '{REMOVES_APPS} {app_id}' to the commit message"
                ),
            )
        )
    return issues
