"""Authentication: only the right workers get an app's config; admins see the rest."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.base.errors import SettingsError
from server.run.app import create_app
from server.web.auth import hash_token
from tests.support.gitrepo import ConfigRepo
from tests.support.lmcache_client import FINITE, run_worker
from tests.support.servers import ServerFactory, make_settings

PROD_TOKEN = "prod-token-0123456789abcdef"
TEST_TOKEN = "test-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.yaml"
    path.write_text(
        f"""
clients:
  - name: prod-fleet
    token_sha256: {hash_token(PROD_TOKEN)}
    apps: ["prod-*"]
  - name: test-fleet
    token_sha256: {hash_token(TEST_TOKEN)}
    apps: ["test-app"]
admins:
  - name: oncall
    token_sha256: {hash_token(ADMIN_TOKEN)}
"""
    )
    return path


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/test-app.yaml": "overrides: {chunk_size: 1}\n",
            "apps/prod-eu.yaml": "overrides: {chunk_size: 2}\n",
        }
    )
    return repo


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def get(
    server: Any, path: str, params: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    response = await server.client.get(path, params=params, headers=headers or {})
    return response.status, await response.json(), response.headers


async def test_config_credentials(
    repo: ConfigRepo, auth_file: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_server(repo.path, auth_file=str(auth_file))

    status, body, headers = await get(server, "/config", {"appId": "test-app"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert (await get(server, "/config", {"appId": "test-app", "token": "wrong"}))[0] == 401
    assert (await get(server, "/config", {"appId": "test-app", "token": TEST_TOKEN}))[0] == 200
    status, body, _ = await get(server, "/config", {"appId": "prod-eu", "token": TEST_TOKEN})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert (await get(server, "/config", {"appId": "prod-eu", "token": PROD_TOKEN}))[0] == 200
    assert (await get(server, "/config", {"token": PROD_TOKEN}))[0] == 403  # no appId
    assert (await get(server, "/config", {"appId": "prod-eu", "token": ADMIN_TOKEN}))[0] == 200

    assert (await get(server, "/config", {"appId": "test-app"}, basic("test-fleet", TEST_TOKEN)))[
        0
    ] == 200
    assert (await get(server, "/config", {"appId": "test-app"}, basic("prod-fleet", TEST_TOKEN)))[
        0
    ] == 401
    bearer = {"Authorization": f"Bearer {TEST_TOKEN}"}
    assert (await get(server, "/config", {"appId": "test-app"}, bearer))[0] == 200
    for token in (PROD_TOKEN, TEST_TOKEN, ADMIN_TOKEN):
        assert token not in caplog.text


async def test_operator_endpoints(
    repo: ConfigRepo, auth_file: Path, start_server: ServerFactory
) -> None:
    server = await start_server(repo.path, auth_file=str(auth_file))
    client = server.client
    assert (await client.post("/admin/refresh")).status == 401
    assert (await client.post("/admin/refresh", params={"token": TEST_TOKEN})).status == 403
    response = await client.post(
        "/admin/refresh", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status == 200
    assert (await response.json())["served"] == repo.head()

    summary = await (await client.get("/status")).json()
    assert summary["version"] == repo.head()
    assert "recent_syncs" not in summary
    assert "repo" not in summary
    client_view = await (await client.get("/status", params={"token": TEST_TOKEN})).json()
    assert "recent_syncs" not in client_view
    full = await (await client.get("/status", params={"token": ADMIN_TOKEN})).json()
    assert full["served"]["sha"] == repo.head()
    assert "recent_syncs" in full
    assert (await client.get("/status", params={"token": "wrong"})).status == 401

    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_auth_off_keeps_admin_on_loopback_only(
    repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(repo.path)
    assert (await server.client.post("/admin/refresh")).status == 200  # 127.0.0.1
    assert (await server.config("prod-eu"))[0] == 200


async def test_real_client_with_token_and_userinfo(
    tmp_path: Path, repo: ConfigRepo, auth_file: Path, start_server: ServerFactory
) -> None:
    server = await start_server(repo.path, auth_file=str(auth_file))
    with_token = await run_worker(
        tmp_path, f"{server.url}?token={TEST_TOKEN}", {**FINITE, "app_id": "test-app"}
    )
    assert with_token["fetched"] is True
    assert with_token["config"]["chunk_size"] == 1
    userinfo_url = server.url.replace("http://", f"http://prod-fleet:{PROD_TOKEN}@")
    with_userinfo = await run_worker(tmp_path, userinfo_url, {**FINITE, "app_id": "prod-eu"})
    assert with_userinfo["config"]["chunk_size"] == 2
    refused = await run_worker(tmp_path, userinfo_url, {**FINITE, "app_id": "test-app"})
    assert refused["fetched"] is False  # 403: the worker keeps its local config
    assert refused["config"]["chunk_size"] == 256


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("clients: {}", "'clients' must be a list"),
        ("clients:\n  - name: a\n    token_sha256: abc\n    apps: ['*']", "64 lowercase hex"),
        (f"clients:\n  - name: a\n    token_sha256: {'a' * 64}", "'apps' must be a non-empty list"),
        ("users: []", "unknown section(s) users"),
        (
            f"admins:\n  - name: a\n    token_sha256: {'a' * 64}\n"
            f"  - name: b\n    token_sha256: {'a' * 64}",
            "reuses the token",
        ),
        ("[", "not valid YAML"),
    ],
)
def test_bad_auth_files_stop_startup(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(content)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app(make_settings("unused", tmp_path / "data", auth_file=str(path)))
    with pytest.raises(SettingsError, match="cannot read it"):
        create_app(make_settings("unused", tmp_path / "data", auth_file=str(tmp_path / "none")))


def test_hash_token_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "hash-token", "abc"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"token_sha256: {hash_token('abc')}"
    fresh = subprocess.run(
        [sys.executable, "-m", "server", "hash-token"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    token = fresh[0].removeprefix("token: ")
    assert len(token) >= 40
    assert fresh[1] == f"token_sha256: {hash_token(token)}"


async def test_metrics_open_or_protected(
    repo: ConfigRepo, auth_file: Path, start_server: ServerFactory
) -> None:
    open_metrics = await start_server(repo.path, auth_file=str(auth_file))
    assert (await open_metrics.client.get("/metrics")).status == 200
    protected = await start_server(repo.path, auth_file=str(auth_file), protect_metrics=True)
    assert (await protected.client.get("/metrics")).status == 401
    assert (await protected.client.get("/metrics", params={"token": TEST_TOKEN})).status == 403
    response = await protected.client.get(
        "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status == 200
    assert "lmcache_config" in await response.text()
    for path in ("/fleet", "/history?app=test-app"):
        assert (await protected.client.get(path)).status == 401
        assert (await protected.client.get(path, params={"token": ADMIN_TOKEN})).status == 200


async def _raw_get(server: Any, target: str, authorization: bytes) -> tuple[int, Any]:
    """A request whose Authorization header holds exactly these bytes (no client would)."""
    reader, writer = await asyncio.open_connection(server.client.host, server.client.port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + authorization
        + b"\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe\x80",  # not ASCII: was a 500
        "\u00e9t\u00e9".encode(),
        b"not base64!",
        base64.b64encode(b"\xff\xfe:" + TEST_TOKEN.encode()),  # not UTF-8
        base64.b64encode(TEST_TOKEN.encode()),  # no ':'
    ],
    ids=["bytes", "utf-8-unencoded", "not-base64", "not-utf-8", "no-colon"],
)
async def test_a_malformed_basic_header_is_a_401_even_with_a_token_in_the_query(
    repo: ConfigRepo, auth_file: Path, start_server: ServerFactory, value: bytes
) -> None:
    server = await start_server(repo.path, auth_file=str(auth_file))
    status, body = await _raw_get(
        server, f"/config?appId=test-app&token={TEST_TOKEN}", b"Basic " + value
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert body["error"]["message"] == "malformed basic auth header"


async def test_a_basic_token_may_hold_colons_and_a_name_utf_8(
    repo: ConfigRepo, tmp_path: Path, start_server: ServerFactory
) -> None:
    token = "with:colons:0123456789abcdef"
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        f'clients:\n  - name: "fl\u00e8et"\n    token_sha256: {hash_token(token)}\n'
        '    apps: ["test-app"]\n',
        encoding="utf-8",
    )
    server = await start_server(repo.path, auth_file=str(auth))
    assert (await get(server, "/config", {"appId": "test-app"}, basic("fl\u00e8et", token)))[
        0
    ] == 200
    assert (await get(server, "/config", {"appId": "test-app"}, basic("fleet", token)))[0] == 401
