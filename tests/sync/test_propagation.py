"""Change propagation: webhooks, ref watching, polling backoff, refs, restarts, damage."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from server.sync.state import SyncTrigger
from server.web.authorize import is_loopback
from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, BASIC_GLOBAL, RunningServer, ServerFactory
from tests.support.waiting import wait_until_async
from tests.support.webhooks import SECRET, github_headers, push_body


class Upstream:
    """A bare upstream repository and an author's clone that pushes to it."""

    def __init__(self, base: Path, push_url: str | None = None) -> None:
        self.bare = base / "upstream.git"
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare)],
            check=True,
        )
        self.author = ConfigRepo(base / "author")
        self.author.git("remote", "add", "origin", push_url or str(self.bare))
        self.author.commit_files({"global.yaml": BASIC_GLOBAL, "apps/test-app.yaml": BASIC_APP})
        self.push()

    def push(self, *args: str) -> str:
        self.author.git("push", "--quiet", *args, "origin", "HEAD:refs/heads/main")
        return self.author.head()

    def change(self, chunk_size: int, message: str = "change") -> str:
        self.author.commit_files(
            {"apps/test-app.yaml": f"overrides: {{chunk_size: {chunk_size}}}\n"}, message
        )
        return self.push()


def syncs_by(status: dict[str, Any], trigger: str) -> list[dict[str, Any]]:
    return [record for record in status["recent_syncs"] if record["trigger"] == trigger]


@pytest.fixture
def push_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    daemon = GitDaemon(tmp_path, allow_push=True)
    daemon.start()
    yield daemon
    daemon.stop()


async def test_push_webhook_outage_backoff_and_catch_up(
    tmp_path: Path, push_daemon: GitDaemon, start_server: ServerFactory
) -> None:
    upstream = Upstream(tmp_path, push_url=push_daemon.url("upstream.git"))
    server = await start_server(
        push_daemon.url("upstream.git"),
        webhook_secret=SECRET,
        poll_interval=60.0,
        max_backoff=600.0,
    )
    assert server.served_sha == upstream.author.head()

    # push -> webhook -> served, without waiting for a poll
    pushed = upstream.change(1024, "bigger chunks")
    body = push_body()
    response = await server.client.post("/webhook/github", data=body, headers=github_headers(body))
    assert response.status == 202
    assert (await response.json())["accepted"] is True
    await wait_until_async(lambda: server.served_sha == pushed, "the pushed commit to be served")
    assert syncs_by(await server.status(), "webhook")[0]["new_commit"] == pushed

    # The git server goes away: answers continue from the snapshot, /status shows it.
    push_daemon.stop()
    upstream.author.git("remote", "set-url", "origin", str(upstream.bare))
    missed = upstream.change(2048, "while the git server is down")
    for _ in range(2):
        await server.syncer.refresh(SyncTrigger.MANUAL)
    status, answer = await server.config()
    assert (status, answer["version"]) == (200, pushed)
    report = await server.status()
    assert report["consecutive_failures"] == 2
    assert report["last_sync"]["result"] == "failed"
    assert report["backoff_seconds"] == 240.0  # 60 s doubled per failure
    assert datetime.fromisoformat(report["next_poll_at"]).timestamp() > time.time() + 200

    # It comes back: the next trigger catches up and the backoff resets.
    push_daemon.start()
    body = push_body()
    await server.client.post("/webhook/github", data=body, headers=github_headers(body))
    await wait_until_async(lambda: server.served_sha == missed, "catch-up after the outage")
    report = await server.status()
    assert report["consecutive_failures"] == 0
    assert report["backoff_seconds"] == 0.0


