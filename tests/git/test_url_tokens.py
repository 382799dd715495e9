"""Tokens written into --repo never show, whatever they hold: ``/ @ + % :``.

A real smart-HTTP git server (basic auth) serves the repository; syncs succeed
with the right token and fail with a wrong one, a URL git refuses (a raw ``/``
or ``@``) or a port nothing listens on. Everything an operator can read is
searched for the token as written and percent-decoded: ``/status`` (the full
view), the last sync's error, the dashboard, ``/metrics`` and the log (records
in process, and the log file of a real server process), while the host and
path of the repository still show.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from server.base.logs import JsonFormatter, TextFormatter
from tests.support.gitdaemon import free_port
from tests.support.githttp import GitHttpServer
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess
from tests.support.servers import RunningServer, ServerFactory

USER = "deploy"
# Each a token the server must hide; "%zz" is no percent escape, so git takes it raw.
TOKENS = {
    "slash": "pl4ntSl/ash0tok",
    "at": "pl4ntAt@sign0tok",
    "plus": "pl4ntPl+us0tok",
    "percent": "pl4ntPc%zz0tok",
    "colon": "pl4ntCo:lon0tok",
    "combined": "pl4ntAll/x@y+z%zz:w/9@Q",
}
# Which raw (not percent-encoded) tokens git accepts in a URL: not "/" or "@".
GIT_TAKES_RAW = {"plus", "percent", "colon"}


def encoded(token: str) -> str:
    """As a user has to write the token in a URL."""
    return f"{USER}:{quote(token, safe='')}"


def raw(token: str) -> str:
    return f"{USER}:{token}"


def forms(token: str) -> set[str]:
    """The token as planted, percent-encoded and decoded, and as HTML shows each.

    And the pieces git and ssh cut a raw token into: every token begins "pl4nt"
    (ssh shows what comes before a "/" as the host name), and what follows its
    first "@" (git takes that "@" for the end of the userinfo).
    """
    found = {token, quote(token, safe=""), unquote(token), unquote(quote(token, safe=""))}
    found |= {"pl4nt", token.partition("@")[2]} - {""}
    return found | {html.escape(form) for form in found}


def assert_hidden(token: str, text: str, where: str) -> None:
    for form in forms(token):
        assert form not in text, f"{form!r} shown in {where}: {text[:2000]}"


@pytest.fixture
async def served(tmp_path: Path) -> Path:
    """The directory holding cfg.git, a bare repository with one valid commit."""
    source = ConfigRepo(tmp_path / "source")
    source.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 7}\n"})
    root = tmp_path / "served"
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(source.path), str(root / "cfg.git")], check=True
    )
    return root


async def http_remote(root: Path, token: str) -> GitHttpServer:
    server = GitHttpServer(root, USER, token)
    await server.start()
    return server


def own_messages(records: list[logging.LogRecord]) -> str:
    """The server's own messages, before the formatter's redaction (some reach /status too)."""
    return "\n".join(record.getMessage() for record in records if record.name.startswith("server"))


def formatted_log(records: list[logging.LogRecord]) -> str:
    """Every record (GitPython's debug lines too) as the log file holds it, in both formats."""
    text, as_json = TextFormatter(), JsonFormatter()
    return "\n".join(f(record) for record in records for f in (text.format, as_json.format))


async def assert_nothing_shown(
    server: RunningServer,
    token: str,
    where: str,
    caplog: pytest.LogCaptureFixture,
    *,
    ok: bool,
) -> dict[str, Any]:
    """The token hidden everywhere an operator reads; the repository's place shown."""
    status: dict[str, Any] = await server.status()
    assert status["ready"] is ok, status
    assert status["repo"] == f"http://***@{where}", status["repo"]
    assert_hidden(token, json.dumps(status), "/status")
    last = status["last_sync"]
    if not ok:
        assert last["result"] == "failed", last
        assert where in last["error"], last["error"]
        assert_hidden(token, last["error"], "the last sync error")
    dashboard = await server.client.get("/dashboard")
    assert dashboard.status == 200
    page = await dashboard.text()
    assert where in page
    assert_hidden(token, page, "/dashboard")
    metrics = await server.client.get("/metrics")
    assert metrics.status == 200
    assert_hidden(token, await metrics.text(), "/metrics")
    assert_hidden(token, own_messages(caplog.records), "the server's log messages")
    log_file = formatted_log(caplog.records)
    assert_hidden(token, log_file, "the formatted log")
    assert f"http://***@{where}" in log_file
    return status


@pytest.mark.parametrize("name", sorted(TOKENS))
async def test_encoded_token_syncs_and_never_shows(
    name: str, served: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKENS[name]
    remote = await http_remote(served, token)
    try:
        server = await start_server(remote.url("cfg.git", encoded(token)))
        assert server.served_sha is not None
        where = f"127.0.0.1:{remote.port}/cfg.git"
        await assert_nothing_shown(server, token, where, caplog, ok=True)
    finally:
        await remote.stop()


@pytest.mark.parametrize("name", sorted(TOKENS))
async def test_raw_token_syncs_or_fails_and_never_shows(
    name: str, served: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKENS[name]
    remote = await http_remote(served, token)
    try:
        server = await start_server(remote.url("cfg.git", raw(token)))
        where = f"127.0.0.1:{remote.port}/cfg.git"
        ok = name in GIT_TAKES_RAW  # git refuses a URL with a raw "/" or "@" in it
        await assert_nothing_shown(server, token, where, caplog, ok=ok)
        if not ok:
            assert remote.refused == 0  # git never got as far as asking
    finally:
        await remote.stop()


@pytest.mark.parametrize("name", sorted(TOKENS))
async def test_wrong_token_fails_and_never_shows(
    name: str, served: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKENS[name]
    remote = await http_remote(served, "the-right-token")
    try:
        server = await start_server(remote.url("cfg.git", encoded(token)))
        where = f"127.0.0.1:{remote.port}/cfg.git"
        await assert_nothing_shown(server, token, where, caplog, ok=False)
        assert remote.refused >= 1
    finally:
        await remote.stop()


@pytest.mark.parametrize("form", [encoded, raw])
@pytest.mark.parametrize("name", sorted(TOKENS))
async def test_unreachable_remote_fails_and_never_shows(
    name: str, form: Any, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKENS[name]
    where = f"127.0.0.1:{free_port()}/cfg.git"
    server = await start_server(f"http://{form(token)}@{where}", git_timeout=5.0)
    await assert_nothing_shown(server, token, where, caplog, ok=False)


async def test_ssh_password_in_the_url_never_shows(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKENS["combined"]
    where = f"127.0.0.1:{free_port()}/cfg.git"
    server = await start_server(f"ssh://{raw(token)}@{where}", git_timeout=5.0)
    status = await server.status()
    assert status["repo"] == f"ssh://***@{where}"
    assert status["last_sync"]["result"] == "failed"
    assert_hidden(token, json.dumps(status), "/status")
    assert_hidden(token, own_messages(caplog.records), "the server's log messages")
    assert_hidden(token, formatted_log(caplog.records), "the formatted log")


# A real server process: its log file, in either format, from startup to shutdown.


async def _get(server: ServerProcess, path: str) -> str:
    _, _, body = await asyncio.to_thread(server.request, path)
    return body.decode()


async def _first_sync(server: ServerProcess) -> dict[str, Any]:
    """/status once the first sync has ended (served, or failed)."""
    await asyncio.to_thread(server.wait_listening)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status: dict[str, Any] = json.loads(await _get(server, "/status"))
        if status["last_sync"] is not None:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"no sync ended: {server.log()}")


@pytest.mark.parametrize(
    ("form", "log_format", "ok"),
    [(encoded, "json", True), (raw, "text", False), (encoded, "text", False)],
    ids=["encoded-syncs-json-log", "raw-refused-text-log", "wrong-token-text-log"],
)
async def test_server_process_never_shows_the_token(
    tmp_path: Path, served: Path, form: Any, log_format: str, ok: bool
) -> None:
    token = TOKENS["combined"]
    remote = await http_remote(served, token if ok else "the-right-token")
    url = remote.url("cfg.git", form(token))
    where = f"127.0.0.1:{remote.port}/cfg.git"
    server = ServerProcess(
        tmp_path,
        "tokens",
        "--repo",
        url,
        "--no-watch",
        "--log-level",
        "debug",
        "--log-format",
        log_format,
    )
    try:
        status = await _first_sync(server)
        assert status["ready"] is ok, status
        assert status["repo"] == f"http://***@{where}"
        assert_hidden(token, json.dumps(status), "/status")
        if not ok:
            assert where in status["last_sync"]["error"]
            assert_hidden(token, status["last_sync"]["error"], "the last sync error")
        page = await _get(server, "/dashboard")
        assert where in page
        assert_hidden(token, page, "/dashboard")
        assert_hidden(token, await _get(server, "/metrics"), "/metrics")
    finally:
        await asyncio.to_thread(server.stop)
        await remote.stop()
    log_text = server.log()
    assert f"http://***@{where}" in log_text
    assert_hidden(token, log_text, "the log file")
