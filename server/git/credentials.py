"""Credentials for a private config repository, handed to git without exposing them.

- HTTPS: a token (``--git-token`` via its environment variable, or
  ``--git-token-file``) sent as HTTP basic auth through git's
  ``http.<url>.extraHeader``, passed in the *environment* of the git process
  (``GIT_CONFIG_COUNT``...) so it never appears on a command line, and scoped to
  the remote's host so a redirect elsewhere does not carry it.
- SSH: a private key (any type ssh supports, not only RSA/PEM) and a
  known_hosts file; host keys are checked strictly and ssh never prompts.

Nothing here is ever logged or shown in /status beyond a description.
"""

from __future__ import annotations

import base64
import dataclasses
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from ..base.errors import SettingsError


@dataclasses.dataclass(frozen=True, kw_only=True)
class GitCredentials:
    https_username: str
    https_token: str | None = dataclasses.field(default=None, repr=False)
    ssh_key: str | None = None
    ssh_known_hosts: str | None = None

    def environment(self, remote: str) -> dict[str, str]:
        """Environment variables for git processes talking to ``remote``."""
        env = {"GIT_SSH_COMMAND": ssh_command(self.ssh_key, self.ssh_known_hosts)}
        parts = urlsplit(remote)
        if self.https_token and parts.scheme in {"http", "https"} and parts.hostname:
            pair = f"{self.https_username}:{self.https_token}".encode()
            host = parts.hostname + (f":{parts.port}" if parts.port else "")
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{host}/.extraHeader",
                    "GIT_CONFIG_VALUE_0": "Authorization: Basic " + base64.b64encode(pair).decode(),
                }
            )
        return env

    def describe(self) -> str:
        kinds = []
        if self.https_token:
            kinds.append(f"https token for user '{self.https_username}'")
        if self.ssh_key:
            kinds.append("ssh key" + (" with known_hosts" if self.ssh_known_hosts else ""))
        return ", ".join(kinds) or "none"


def ssh_command(key: str | None, known_hosts: str | None) -> str:
    parts = ["ssh", "-o", "BatchMode=yes"]
    if key:
        parts += ["-i", key, "-o", "IdentitiesOnly=yes"]
    if known_hosts:
        parts += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    return shlex.join(parts)


def existing_file(path: str, flag: str) -> str:
    """``path`` made absolute, once it is known to be a file (ssh would fail obscurely)."""
    if not Path(path).is_file():
        raise SettingsError(f"{flag} {path}: no such file")
    return str(Path(path).resolve())
