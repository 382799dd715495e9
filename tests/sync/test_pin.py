"""The emergency pin: ``POST /admin/pin`` puts a known-good commit of the mirror back.

The git host is down (a real ``git daemon``, stopped) and the branch holds a
bad commit: the pinned commit is served, said everywhere (/status, /metrics,
the dashboard, the log), and stays served until ``POST /admin/unpin``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from server.sync.state import SyncTrigger
from server.web.auth import hash_token
from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.metrics import scrape, value
from tests.support.servers import BASIC_APP, RunningServer, ServerFactory, secret_scopes, values

BAD = "overrides:\n  chunk_size: not-a-number\n"
ADMIN_TOKEN = "pin-admin-token-0123456789abcdef"
CLIENT_TOKEN = "pin-client-token-0123456789abcdef"


def chunk(size: int) -> dict[str, str]:
    return {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", f"chunk_size: {size}")}


async def post(
    server: RunningServer, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body) if body is not None else b""
    response = await server.client.post(path, data=data, **kwargs)
    return response.status, await response.json()


async def sync(server: RunningServer) -> Any:
    return (await post(server, "/admin/refresh"))[1]["sync"]


async def incident(
    config_repo: ConfigRepo, git_daemon: GitDaemon, start_server: ServerFactory, **settings: Any
) -> tuple[RunningServer, str, str, str]:
    """Good, then a valid but unwanted commit served, then a rejected tip; the host goes down."""
    server = await start_server(git_daemon.url("config-repo"), **settings)
    good = config_repo.commit_files(chunk(640), "good")
    await server.syncer.refresh(SyncTrigger.MANUAL)
    unwanted = config_repo.commit_files(chunk(999), "valid, but it breaks the fleet")
    await server.syncer.refresh(SyncTrigger.MANUAL)
    assert server.served_sha == unwanted
    tip = config_repo.commit_files({"apps/test-app.yaml": BAD}, "bad")
    await server.syncer.refresh(SyncTrigger.MANUAL)
    assert server.served_sha == unwanted
    git_daemon.stop()
    return server, good, unwanted, tip


async def test_a_pin_serves_a_good_older_commit_with_the_host_down_and_the_tip_rejected(
    config_repo: ConfigRepo,
    git_daemon: GitDaemon,
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, good, unwanted, tip = await incident(config_repo, git_daemon, start_server)
    caplog.set_level(logging.WARNING, logger="server.sync")
    code, answer = await post(server, "/admin/pin", {"commit": good[:10], "reason": "INC-42"})
    assert code == 200, answer
    assert answer["pinned"]["commit"] == good
    assert (answer["pinned"]["by"], answer["pinned"]["reason"]) == ("loopback", "INC-42")
    assert answer["pinned"]["at"].endswith("Z")
    assert (answer["scope"], answer["served"], answer["tip"]) == ("this replica", good, tip)
    assert answer["sync"]["trigger"] == "pin"
    assert server.served_sha == good
    assert values((await server.config())[1])["chunk_size"] == 640
    assert f"pinned to {good[:12]} by loopback (INC-42)" in caplog.text

    # Syncs go on (and fail: the host is down) but never move what is served.
    assert (await sync(server))["result"] == "failed"
    assert server.served_sha == good
    status = await server.status()
    assert status["pinned"] == {**answer["pinned"], "scope": "this replica"}
    assert status["tip"] == tip
    assert status["served"]["sha"] == good
    metrics = await scrape(server)
    assert value(metrics, "lmcache_config_pinned") == 1
    assert value(metrics, "lmcache_config_pinned_commit_info", commit=good) == 1
    page = await (await server.client.get("/dashboard")).text()
    assert f'pinned to <span class="sha">{good[:12]}</span> by loopback at' in page
    assert f'tip is <span class="sha">{tip[:12]}</span>' in page
    assert unwanted != good


async def test_a_commit_that_does_not_validate_now_is_refused_with_its_errors(
    config_repo: ConfigRepo, git_daemon: GitDaemon, start_server: ServerFactory
) -> None:
    server, _, unwanted, tip = await incident(config_repo, git_daemon, start_server)
    code, answer = await post(server, "/admin/pin", {"commit": tip, "reason": "why not"})
    assert code == 409, answer
    error = answer["error"]
    assert error["code"] == "commit_rejected"
    assert any(line.startswith("apps/test-app.yaml:2:") for line in error["errors"]), error
    assert server.served_sha == unwanted
    assert (await server.status())["pinned"] is None

    code, answer = await post(server, "/admin/pin", {"commit": "0" * 40, "reason": "x"})
    assert (code, answer["error"]["code"]) == (404, "unknown_commit")
    for body in [b"{", [], {"commit": tip}, {"commit": "main", "reason": "x"},
                 {"commit": tip, "reason": "x", "extra": 1}, {"commit": tip, "reason": "a\nb"}]:  # fmt: skip
        code, answer = await post(server, "/admin/pin", body)
        assert (code, answer["error"]["code"]) == (400, "malformed_body"), body
    metrics = await scrape(server)
    assert value(metrics, "lmcache_config_pinned") == 0


async def test_unpin_syncs_at_once_and_serves_the_tip_again(
    config_repo: ConfigRepo,
    git_daemon: GitDaemon,
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, good, unwanted, _ = await incident(config_repo, git_daemon, start_server)
    assert (await post(server, "/admin/pin", {"commit": good, "reason": "INC-7"}))[0] == 200
    git_daemon.start()
    fixed = config_repo.commit_files(chunk(768), "fixed")
    record = await sync(server)
    assert (record["result"], server.served_sha) == ("unchanged", good)  # fetched, not served
    assert (await server.status())["tip"] == fixed
    caplog.set_level(logging.WARNING, logger="server.sync")
    code, answer = await post(server, "/admin/unpin", {"reason": "fixed on main"})
    assert code == 200, answer
    assert (answer["pinned"], answer["previous"]["commit"]) == (None, good)
    assert (answer["sync"]["trigger"], answer["sync"]["result"]) == ("unpin", "updated")
    assert answer["served"] == server.served_sha == fixed
    assert f"unpinned by loopback (was {good[:12]}) (fixed on main)" in caplog.text
    assert (await server.status())["pinned"] is None
    assert value(await scrape(server), "lmcache_config_pinned") == 0
    assert 'id="pinned"' not in await (await server.client.get("/dashboard")).text()

    # Unpinned with a rejected tip: the last good commit (the one pinned) keeps serving.
    assert (await post(server, "/admin/pin", {"commit": good, "reason": "again"}))[0] == 200
    config_repo.commit_files({"apps/test-app.yaml": BAD}, "bad again")
    code, answer = await post(server, "/admin/unpin")
    assert (code, answer["sync"]["result"], answer["served"]) == (200, "rejected", good)
    assert unwanted != good


async def test_a_damaged_pin_file_is_reported_and_ignored(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    data_dir = tmp_path / "damaged"
    data_dir.mkdir()
    (data_dir / "pin.json").write_text('{"pin": {"commit": "no')
    server = await start_server(config_repo.path, data_dir=data_dir)
    status = await server.status()
    assert status["pinned"] is None
    assert "not JSON" in status["pin_problem"]
    assert server.served_sha == config_repo.head()
    page = await (await server.client.get("/dashboard")).text()
    assert "the stored pin cannot be read" in page
    code, _ = await post(server, "/admin/unpin")  # clears the damaged record
    assert code == 200
    assert not (data_dir / "pin.json").exists()
    assert (await server.status())["pin_problem"] is None


async def test_pinning_needs_an_admin_when_auth_is_on(
    tmp_path: Path, config_repo: ConfigRepo, git_daemon: GitDaemon, start_server: ServerFactory
) -> None:
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        f"clients:\n  - name: fleet\n    token_sha256: {hash_token(CLIENT_TOKEN)}\n"
        f"    apps: ['*']\nadmins:\n  - name: oncall\n    token_sha256: {hash_token(ADMIN_TOKEN)}\n"
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    server, good, _, _ = await incident(config_repo, git_daemon, start_server, auth_file=str(auth))
    body = {"commit": good, "reason": "INC-9"}
    for path in ("/admin/pin", "/admin/unpin"):
        assert (await post(server, path, body))[0] == 401
        client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        assert (await post(server, path, body, headers=client))[0] == 403
    code, answer = await post(server, "/admin/pin", body, headers=admin)
    assert (code, answer["pinned"]["by"], server.served_sha) == (200, "oncall", good)
    status = await (await server.client.get("/status", headers=admin)).json()
    assert status["pinned"]["by"] == "oncall"


async def test_a_rotated_secret_rebuilds_the_pinned_commit_and_nothing_else(
    tmp_path: Path, git_daemon: GitDaemon, start_server: ServerFactory
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "cache-password").write_text("old\n")
    repo = ConfigRepo(tmp_path / "secret-repo")
    uses_secret = "overrides:\n  remote_url: lm://u:${secret:cache-password}@c:1\n"
    pinned = repo.commit_files({"apps/test-app.yaml": uses_secret}, "good")
    server = await start_server(
        git_daemon.url("secret-repo"),
        secrets_dir=str(secrets),
        secret_scopes=secret_scopes(tmp_path, {"cache-password": ["test-app"]}),
    )
    repo.commit_files({"apps/test-app.yaml": uses_secret.replace("c:1", "c:2")}, "unwanted")
    await server.syncer.refresh(SyncTrigger.MANUAL)
    assert server.served_sha != pinned
    assert (await post(server, "/admin/pin", {"commit": pinned, "reason": "INC-3"}))[0] == 200
    (secrets / "cache-password").write_text("new\n")
    await server.syncer.refresh(SyncTrigger.MANUAL)
    assert server.served_sha == pinned
    assert values((await server.config())[1])["remote_url"] == "lm://u:new@c:1"
