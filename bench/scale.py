"""Scale: repositories of 100, 1,000 and 10,000 apps.

Per size: the cold build of a snapshot (read the commit from the mirror, parse
and validate every file, build the snapshot) with nothing cached; the rebuild
after a one-file commit, as the running server does it (blob cache and parse
memo warm); the whole sync of such a commit in the real server process
(``POST /admin/refresh``: fetch, build, swap); the server's RSS; and /config
latency and throughput, measured in interleaved rounds so noise hits every
size alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, write_result
from bench.loadgen import run_load
from bench.workload import (
    APP_WITH_RULES,
    APP_WITHOUT_RULES,
    client_body,
    commit_one_file,
    generate_repo,
)
from server.config.loader import RepoLimits
from server.config.parse_memo import ParseMemo
from server.config.schema import load_schema
from server.config.snapshot import Snapshot
from server.git.mirror import GitMirror, MirrorReader
from server.sync.builder import SnapshotBuilder
from server.sync.secrets import SecretSource

SIZES = (100, 1_000, 10_000)
COLD_BUILDS = 3
ONE_FILE_COMMITS = 5
ROUNDS = 3
SECONDS = 3.0


def _builder(mirror: GitMirror) -> SnapshotBuilder:
    """The server's own builder (no signatures, no secrets), with empty caches."""
    builder = SnapshotBuilder(
        mirror=mirror,
        reader=MirrorReader(mirror, parse_memo=ParseMemo()),
        subdir="",
        limits=RepoLimits(),
        secrets=SecretSource(""),
    )
    builder.prepare()
    return builder


def _build(builder: SnapshotBuilder, sha: str) -> Snapshot:
    snapshot = builder.build(sha)
    assert isinstance(snapshot, Snapshot), snapshot
    return snapshot


def _mirror(repo: Path, data_dir: Path) -> GitMirror:
    return GitMirror(remote=str(repo), path=data_dir / "mirror.git", ref="main", timeout=120)


def measure_builds(repo: Path, data_dir: Path) -> dict[str, Any]:
    mirror = _mirror(repo, data_dir)
    mirror.ensure()
    mirror.fetch()
    sha = mirror.resolve()
    with contextlib.redirect_stderr(io.StringIO()):
        load_schema()  # importing lmcache logs warnings about torch; keep the table readable
    cold = []
    for _ in range(COLD_BUILDS):
        fresh = _builder(_mirror(repo, data_dir))  # no blob cache, no parse memo
        started = time.perf_counter()
        snapshot = _build(fresh, sha)
        cold.append(time.perf_counter() - started)
    warm = _builder(mirror)
    _build(warm, sha)
    rebuild = []
    for value in range(ONE_FILE_COMMITS):
        new_sha = commit_one_file(repo, 1000 + value)
        mirror.fetch()
        started = time.perf_counter()
        snapshot = _build(warm, new_sha)
        rebuild.append(time.perf_counter() - started)
        assert snapshot.commit.sha == new_sha
    return {
        "cold_build_s": statistics.median(cold),
        "cold_build_samples": cold,
        "rebuild_s": statistics.median(rebuild),
        "rebuild_samples": rebuild,
    }


def _refresh(server: ServerProcess) -> dict[str, Any]:
    request = urllib.request.Request(server.base + "/admin/refresh", method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        result: dict[str, Any] = json.load(response)
    return result


def measure_sync(server: ServerProcess, repo: Path) -> float:
    samples = []
    for value in range(ONE_FILE_COMMITS):
        sha = commit_one_file(repo, 2000 + value)
        record = _refresh(server)["sync"]
        assert record["new_commit"] == sha, record
        samples.append(float(record["ms"]) / 1000)  # its times are RFC 3339; ms is the duration
    return statistics.median(samples)


def scale_server(repo: Path, data_dir: Path) -> ServerProcess:
    """A server process that syncs only when asked (POST /admin/refresh), never by itself."""
    return ServerProcess(
        "--repo", str(repo), "--poll-interval", "3600", "--no-watch", "--data-dir", str(data_dir)
    )


def run(sizes: tuple[int, ...] = SIZES, rounds: int = ROUNDS) -> dict[str, Any]:
    body = client_body()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        servers: dict[int, ServerProcess] = {}
        try:
            for size in sizes:
                repo = base / f"repo-{size}"
                generate_repo(repo, size)
                figures[str(size)] = measure_builds(repo, base / f"build-{size}")
                server = scale_server(repo, base / f"data-{size}")
                servers[size] = server
                figures[str(size)]["ready_after_start_s"] = server.ready_after
                figures[str(size)]["sync_one_file_commit_s"] = measure_sync(server, repo)
            latency: dict[int, dict[str, list[Any]]] = {
                size: {APP_WITHOUT_RULES: [], APP_WITH_RULES: []} for size in sizes
            }
            for _ in range(rounds):
                for size, server in servers.items():
                    for app in (APP_WITHOUT_RULES, APP_WITH_RULES):
                        url = f"{server.base}/config?appId={app}"
                        run_load(url, body, 1.0)
                        latency[size][app].append(run_load(url, body, SECONDS))
            for size, server in servers.items():
                entry = figures[str(size)]
                entry["rss_mb"] = server.rss_mb()
                for app, results in latency[size].items():
                    entry[app] = {
                        "p50_ms": statistics.median(r.p50_ms for r in results),
                        "p99_ms": statistics.median(r.p99_ms for r in results),
                        "requests_per_second": statistics.median(
                            r.requests_per_second for r in results
                        ),
                        "errors": sum(r.errors for r in results),
                    }
        finally:
            for server in servers.values():
                server.stop()
    smallest = figures[str(sizes[0])]
    for entry in figures.values():
        for app in (APP_WITHOUT_RULES, APP_WITH_RULES):
            entry[app]["p50_vs_smallest"] = entry[app]["p50_ms"] / smallest[app]["p50_ms"]
    result = {"sizes": figures, "rounds": rounds, "seconds_per_sample": SECONDS}
    write_result("scale", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        "scale: targets at 10,000 apps: cold build < 5 s, one-file rebuild < 0.3 s, "
        "RSS < 250 MB, p50 within 10% of 100 apps"
    )
    print(
        f"  {'apps':>6s} {'cold s':>7s} {'rebuild s':>9s} {'sync s':>7s} {'ready s':>7s} "
        f"{'RSS MB':>7s} {'p50 ms (x100)':>15s} {'rules p50 (x100)':>17s} {'req/s':>7s}"
    )
    for size, entry in result["sizes"].items():
        plain, rules = entry[APP_WITHOUT_RULES], entry[APP_WITH_RULES]
        print(
            f"  {int(size):6d} {entry['cold_build_s']:7.2f} {entry['rebuild_s']:9.3f} "
            f"{entry['sync_one_file_commit_s']:7.3f} {entry['ready_after_start_s']:7.2f} "
            f"{entry['rss_mb']:7.1f} {plain['p50_ms']:7.2f} ({plain['p50_vs_smallest']:4.2f}) "
            f"{rules['p50_ms']:8.2f} ({rules['p50_vs_smallest']:4.2f}) "
            f"{plain['requests_per_second']:7.0f}"
        )


if __name__ == "__main__":
    print_table(run())
