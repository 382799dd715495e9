"""Server-side secrets for ``${secret:NAME}`` references in config values.

Secrets never live in git: a value such as ``"lm://user:${secret:cache-password}@cache:65432"``
is resolved when a snapshot is built, from ``--secrets-dir`` (one file per
secret, named after it, as Kubernetes mounts a Secret) or else from the
environment variable ``LMCACHE_CONFIG_SERVER_SECRET_<NAME>`` (upper case, with
``.`` and ``-`` as ``_``). A reference that resolves nowhere rejects the commit.
Resolved values appear only in /config answers; everything else shows the reference.
Blocking (it reads files): used on the sync thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ..base.errors import SecretUnreadable, SettingsError
from ..base.issues import ConfigIssue
from ..base.settings_file import read_yaml_file
from ..config.guardrails import SecretScopes
from ..config.model import ConfigSet

ENV_PREFIX = "LMCACHE_CONFIG_SERVER_SECRET_"


def secret_env_var(name: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class SecretLookup(Protocol):
    """Where a build looks secrets up."""

    def lookup(self, name: str) -> str | None:
        """The secret's value, None when it is defined nowhere; SecretUnreadable when broken."""
        ...

    def not_found(self, name: str) -> str:
        """Why ``name`` was not found: where it was looked for."""
        ...


class SecretSource:
    """This server's secrets: ``--secrets-dir``, then the environment."""

    def __init__(self, directory: str, environ: Mapping[str, str] | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._environ = os.environ if environ is None else environ

    def lookup(self, name: str) -> str | None:
        if self.directory is not None:
            candidate = self.directory / name
            if candidate.is_file():
                try:
                    return candidate.read_text("utf-8").removesuffix("\n")
                except (OSError, UnicodeDecodeError) as exc:
                    # Never the exception's text: a decode error quotes the secret's bytes.
                    kind = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "unreadable"
                    raise SecretUnreadable(f"secret file {candidate} is {kind}") from None
        return self._environ.get(secret_env_var(name))

    def defines(self, name: str) -> bool:
        """Whether ``name`` is defined, without reading its value."""
        in_dir = self.directory is not None and (self.directory / name).is_file()
        return in_dir or secret_env_var(name) in self._environ

    def not_found(self, name: str) -> str:
        where = f"no file {self.directory / name}, " if self.directory else ""
        variable = secret_env_var(name)
        return f"secret '{name}' is not defined on this server ({where}no variable {variable})"

    def resolve(self, config_set: ConfigSet) -> tuple[dict[str, str], list[ConfigIssue]]:
        return resolve_secrets(config_set, self)


class SentSecrets:
    """The secrets another process resolved, as it sent them (a follower builds with the
    leader's, so that one commit never has two contents across the processes)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def lookup(self, name: str) -> str | None:
        return self._values.get(name)

    def not_found(self, name: str) -> str:
        return f"secret '{name}' was not sent by the leader process"


def resolve_secrets(
    config_set: ConfigSet, source: SecretLookup
) -> tuple[dict[str, str], list[ConfigIssue]]:
    """Every secret the config set refers to, or an issue at each unresolved use."""
    resolved: dict[str, str] = {}
    issues: list[ConfigIssue] = []
    for config_file in config_set.all_files():
        for setting in config_file.all_settings():
            for name in setting.secrets:
                if name in resolved:
                    continue
                try:
                    value = source.lookup(name)
                except SecretUnreadable as unreadable:
                    message: str | None = f"secret '{name}': {unreadable.message}"
                else:
                    message = source.not_found(name) if value is None else None
                if message is not None:
                    origin = setting.origin
                    issues.append(
                        ConfigIssue(path=origin.path, line=origin.line, column=1, message=message)
                    )
                elif value is not None:
                    resolved[name] = value
    return resolved, issues


NO_SCOPES = SecretScopes(
    apps_by_secret={}, source="no --secret-scopes: no secret is served to any app"
)


def load_secret_scopes(path: str) -> SecretScopes:
    """The apps each secret may be served to, from ``--secret-scopes``; SettingsError if bad.

    The file maps secret names to lists of app-id globs; the name ``"*"`` stands for every
    secret. The global layer is served to every app, so a secret it uses needs ``"*"``.
    """
    if not path:
        return NO_SCOPES
    data = read_yaml_file(path, "--secret-scopes")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"--secret-scopes {path}: expected a mapping of secret name to apps")
    scopes: dict[str, tuple[str, ...]] = {}
    for name, listed in data.items():
        apps = [listed] if isinstance(listed, str) else listed
        if not isinstance(name, str) or not isinstance(apps, list):
            raise SettingsError(
                f"--secret-scopes {path}: '{name}' must map to a list of app ids or globs"
            )
        if not all(isinstance(app, str) and app for app in apps):
            raise SettingsError(f"--secret-scopes {path}: '{name}': app ids must be text")
        scopes[name] = tuple(apps)
    everywhere = scopes.pop("*", ())
    if everywhere:
        scopes = _with_default(scopes, everywhere)
    return SecretScopes(apps_by_secret=scopes, source=f"--secret-scopes {path}", default=everywhere)


def _with_default(
    scopes: dict[str, tuple[str, ...]], everywhere: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    return {name: (*apps, *everywhere) for name, apps in scopes.items()}
