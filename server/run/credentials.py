"""The credential files of one process, loaded at startup and reloaded when they change.

``--auth-file`` and ``--webhook-secret-file`` are every process's own: with
``--workers N`` each process holds its policy and secret, and each watches
its files. ``--secret-scopes`` and ``--secrets-dir`` are the leader's: it
alone resolves secrets and checks scopes (its followers build with the
secrets it sends), and a change to either asks its sync loop for a sync.
``--git-token-file`` is the leader's too (only it fetches): a rotated token
(a GitHub App's lasts an hour) is used by the next git process, and asks for
a sync, so a fetch the old token lost is retried at once.
A bad file at startup is a SettingsError (exit 2); later, the old one stays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..base.reloading import Current, ReloadedFile, Watched, WatchedDirectory
from ..base.secret_file import read_secret_file
from ..config.guardrails import SecretScopes
from ..settings import Settings
from ..sync.file_watch import FileWatch
from ..sync.secrets import load_secret_scopes
from ..web.auth import AuthPolicy, load_auth_file


@dataclasses.dataclass(frozen=True, kw_only=True)
class CredentialFiles:
    auth: Current[AuthPolicy]
    webhook_secret: Current[bytes | None]
    scopes: Current[SecretScopes] | None  # None in a follower: the leader checks scopes
    watch: FileWatch
    # Called on a change of the secret scopes or the secrets dir (the leader's).
    on_secrets_change: list[Callable[[], None]]
    # The https token for git (--git-token or --git-token-file), and who to tell when the
    # file brings a new one (the leader's mirror and sync loop).
    git_token: Current[str | None]
    on_git_token_change: list[Callable[[str | None], None]]


def credential_files(settings: Settings, *, leader: bool) -> CredentialFiles:
    watched: list[Watched] = []
    on_secrets_change: list[Callable[[], None]] = []

    def notify_secrets() -> None:
        for listener in on_secrets_change:
            listener()

    protect_metrics = settings.protect_metrics
    auth = Current(AuthPolicy(config=None, protect_metrics=protect_metrics))
    if settings.auth_file:
        auth_file = ReloadedFile(
            setting="auth_file",
            path=settings.auth_file,
            load=lambda path: AuthPolicy(
                config=load_auth_file(path), protect_metrics=protect_metrics
            ),
        )
        watched.append(auth_file)
        auth = auth_file.current
    webhook: Current[bytes | None] = Current(
        settings.webhook_secret.encode() if settings.webhook_secret else None
    )
    if settings.webhook_secret_file:
        webhook_file = ReloadedFile[bytes | None](
            setting="webhook_secret_file",
            path=settings.webhook_secret_file,
            load=lambda path: read_secret_file(path, "--webhook-secret-file").encode(),
        )
        watched.append(webhook_file)
        webhook = webhook_file.current
    scopes: Current[SecretScopes] | None = None
    if leader:
        scopes = Current(load_secret_scopes(""))  # without the file: no app gets a secret
        if settings.secret_scopes:
            scopes_file = ReloadedFile(
                setting="secret_scopes", path=settings.secret_scopes, load=load_secret_scopes
            )
            scopes_file.listeners.append(notify_secrets)
            watched.append(scopes_file)
            scopes = scopes_file.current
        if settings.secrets_dir:
            secrets_dir = WatchedDirectory(setting="secrets_dir", path=settings.secrets_dir)
            secrets_dir.listeners.append(notify_secrets)
            watched.append(secrets_dir)
    git_token: Current[str | None] = Current(settings.git_token or None)
    on_git_token_change: list[Callable[[str | None], None]] = []
    if settings.git_token_file:
        token_file = ReloadedFile[str | None](
            setting="git_token_file",
            path=settings.git_token_file,
            load=lambda path: read_secret_file(path, "--git-token-file"),
        )
        git_token = token_file.current

        def notify_git_token() -> None:
            for listener in on_git_token_change:
                listener(git_token.value)

        if leader:
            watched.append(token_file)
            token_file.listeners.append(notify_git_token)
    return CredentialFiles(
        auth=auth,
        webhook_secret=webhook,
        scopes=scopes,
        watch=FileWatch(watched),
        on_secrets_change=on_secrets_change,
        git_token=git_token,
        on_git_token_change=on_git_token_change,
    )
