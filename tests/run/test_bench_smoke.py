"""The benchmarks still run against today's server: what they read of its answers.

`make bench` is not part of CI (its figures need a quiet machine), so a change to
an answer's shape could break it unseen, as the sync record's RFC 3339 times once
broke bench.scale. This runs the parts that read the server's answers, at a tiny
size, against a real server process; it asserts shapes, never speed.
"""

from __future__ import annotations

from pathlib import Path

from bench.scale import measure_builds, measure_sync, scale_server
from bench.workload import generate_repo


def test_bench_scale_measures_a_small_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    generate_repo(repo, 20)
    builds = measure_builds(repo, tmp_path / "build")
    assert builds["cold_build_s"] > 0
    assert len(builds["rebuild_samples"]) > 0
    server = scale_server(repo, tmp_path / "data")
    try:
        assert measure_sync(server, repo) > 0
    finally:
        server.stop()
