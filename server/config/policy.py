"""The key policy: LMCache keys a commit may not serve, whatever the repository says.

A commit can hand every worker of an app a way in: the internal API's
code-execution switches, an internal API open on every interface, or a key
that points the worker's config source or identity elsewhere. Those keys are
decided by the operator, not by the repository: the policy is the server's
(built in, plus ``--key-policy FILE``), and a commit that sets a denied key,
or a key to a value the policy does not allow, is rejected at the line that
sets it, with the policy's reason.

The policy file (YAML)::

    deny:                       # added to the built-in rules
      remote_storage_plugins:
        reason: only the platform team installs storage plugins
      max_local_cpu_size:
        only: [5.0, 10.0]       # these values only
        reason: sized for the nodes we run
    allow:                      # built-in rules lifted, by key
      - internal_api_server_host

Pure: the file is read by whoever starts the server or the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ..base.errors import SettingsError
from ..base.issues import ConfigIssue, quoted
from ..base.settings_file import read_yaml_file
from .model import ConfigSet, Setting

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyRule:
    key: str
    reason: str
    # The values a commit may serve for the key; None: the key is never served.
    only: tuple[Any, ...] | None = None

    def refusal(self, value: Any) -> str | None:
        """Why ``value`` may not be served for this key; None when it may."""
        if self.only is not None and any(_same(value, allowed) for allowed in self.only):
            return None
        if self.only is None:
            what = f"'{self.key}' is never served by this server"
        else:
            shown = ", ".join(quoted(allowed) for allowed in self.only)
            what = f"'{self.key}' may only be {shown} here, not {quoted(value)}"
        return f"{what} (key policy): {self.reason}"


def _same(value: Any, allowed: Any) -> bool:
    # true == 1 in Python; a policy that allows false must not let 0 through, or 1.0 for 1.
    return type(value) is type(allowed) and bool(value == allowed)


BUILT_IN_RULES: tuple[KeyRule, ...] = (
    KeyRule(
        key="run_script_api_enabled",
        only=(False,),
        reason="it lets the worker's internal API run code sent to it, as the worker's user",
    ),
    KeyRule(
        key="script_allowed_imports",
        only=(None, []),
        reason="modules a script sent to the internal API may import (os, subprocess: anything)",
    ),
    KeyRule(
        key="internal_api_server_host",
        only=LOOPBACK_HOSTS,
        reason=(
            "the internal API has no authentication and returns the worker's whole "
            "environment (GET /env); it must listen on loopback only"
        ),
    ),
    KeyRule(
        key="remote_config_url",
        reason="it would point the worker's config source at another server",
    ),
    KeyRule(
        key="app_id",
        reason="it would change which app the worker asks for: its answers would be another app's",
    ),
    KeyRule(
        key="lmcache_instance_id",
        reason="each worker has an identity of its own; one served value gives them all the same",
    ),
    KeyRule(
        key="runtime_plugin_locations",
        reason="the worker runs every plugin program found there",
    ),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyPolicy:
    rules: Mapping[str, KeyRule]
    source: str  # "built-in", or the file and what it changed

    def refusal(self, setting: Setting) -> str | None:
        rule = self.rules.get(setting.key)
        return rule.refusal(setting.value) if rule is not None else None

    def issues(self, config_set: ConfigSet) -> list[ConfigIssue]:
        """An issue at every setting (defaults, overrides and rules of every file) it refuses."""
        found: list[ConfigIssue] = []
        for config_file in config_set.all_files():
            for setting in config_file.all_settings():
                refusal = self.refusal(setting)
                if refusal is not None:
                    origin = setting.origin
                    found.append(
                        ConfigIssue(path=origin.path, line=origin.line, column=1, message=refusal)
                    )
        return found


BUILT_IN_POLICY = KeyPolicy(rules={rule.key: rule for rule in BUILT_IN_RULES}, source="built-in")


def load_policy(path: str | None, known_keys: Iterable[str]) -> KeyPolicy:
    """The built-in policy, changed by the file at ``path``; SettingsError naming what is wrong."""
    if not path:
        return BUILT_IN_POLICY
    return parse_policy(read_yaml_file(path, "--key-policy"), path, frozenset(known_keys))


def parse_policy(data: Any, path: str, known: frozenset[str]) -> KeyPolicy:
    where = f"--key-policy {path}"
    if data is None:
        data = {}
    if not isinstance(data, dict) or not set(data) <= {"deny", "allow"}:
        raise SettingsError(f"{where}: expected a mapping with 'deny' and/or 'allow'")
    rules = dict(BUILT_IN_POLICY.rules)
    allow = data.get("allow") or []
    if not isinstance(allow, list) or not all(isinstance(key, str) for key in allow):
        raise SettingsError(f"{where}: 'allow' must be a list of key names")
    for key in allow:
        if key not in rules:
            raise SettingsError(
                f"{where}: 'allow: {key}' lifts no built-in rule; the built-in rules are on "
                + ", ".join(sorted(BUILT_IN_POLICY.rules))
            )
        del rules[key]
    deny = data.get("deny") or {}
    if not isinstance(deny, dict):
        raise SettingsError(f"{where}: 'deny' must map key names to {{reason, only}}")
    for key, entry in deny.items():
        if not isinstance(key, str) or (known and key not in known):
            raise SettingsError(f"{where}: 'deny: {key}' is not an LMCache config key")
        if not isinstance(entry, dict) or not isinstance(entry.get("reason"), str):
            raise SettingsError(f"{where}: 'deny: {key}' needs a 'reason' (text)")
        if not set(entry) <= {"reason", "only"}:
            raise SettingsError(f"{where}: 'deny: {key}' takes only 'reason' and 'only'")
        only = entry.get("only")
        if only is not None and not isinstance(only, list):
            raise SettingsError(f"{where}: 'deny: {key}: only' must be a list of values")
        rules[key] = KeyRule(
            key=key, reason=entry["reason"], only=tuple(only) if only is not None else None
        )
    changes = []
    if allow:
        changes.append("allows " + ", ".join(allow))
    if deny:
        changes.append("denies " + ", ".join(deny))
    source = f"built-in, changed by {path}" + (f" ({'; '.join(changes)})" if changes else "")
    return KeyPolicy(rules=rules, source=source)
