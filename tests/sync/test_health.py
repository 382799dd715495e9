"""Health semantics: alive, ready with a snapshot, and honestly stale while git is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.base.clock import Moment
from server.sync.freshness import freshness
from server.sync.state import SyncRecord, SyncResult, SyncState, SyncTrigger
from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.metrics import scrape, value
from tests.support.servers import ServerFactory

STALE_AFTER = 2.0


async def test_stale_when_the_remote_stays_down(
    tmp_path: Path, git_daemon: GitDaemon, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "upstream")
    good = repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 16}\n"})
    server = await start_server(git_daemon.url("upstream"), stale_after=STALE_AFTER)

    git_daemon.stop()
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "failed"
    # Let the last success age past the threshold while every fetch keeps failing: a fixed
    # sleep on purpose, since what is tested is real time passing (no condition to poll).
    await asyncio.sleep(STALE_AFTER + 0.2)
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "failed"

    status = await server.status()
    assert status["stale"] is True
    assert status["stale_reason"].startswith("no successful sync for ")
    assert "git://127.0.0.1" in status["stale_reason"]  # the last error says why
    assert status["seconds_since_last_successful_sync"] > STALE_AFTER
    assert status["consecutive_failures"] == 2
    # Still alive, still ready and still serving the last good commit: workers keep working.
    assert (await server.client.get("/healthz")).status == 200
    assert (await server.client.get("/readyz")).status == 200
    code, answer = await server.config()
    assert (code, answer["version"]) == (200, good)

    samples = await scrape(server)
    assert value(samples, "lmcache_config_stale") == 1
    assert value(samples, "lmcache_config_seconds_since_last_successful_sync") > STALE_AFTER
    assert value(samples, "lmcache_config_sync_failures_total", trigger="poll") == 2
    assert value(samples, "lmcache_config_sync_attempts_total", trigger="poll") == 2
    assert value(samples, "lmcache_config_sync_consecutive_failures") == 2

    # The remote comes back: one good fetch and the config is fresh again.
    git_daemon.start()
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "unchanged"
    status = await server.status()
    assert (status["stale"], status["stale_reason"], status["consecutive_failures"]) == (
        False,
        None,
        0,
    )
    assert value(await scrape(server), "lmcache_config_stale") == 0


async def test_never_synced_server_is_not_ready(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    server = await start_server(tmp_path / "no-such-repo")
    assert (await server.client.get("/healthz")).status == 200
    readyz = await server.client.get("/readyz")
    assert readyz.status == 503
    assert (await readyz.json())["ready"] is False
    status = await server.status()
    assert status["ready"] is False
    assert status["seconds_since_last_successful_sync"] is None
    samples = await scrape(server)
    assert value(samples, "lmcache_config_seconds_since_last_successful_sync") == float("inf")
    assert value(samples, "lmcache_config_sync_failures_total", trigger="startup") == 1


def _failed(at: float) -> SyncRecord:
    return SyncRecord(
        trigger=SyncTrigger.POLL,
        started_at=at,
        finished_at=at,
        result=SyncResult.FAILED,
        old_commit=None,
        new_commit=None,
        error="fetch failed: connection refused",
    )


def _at(monotonic: float, *, wall: float = 1_800_000_000.0) -> Moment:
    return Moment(wall=wall, monotonic=monotonic)


def test_freshness_rules() -> None:
    state = SyncState()
    # Nothing has succeeded yet: the clock runs from startup.
    assert not freshness(state, started=_at(100.0), stale_after=60, now=_at(150.0)).stale
    never = freshness(state, started=_at(100.0), stale_after=60, now=_at(200.0))
    assert never.stale
    assert never.reason == "no successful sync since startup 100 s ago (--stale-after 60 s)"

    state.last_success = _at(1000.0)
    fresh = freshness(state, started=_at(0.0), stale_after=60, now=_at(1059.0))
    assert (fresh.stale, fresh.since_last_success) == (False, 59.0)
    state.last_sync = _failed(1100.0)
    stale = freshness(state, started=_at(0.0), stale_after=60, now=_at(1100.0))
    assert stale.stale
    assert stale.reason == (
        "no successful sync for 100 s (--stale-after 60 s); "
        "last error: fetch failed: connection refused"
    )
    state.task_error = "RuntimeError: boom"
    crashed = freshness(state, started=_at(0.0), stale_after=60, now=_at(1100.0))
    assert crashed.reason is not None
    assert crashed.reason.endswith("the sync task crashed: RuntimeError: boom")


def test_freshness_ignores_the_wall_clock() -> None:
    """Durations come from the monotonic clock: stepping the wall clock changes nothing."""
    state = SyncState(last_success=_at(1000.0, wall=1_800_000_000.0))
    stepped_back = _at(1100.0, wall=1_800_000_000.0 - 3600)
    stale = freshness(state, started=_at(0.0), stale_after=60, now=stepped_back)
    assert (stale.stale, stale.since_last_success) == (True, 100.0)
    stepped_forward = _at(1010.0, wall=1_800_000_000.0 + 3600)
    fresh = freshness(state, started=_at(0.0), stale_after=60, now=stepped_forward)
    assert (fresh.stale, fresh.since_last_success) == (False, 10.0)
