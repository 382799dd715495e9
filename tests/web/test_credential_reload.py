"""Credential files are read again when they change, without a restart (issue 15).

Every file here is updated the way Kubernetes updates a mounted Secret (a
``..data`` symlink swap, ``tests/support/mounted_secret.py``) or, for the
secret scopes, by an atomic rename as an editor or config tool writes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from server.web.auth import hash_token
from tests.support.gitrepo import ConfigRepo
from tests.support.mounted_secret import MountedSecret
from tests.support.servers import RunningServer, ServerFactory, secret_scopes, values
from tests.support.webhooks import github_headers, push_body

OLD_TOKEN = "old-client-token-0123456789abcdef"
NEW_TOKEN = "new-client-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def auth_yaml(client_token: str) -> str:
    return f"""
clients:
  - name: fleet
    token_sha256: {hash_token(client_token)}
    apps: ["*"]
admins:
  - name: oncall
    token_sha256: {hash_token(ADMIN_TOKEN)}
"""


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll an HTTP condition; the timeout only bounds a hang (a poll is every second)."""
    deadline = time.monotonic() + 15
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def config_code(server: RunningServer, token: str) -> int:
    response = await server.client.get("/config", params={"appId": "test-app", "token": token})
    return response.status


async def credentials(server: RunningServer) -> dict[str, Any]:
    response = await server.client.get("/status", headers=ADMIN)
    assert response.status == 200
    return dict((await response.json())["credentials"])


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.ERROR and "is not taken" in record.getMessage()
    ]


