"""Who may ask for what: client credentials for /config, admin tokens for operator endpoints.

Credentials live in a YAML file outside the config repository (``--auth-file``),
as SHA-256 hashes of long random tokens, so the file itself grants nothing if
read. The real LMCache client can only send what fits in ``remote_config_url``:

- a token in the query string: ``http://host:8088/config?token=<token>``
  (the client keeps an existing query and appends ``&appId=...``);
- HTTP basic auth from the URL's userinfo:
  ``http://<name>:<token>@host:8088/config``.

Operators and tools may also send ``Authorization: Bearer <token>``. Each client
credential is limited to app id globs; admin credentials may do everything.
Tokens are never logged: only the credential's name is.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

from ..base.errors import Forbidden, SettingsError, Unauthorized
from ..base.settings_file import read_yaml_file

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
REALM = 'Basic realm="lmcache-config-server", charset="UTF-8"'


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Credential:
    name: str
    token_sha256: str
    apps: tuple[str, ...]  # app id globs; admins may ask for any app
    admin: bool

    def may_read(self, app_id: str | None) -> bool:
        if self.admin or "*" in self.apps:
            return True
        return app_id is not None and any(fnmatch.fnmatchcase(app_id, glob) for glob in self.apps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """The loaded auth file: credentials by token hash."""

    by_hash: Mapping[str, Credential]

    def lookup(self, token: str, name: str | None = None) -> Credential | None:
        credential = self.by_hash.get(hash_token(token))
        if credential is None:
            return None
        if name is not None and not hmac.compare_digest(name.encode(), credential.name.encode()):
            return None
        return credential


def _fail(path: str, message: str) -> SettingsError:
    return SettingsError(f"auth file {path}: {message}")


def load_auth_file(path: str) -> AuthConfig:
    """Parse and check the auth file; every problem is a startup error naming the entry."""
    document = read_yaml_file(path, "auth file")
    if not isinstance(document, dict):
        raise _fail(path, "must be a mapping with 'clients' and/or 'admins'")
    unknown = set(document) - {"clients", "admins"}
    if unknown:
        raise _fail(path, f"unknown section(s) {', '.join(sorted(unknown))}; use clients, admins")
    by_hash: dict[str, Credential] = {}
    for section, admin in (("clients", False), ("admins", True)):
        entries = document.get(section)
        entries = [] if entries is None else entries
        if not isinstance(entries, list):
            raise _fail(path, f"'{section}' must be a list")
        for index, entry in enumerate(entries):
            credential = _credential(path, section, index, entry, admin)
            if credential.token_sha256 in by_hash:
                raise _fail(path, f"{section}[{index}] reuses the token of another entry")
            by_hash[credential.token_sha256] = credential
    return AuthConfig(by_hash=by_hash)


def _credential(path: str, section: str, index: int, entry: Any, admin: bool) -> Credential:
    where = f"{section}[{index}]"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where} must be a mapping")
    allowed = {"name", "token_sha256"} | ({"apps"} if not admin else set())
    unknown = set(entry) - allowed
    if unknown:
        raise _fail(path, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name or ":" in name:
        raise _fail(path, f"{where}: 'name' must be a non-empty string without ':'")
    digest = entry.get("token_sha256")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise _fail(
            path,
            f"{where} ({name}): 'token_sha256' must be 64 lowercase hex digits "
            "(`lmcache-config-server hash-token` prints one)",
        )
    apps: tuple[str, ...] = ("*",)
    if not admin:
        raw_apps = entry.get("apps")
        if (
            not isinstance(raw_apps, list)
            or not raw_apps
            or not all(isinstance(glob, str) and glob for glob in raw_apps)
        ):
            raise _fail(path, f"{where} ({name}): 'apps' must be a non-empty list of app id globs")
        apps = tuple(raw_apps)
    return Credential(name=name, token_sha256=digest, apps=apps, admin=admin)


def presented_token(
    headers: Mapping[str, str], query: Mapping[str, str]
) -> tuple[str, str | None] | None:
    """(token, basic-auth user name or None) from a request, or None when it carries none."""
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), None
    if scheme.lower() == "basic" and value.strip():
        # Here: the CLI imports this module (hash-token) and must not import aiohttp.
        from aiohttp import BasicAuth  # noqa: PLC0415

        # base64 of "<name>:<token>", split at the first ':' (a token may hold more), in
        # UTF-8 as REALM asks. ValueError: not base64, not UTF-8, no ':', or not ASCII at
        # all; its text is not shown, as it can quote a byte of the credentials. (aiohttp
        # deprecates BasicAuth for 4.0; decode() does not warn in 3.x.)
        try:
            basic = BasicAuth.decode(f"{scheme} {value.strip()}", encoding="utf-8")
        except ValueError:
            raise Unauthorized("malformed basic auth header") from None
        if basic.password:
            return basic.password, basic.login
    token = query.get("token")
    if token:
        return token, None
    return None


def authenticate(
    auth: AuthConfig, headers: Mapping[str, str], query: Mapping[str, str]
) -> Credential:
    presented = presented_token(headers, query)
    if presented is None:
        raise Unauthorized(
            "credentials required: put ?token=<token> or <name>:<token>@ in remote_config_url"
        )
    credential = auth.lookup(*presented)
    if credential is None:
        raise Unauthorized("unknown or wrong credentials")
    return credential


def require_admin(
    auth: AuthConfig, headers: Mapping[str, str], query: Mapping[str, str]
) -> Credential:
    credential = authenticate(auth, headers, query)
    if not credential.admin:
        raise Forbidden(f"'{credential.name}' is not an admin credential")
    return credential


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthPolicy:
    """What the running server enforces; ``config`` None means authentication is off."""

    config: AuthConfig | None
    protect_metrics: bool

    @property
    def enabled(self) -> bool:
        return self.config is not None
