"""Three server processes, one upstream behind a real git daemon: a push reaches all three."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess

POLL_INTERVAL = "0.5"
REPLICAS = 3


def test_three_replicas_converge_on_a_pushed_commit(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream.git"
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(upstream)], check=True
    )
    work = ConfigRepo(tmp_path / "work")
    work.git("remote", "add", "origin", str(upstream))
    old = work.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"}, "initial")
    work.git("push", "--quiet", "origin", "main")

    daemon = GitDaemon(tmp_path)
    daemon.start()
    servers = [
        ServerProcess(
            tmp_path,
            f"replica-{i}",
            "--repo",
            daemon.url("upstream.git"),
            "--poll-interval",
            POLL_INTERVAL,
            "--log-format",
            "json",
        )
        for i in range(REPLICAS)
    ]
    try:
        assert [server.wait_ready() for server in servers] == [old] * REPLICAS

        new = work.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 1024}\n"}, "big")
        work.git("push", "--quiet", "origin", "main")
        pushed_at = time.monotonic()

        # What workers see meanwhile: ask every replica in turn until all serve the push.
        seen: list[list[tuple[int, str, int | None]]] = [[] for _ in servers]
        first_new_at: list[float | None] = [None] * REPLICAS
        deadline = pushed_at + 60
        while any(at is None for at in first_new_at) and time.monotonic() < deadline:
            for i, server in enumerate(servers):
                status, answer = server.json("/config?appId=test-app")
                version = answer.get("version", "")
                chunk = {c["key"]: c["value"] for c in answer.get("configs", [])}.get("chunk_size")
                seen[i].append((status, version, chunk))
                if version == new and first_new_at[i] is None:
                    first_new_at[i] = time.monotonic() - pushed_at
            time.sleep(0.01)
        converged = time.monotonic() - pushed_at

        assert all(at is not None for at in first_new_at), f"not converged: {first_new_at}"
        for answers in seen:
            # Every answer is whole and from one of the two commits, never an error...
            assert {(s, v, c) for s, v, c in answers} <= {(200, old, 256), (200, new, 1024)}
            # ...and a replica never goes back to the old commit once it served the new one.
            versions = [v for _, v, _ in answers]
            assert versions == sorted(versions, key=lambda v: v == new)
        reported = {server.json("/readyz")[1]["version"] for server in servers}
        assert reported == {new}
        print(
            f"\n{REPLICAS} replicas, --poll-interval {POLL_INTERVAL}s: converged "
            f"{converged:.2f}s after the push; per replica: "
            + ", ".join(f"{at:.2f}s" for at in first_new_at if at is not None)
            + f"; {sum(map(len, seen))} answers sampled meanwhile, all 200"
        )
        assert [server.stop() for server in servers] == [0] * REPLICAS
    finally:
        for server in servers:
            server.kill()
        daemon.stop()

    for server in servers:
        syncs = [
            line
            for line in map(json.loads, server.log().splitlines())
            if line.get("event") == "sync" and line["result"] == "updated"
        ]
        assert [line["serving"] for line in syncs] == [old[:12], new[:12]]
