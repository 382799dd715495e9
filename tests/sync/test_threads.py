"""Git work that serves and git work that only shows run on threads of their own.

A sync (which decides what workers get) never waits behind a history walk or
a past-commit view, and those never wait behind a fetch that hangs. Each test
holds one thread busy with a call that blocks until released, and shows that
the other kind of work goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import threading

from server.sync.state import SyncTrigger
from server.web.keys import VIEWER
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, ServerFactory, values


async def test_a_sync_goes_on_while_the_view_thread_is_busy(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    release = threading.Event()
    busy = asyncio.ensure_future(server.app[VIEWER]._thread.run(release.wait, 60))
    try:
        change = config_repo.commit_files(
            {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", "chunk_size: 768")}
        )
        record = await asyncio.wait_for(server.syncer.refresh(SyncTrigger.MANUAL), timeout=30)
        assert (record.result, record.new_commit) == ("updated", change)
        assert values((await server.config())[1])["chunk_size"] == 768
        assert not busy.done()  # the view thread was held all along
    finally:
        release.set()
        await busy


async def test_history_answers_while_the_sync_thread_is_busy(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    release = threading.Event()
    busy = asyncio.ensure_future(server.syncer._thread.run(release.wait, 60))
    try:
        response = await asyncio.wait_for(
            server.client.get("/history", params={"app": "test-app"}), timeout=30
        )
        assert response.status == 200
        history = await response.json()
        assert [commit["sha"] for commit in history["commits"]] == [config_repo.head()]
        assert not busy.done()  # the sync thread was held all along
    finally:
        release.set()
        await busy


async def test_views_say_retry_while_the_mirror_is_cloned_again(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    """The sync thread discards a damaged mirror and clones it again; a view meanwhile
    gets a 503 that says so, never a 500 or a false "not in the mirror"."""
    server = await start_server(config_repo.path)
    served = server.served_sha
    assert served is not None
    server.syncer.mirror.discard()  # what the sync thread does to a damaged mirror
    for path, params in (
        ("/history", {"app": "test-app"}),
        ("/dashboard/apps/test-app", {"commit": served[:12], "from": served, "to": served}),
    ):
        response = await server.client.get(path, params=params)
        assert response.status == 503, await response.text()
    assert (await server.config())[0] == 200  # workers are answered from memory throughout
    await server.syncer.sync(SyncTrigger.MANUAL)
    response = await server.client.get("/history", params={"app": "test-app"})
    assert response.status == 200


async def test_a_history_walk_steps_aside_while_a_build_runs(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    """Python runs one thread at a time: a walk on the view thread would halve the CPU a
    build on the sync thread gets, so it waits while one runs (base.tasks.Precedence)."""
    server = await start_server(config_repo.path)
    precedence = server.app[VIEWER]._precedence
    with precedence.serving():  # a build is running
        walk = asyncio.ensure_future(server.client.get("/history", params={"app": "test-app"}))
        await asyncio.sleep(0.5)  # a walk of one commit takes milliseconds
        assert not walk.done()
    response = await asyncio.wait_for(walk, timeout=30)
    assert response.status == 200
    history = await response.json()
    assert [commit["sha"] for commit in history["commits"]] == [config_repo.head()]
    assert history["complete"] is True  # the time it waited is not the walk's own
    assert precedence.stepped_aside >= 0.4


async def test_a_build_that_never_ends_holds_a_walk_only_so_long(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    precedence = server.app[VIEWER]._precedence
    precedence.max_wait = 0.1
    with precedence.serving():
        response = await asyncio.wait_for(
            server.client.get("/history", params={"app": "test-app"}), timeout=30
        )
        assert response.status == 200  # answered while the "build" still runs
        assert [c["sha"] for c in (await response.json())["commits"]] == [config_repo.head()]


async def test_every_build_runs_as_work_that_serves(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    builder = server.syncer._builder
    precedence = server.app[VIEWER]._precedence
    assert builder._precedence is precedence  # one per process, shared
    reader, seen = builder._reader, []
    load_commit = reader.load_commit

    def observed(*args: object, **kwargs: object) -> object:
        seen.append(precedence.serving_now)
        return load_commit(*args, **kwargs)

    reader.load_commit = observed
    change = config_repo.commit_files(
        {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", "chunk_size: 640")}
    )
    record = await asyncio.wait_for(server.syncer.refresh(SyncTrigger.MANUAL), timeout=30)
    assert (record.result, record.new_commit) == ("updated", change)
    assert seen == [True]
    assert not precedence.serving_now  # and it ends with the build