async def test_rotated_client_token_works_without_a_restart(
    tmp_path: Path,
    config_repo: ConfigRepo,
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    mount = MountedSecret(tmp_path / "auth", {"auth.yaml": auth_yaml(OLD_TOKEN)})
    server = await start_server(config_repo.path, auth_file=mount.file("auth.yaml"))
    assert await config_code(server, OLD_TOKEN) == 200
    assert await config_code(server, NEW_TOKEN) == 401
    before = (await credentials(server))["auth_file"]
    assert before["path"] == mount.file("auth.yaml")
    assert before["error"] is None

    mount.update({"auth.yaml": auth_yaml(NEW_TOKEN)})
    await eventually(
        lambda: _is(config_code(server, NEW_TOKEN), 200), "the new token to be accepted"
    )
    assert await config_code(server, OLD_TOKEN) == 401
    after = (await credentials(server))["auth_file"]
    assert after["error"] is None
    assert after["loaded_at"] > before["loaded_at"]
    assert f"--auth-file {mount.file('auth.yaml')} reloaded" in caplog.text
    assert hash_token(NEW_TOKEN) not in caplog.text  # the path only, never the content


async def test_bad_auth_file_keeps_the_old_tokens_and_says_so(
    tmp_path: Path,
    config_repo: ConfigRepo,
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    mount = MountedSecret(tmp_path / "auth", {"auth.yaml": auth_yaml(OLD_TOKEN)})
    server = await start_server(config_repo.path, auth_file=mount.file("auth.yaml"))

    mount.update({"auth.yaml": "clients: [unclosed\n"})
    await eventually(lambda: _has_error(server, "not valid YAML"), "the refusal in /status")
    assert await config_code(server, OLD_TOKEN) == 200
    first = (await credentials(server))["auth_file"]
    assert first["error_since"] is not None
    assert len(refusals(caplog)) == 1
    response = await server.client.get("/dashboard", headers=ADMIN)
    page = await response.text()
    assert "not valid YAML" in page
    assert "the earlier version stays in force" in page

    # Another bad version: said once more; the file has been bad since the first one.
    mount.update({"auth.yaml": "clients: []\nusers: []\n"})
    await eventually(lambda: _has_error(server, "unknown section(s) users"), "the second refusal")
    second = (await credentials(server))["auth_file"]
    assert second["error_since"] == first["error_since"]
    assert second["loaded_at"] == first["loaded_at"]
    assert await config_code(server, OLD_TOKEN) == 200
    assert len(refusals(caplog)) == 2

    mount.update({"auth.yaml": auth_yaml(NEW_TOKEN)})
    await eventually(lambda: _is(config_code(server, NEW_TOKEN), 200), "the fixed file to be taken")
    assert await config_code(server, OLD_TOKEN) == 401
    fixed = (await credentials(server))["auth_file"]
    assert (fixed["error"], fixed["error_since"]) == (None, None)
    assert "the earlier error is resolved" in caplog.text
    assert len(refusals(caplog)) == 2


async def test_rotated_webhook_secret(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    mount = MountedSecret(tmp_path / "webhook", {"secret": "old-webhook-secret\n"})
    server = await start_server(config_repo.path, webhook_secret_file=mount.file("secret"))

    async def delivery(secret: str) -> int:
        body = push_body()
        headers = github_headers(body, secret=secret)
        return (await server.client.post("/webhook/github", data=body, headers=headers)).status

    assert await delivery("old-webhook-secret") == 202
    assert await delivery("new-webhook-secret") == 401
    mount.update({"secret": "new-webhook-secret\n"})
    await eventually(lambda: _is(delivery("new-webhook-secret"), 202), "the new webhook secret")
    assert await delivery("old-webhook-secret") == 401

    # An empty secret file is refused: the secret in force stays.
    mount.update({"secret": "\n"})
    await eventually(lambda: _has_error(server, "is empty", "webhook_secret_file"), "a refusal")
    assert await delivery("new-webhook-secret") == 202


SECRET_APP = 'overrides:\n  remote_url: "lm://cache:${secret:cache-password}@cache:65432"\n'


async def remote_url(server: RunningServer) -> str | None:
    status, answer = await server.config("a")
    return str(values(answer)["remote_url"]) if status == 200 else None


async def test_rotated_secret_reaches_config_without_a_commit(
    tmp_path: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": SECRET_APP})
    mount = MountedSecret(tmp_path / "secrets", {"cache-password": "first-password\n"})
    server = await start_server(
        repo.path,
        secrets_dir=str(mount.path),
        secret_scopes=secret_scopes(tmp_path, {"*": ["*"]}),
    )
    assert await remote_url(server) == "lm://cache:first-password@cache:65432"

    mount.update({"cache-password": "second-password\n"})
    await eventually(
        lambda: _is(remote_url(server), "lm://cache:second-password@cache:65432"),
        "the rotated secret in /config",
    )
    newest = (await server.status())["recent_syncs"][0]
    assert (newest["trigger"], newest["result"]) == ("secrets", "updated")
    assert "second-password" not in caplog.text


async def test_changed_secret_scopes_are_taken_and_a_bad_file_is_not(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": SECRET_APP})
    mount = MountedSecret(tmp_path / "secrets", {"cache-password": "the-password\n"})
    scopes = tmp_path / "scopes.yaml"
    scopes.write_text('{"other-secret": ["*"]}\n')

    def replace_scopes(text: str) -> None:
        """As an editor or a config tool writes: a new file renamed over the old."""
        new = tmp_path / "scopes.yaml.new"
        new.write_text(text)
        os.replace(new, scopes)

    server = await start_server(repo.path, secrets_dir=str(mount.path), secret_scopes=str(scopes))
    assert server.served_sha is None  # cache-password may reach no app: rejected

    replace_scopes("cache-password: [unclosed\n")
    await eventually(lambda: _has_error(server, "not valid YAML", "secret_scopes"), "a refusal")
    assert server.served_sha is None

    replace_scopes('{"cache-password": ["a"]}\n')
    await eventually(
        lambda: _is(remote_url(server), "lm://cache:the-password@cache:65432"),
        "the commit served once the secret is scoped",
    )
    assert (await server.status())["credentials"]["secret_scopes"]["error"] is None


async def _is(answer: Awaitable[object], expected: object) -> bool:
    return await answer == expected


async def _has_error(server: RunningServer, text: str, setting: str = "auth_file") -> bool:
    """Whether /status says the newest version of ``setting`` is refused, for ``text``."""
    response = await server.client.get("/status", headers=ADMIN)
    status = await response.json()
    error = status.get("credentials", {}).get(setting, {}).get("error")
    return error is not None and text in error
