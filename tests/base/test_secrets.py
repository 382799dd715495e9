"""Secrets from the worker's environment and from git URLs never reach a log or /status."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server.base.redact import redact
from tests.support.gitdaemon import free_port
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory

PLANTED = "planted-secret-7f3a9c"


async def test_env_values_never_logged(
    tmp_path: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/app.yaml": """
                rules:
                  - name: uses-token
                    when: {env: {API_TOKEN: "planted-*"}}
                    overrides: {chunk_size: 1}
            """
        }
    )
    caplog.set_level(logging.DEBUG)
    server = await start_server(repo.path)
    body = {
        "env_variables": {"API_TOKEN": PLANTED, "AWS_SECRET_ACCESS_KEY": PLANTED},
        "current_config": {"remote_url": PLANTED},
    }
    status, answer = await server.config("app", body)
    assert status == 200
    assert answer["applied_rules"] == ["uses-token"]
    await server.config("unknown-app", body)
    await server.client.get(
        "/config", params={"appId": "app"}, data=b"{bad json " + PLANTED.encode()
    )
    assert "env_used=API_TOKEN" in caplog.text  # the name of what a rule used, only
    assert PLANTED not in caplog.text
    assert PLANTED not in str(await server.status())


async def test_git_url_credentials_never_logged(
    tmp_path: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://deploy:{PLANTED}@127.0.0.1:{free_port()}/config.git"
    server = await start_server(url, git_timeout=5.0)
    status = await server.status()
    assert status["last_sync"]["result"] == "failed"
    assert "http://***@127.0.0.1" in status["repo"]
    assert PLANTED not in str(status)
    assert PLANTED not in caplog.text
    assert "http://***@127.0.0.1" in caplog.text


def test_redact() -> None:
    assert redact("fetch https://user:pw@host/x and ssh://git@host/y") == (
        "fetch https://***@host/x and ssh://***@host/y"
    )
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    assert (
        redact('"GET /config?appId=a&token=abc HTTP/1.1"')
        == '"GET /config?appId=a&token=*** HTTP/1.1"'
    )
    # The quick pre-check must not skip any spelling the patterns catch.
    assert redact("AUTHORIZATION: basic dXNlcjpwdw==") == "AUTHORIZATION: basic ***"
    assert redact("HTTPS://u:p@host") == "HTTPS://***@host"