async def test_local_upstream_commit_is_served_without_a_poll(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    upstream = Upstream(tmp_path)
    server = await start_server(upstream.bare, poll_interval=3600.0, watch=True)
    assert (await server.status())["watching"] == str(upstream.bare)
    pushed = upstream.change(4096)
    await wait_until_async(lambda: server.served_sha == pushed, "the watched push to be served")
    assert syncs_by(await server.status(), "watch")[0]["new_commit"] == pushed

    # A burst of ref updates (one push of 10 branches) folds into at most two syncs.
    before = len(syncs_by(await server.status(), "watch"))
    for index in range(10):
        upstream.author.git("branch", f"feature-{index}")
    upstream.author.git("push", "--quiet", "origin", *[f"feature-{i}" for i in range(10)])
    await wait_until_async(
        lambda: len(syncs_by_state(server, "watch")) > before, "the burst to cause a sync"
    )
    # A fixed sleep on purpose: let any late event arrive before counting. What is checked
    # is that no third sync comes, and no condition to poll for can show an absence.
    await asyncio.sleep(0.5)
    assert len(syncs_by_state(server, "watch")) - before <= 2


def syncs_by_state(server: RunningServer, trigger: str) -> list[Any]:
    return [record for record in server.syncer.state.recent if record.trigger == trigger]


async def test_webhook_signatures_and_refs(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    server = await start_server(upstream.bare, webhook_secret=SECRET)
    client = server.client
    body = push_body()

    async def post(path: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        response = await client.post(path, data=data, headers=headers)
        return response.status, await response.json()

    # invalid and missing signatures: 401, no sync queued
    bad = github_headers(body, secret="wrong")
    assert (await post("/webhook/github", body, bad))[0] == 401
    missing = {k: v for k, v in github_headers(body).items() if k != "X-Hub-Signature-256"}
    status, answer = await post("/webhook/github", body, missing)
    assert (status, answer["error"]["code"]) == (401, "unauthorized")
    # a captured body replayed with another body's signature: 401
    other = push_body("refs/heads/other")
    assert (await post("/webhook/github", body, github_headers(other)))[0] == 401
    # a push to another ref: acknowledged, ignored
    status, answer = await post("/webhook/github", other, github_headers(other))
    assert (status, answer["accepted"]) == (202, False)
    # GitHub's ping
    ping = b'{"zen": "hi"}'
    assert (await post("/webhook/github", ping, github_headers(ping, event="ping")))[1]["pong"]
    await server.syncer.refresh(SyncTrigger.MANUAL)
    assert syncs_by(await server.status(), "webhook") == []

    # a valid push: 202 at once, and a sync
    pushed = upstream.change(8)
    headers = github_headers(body)
    status, answer = await post("/webhook/github", body, headers)
    assert (status, answer["accepted"]) == (202, True)
    await wait_until_async(lambda: server.served_sha == pushed, "webhook sync")
    # the same delivery again: acknowledged, not acted on
    status, answer = await post("/webhook/github", body, headers)
    assert (status, answer["reason"]) == (200, "delivery already received")

    # GitLab: the token itself; Gitea: a bare hex HMAC. Auto-detected on /webhook.
    gitlab = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}
    assert (await post("/webhook/gitlab", body, gitlab))[0] == 202
    assert (await post("/webhook", body, gitlab))[0] == 202
    assert (await post("/webhook/gitlab", body, {**gitlab, "X-Gitlab-Token": "nope"}))[0] == 401
    gitea_signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    gitea = {"X-Gitea-Event": "push", "X-Gitea-Signature": gitea_signature}
    assert (await post("/webhook/gitea", body, gitea))[0] == 202
    assert (await post("/webhook", body, gitea))[0] == 202
    assert (await post("/webhook/gitea", body + b" ", gitea))[0] == 401
    assert (await post("/webhook", body, {}))[0] == 400
    assert (await post("/webhook/bitbucket", body, {}))[0] == 404


async def test_webhooks_refused_without_a_secret(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    upstream = Upstream(tmp_path)
    server = await start_server(upstream.bare)
    body = push_body()
    response = await server.client.post("/webhook/github", data=body, headers=github_headers(body))
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "webhook_disabled"


async def test_webhook_secret_from_file(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    server = await start_server(upstream.bare, webhook_secret_file=str(secret_file))
    body = push_body()
    response = await server.client.post("/webhook/github", data=body, headers=github_headers(body))
    assert response.status == 202


async def test_admin_refresh_answers_with_served_commit(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    upstream = Upstream(tmp_path)
    server = await start_server(upstream.bare)
    pushed = upstream.change(16)
    response = await server.client.post("/admin/refresh")
    answer = await response.json()
    assert response.status == 200
    assert answer["served"] == pushed
    assert answer["sync"]["trigger"] == "manual"
    assert answer["sync"]["result"] == "updated"
    assert [is_loopback(a) for a in ("127.0.0.1", "::1", "10.0.0.1", None)] == [
        True,
        True,
        False,
        False,
    ]


async def test_bursts_coalesce(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    server = await start_server(upstream.bare)
    before = len(server.syncer.state.recent)
    for _ in range(50):
        server.syncer.request_sync(SyncTrigger.WEBHOOK)
    await server.syncer.refresh(SyncTrigger.MANUAL)
    ran = len(server.syncer.state.recent) - before
    assert 1 <= ran <= 2
    assert server.syncer.state.coalesced >= 49


async def test_force_push_is_followed(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    first = upstream.change(32, "to be rewritten")
    server = await start_server(upstream.bare)
    assert server.served_sha == first
    upstream.author.git("reset", "--quiet", "--hard", "HEAD~1")
    upstream.author.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 64}\n"}, "rewrite")
    rewritten = upstream.push("--force")
    await server.syncer.refresh(SyncTrigger.MANUAL)
    assert server.served_sha == rewritten
    assert (await server.config())[1]["configs"][0]["value"] == 64


async def test_deleted_branch_keeps_last_good(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    upstream.author.git("push", "--quiet", "origin", "HEAD:refs/heads/release")
    server = await start_server(upstream.bare, ref="release")
    served = server.served_sha
    upstream.author.git("push", "--quiet", "origin", "--delete", "release")
    record = await server.syncer.refresh(SyncTrigger.MANUAL)
    assert record.result == "failed"
    assert "ref 'release' not found" in (record.error or "")
    status, answer = await server.config()
    assert (status, answer["version"]) == (200, served)


async def test_tag_and_sha_pins(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    tagged = upstream.author.head()
    upstream.author.git("tag", "v1")
    upstream.author.git("push", "--quiet", "origin", "v1")
    newer = upstream.change(128)

    by_tag = await start_server(upstream.bare, ref="v1")
    assert by_tag.served_sha == tagged
    # Moving the tag moves the server.
    upstream.author.git("tag", "--force", "v1", newer)
    upstream.author.git("push", "--quiet", "--force", "origin", "v1")
    await by_tag.syncer.refresh(SyncTrigger.MANUAL)
    assert by_tag.served_sha == newer

    by_sha = await start_server(upstream.bare, ref=tagged)
    assert by_sha.served_sha == tagged
    upstream.change(256)
    await by_sha.syncer.refresh(SyncTrigger.MANUAL)
    assert by_sha.served_sha == tagged
    await wait_until_async(lambda: by_sha.syncer.state.last_sync is not None, "a sync")
    assert (await by_sha.status())["next_poll_at"] is None  # a pinned commit is never polled


async def test_restart_after_rejected_commit_serves_last_good(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    upstream = Upstream(tmp_path)
    good = upstream.author.head()
    data_dir = tmp_path / "data"
    server = await start_server(upstream.bare, data_dir=data_dir)
    upstream.author.commit_files({"apps/test-app.yaml": "overrides: {chunk_sise: 1}\n"}, "typo")
    bad = upstream.push()
    assert (await server.syncer.refresh(SyncTrigger.MANUAL)).result == "rejected"
    await server.client.close()

    restarted = await start_server(upstream.bare, data_dir=data_dir)
    assert restarted.served_sha == good
    report = await restarted.status()
    assert report["last_rejected"]["commit"]["sha"] == bad
    assert [r["result"] for r in report["recent_syncs"]] == ["rejected", "restored"]


async def test_stale_lock_files_from_a_killed_fetch_are_cleared(
    tmp_path: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = Upstream(tmp_path)
    data_dir = tmp_path / "data"
    server = await start_server(upstream.bare, data_dir=data_dir)
    await server.client.close()
    mirror = data_dir / "mirror.git"
    for leftover in ("refs/remotes/origin/main.lock", "packed-refs.lock", "shallow.lock"):
        (mirror / leftover).write_text("")
    pushed = upstream.change(512)
    caplog.set_level(logging.WARNING)
    restarted = await start_server(upstream.bare, data_dir=data_dir)
    assert restarted.served_sha == pushed
    assert "removed stale git lock file refs/remotes/origin/main.lock" in caplog.text


def _blob_path(mirror: Path, sha: str, path: str) -> Path:
    blob = subprocess.run(
        ["git", "--git-dir", str(mirror), "rev-parse", f"{sha}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return mirror / "objects" / blob[:2] / blob[2:]


async def test_damaged_mirror_is_recloned_never_served_wrong(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    upstream = Upstream(tmp_path)
    good = upstream.author.head()
    data_dir = tmp_path / "data"
    server = await start_server(upstream.bare, data_dir=data_dir)
    await server.client.close()
    mirror = data_dir / "mirror.git"
    blob = _blob_path(mirror, good, "apps/test-app.yaml")
    assert blob.exists(), "expected loose objects in a small mirror"
    blob.unlink()

    restarted = await start_server(upstream.bare, data_dir=data_dir)
    assert restarted.served_sha == good
    _, answer = await restarted.config()
    assert {item["key"]: item["value"] for item in answer["configs"]}["chunk_size"] == 512

    # Damaged and the remote unreachable: not ready, rather than anything wrong.
    await restarted.client.close()
    _blob_path(mirror, good, "apps/test-app.yaml").unlink()
    away = upstream.bare.with_name("moved-away.git")
    upstream.bare.rename(away)
    down = await start_server(upstream.bare, data_dir=data_dir)
    assert down.served_sha is None
    assert (await down.config())[0] == 503
    assert (await down.status())["last_sync"]["result"] == "failed"
    away.rename(upstream.bare)
    await down.syncer.refresh(SyncTrigger.MANUAL)
    assert down.served_sha == good


async def test_garbage_state_file_is_ignored(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    data_dir = tmp_path / "data"
    server = await start_server(upstream.bare, data_dir=data_dir)
    await server.client.close()
    (data_dir / "state.json").write_text('{"last_good": "not a sha"')
    restarted = await start_server(upstream.bare, data_dir=data_dir)
    assert restarted.served_sha == upstream.author.head()


async def test_shallow_fetch(tmp_path: Path, start_server: ServerFactory) -> None:
    upstream = Upstream(tmp_path)
    for size in range(1, 30):
        upstream.author.commit_files({"apps/test-app.yaml": f"overrides: {{chunk_size: {size}}}\n"})
    tip = upstream.push()
    server = await start_server(upstream.bare, data_dir=tmp_path / "data", depth=1)
    assert server.served_sha == tip
    count = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "data" / "mirror.git"), "rev-list", "--count", tip],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert count == "1"
