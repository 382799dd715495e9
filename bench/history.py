"""History walks: their own latency, and that they never delay a push being served.

Per size (1,000 and 10,000 apps), a repository with ``COMMITS`` one-file
commits on top of the generated apps, served by a real server process that
watches it:

- ``/history?app=...`` cold (the first walk: every commit read and parsed)
  and warm (the same walk again, from the fingerprint memo);
- push-to-serve while a cold history walk of another app runs: a commit is
  made while the walk is in flight, and the time until /config answers it is
  measured (target: under 1 s, as without a walk), against the same push with
  no walk (the baseline, measured in turn with it).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, get_json, write_result
from bench.workload import APP_WITHOUT_RULES, commit_one_file, generate_repo

SIZES = (1_000, 10_000)
COMMITS = 30
PUSHES = 3


def _history_seconds(server: ServerProcess, app_id: str) -> float:
    started = time.perf_counter()
    status, body = get_json(f"{server.base}/history?app={app_id}&limit=200", timeout=600)
    if status != 200:
        raise RuntimeError(f"/history answered {status}")
    assert body["scanned"] >= 1
    return time.perf_counter() - started


def _push(server: ServerProcess, repo: Path, value: int) -> float:
    """Commit, and time until /config answers with the commit."""
    started = time.perf_counter()
    sha = commit_one_file(repo, value)
    while True:
        _, answer = get_json(f"{server.base}/config?appId={APP_WITHOUT_RULES}")
        if answer and answer["version"] == sha:
            return time.perf_counter() - started
        if time.perf_counter() - started > 120:
            raise RuntimeError("commit not served within 120 s")
        time.sleep(0.005)


def _push_during_walk(server: ServerProcess, repo: Path, app_id: str, value: int) -> float:
    """Start a cold walk, push a commit while it runs, time until the commit is served."""
    walk = threading.Thread(target=_history_seconds, args=(server, app_id))
    walk.start()
    time.sleep(0.2)  # the walk is under way on the view thread
    served = _push(server, repo, value)
    walk.join()
    return served


def run(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for apps in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            generate_repo(repo, apps)
            for value in range(COMMITS):
                commit_one_file(repo, 2000 + value)
            server = ServerProcess(
                "--repo", str(repo), "--poll-interval", "3600", "--data-dir", f"{tmp}/data"
            )
            try:
                cold = _history_seconds(server, "app-00001")
                warm = _history_seconds(server, "app-00001")
                pushes, alone = [], []
                for index in range(PUSHES):
                    alone.append(_push(server, repo, 4000 + index))
                    pushes.append(
                        _push_during_walk(server, repo, f"app-{index + 10:05d}", 3000 + index)
                    )
            finally:
                server.stop()
        results[str(apps)] = {
            "commits": COMMITS + 1,
            "history_cold_s": cold,
            "history_warm_s": warm,
            "push_during_walk_s": pushes,
            "push_during_walk_median_s": statistics.median(pushes),
            "push_alone_s": alone,
            "push_alone_median_s": statistics.median(alone),
        }
    write_result("history", results)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"history: /history over {COMMITS + 1} commits; push-to-serve while a cold walk runs "
        f"({PUSHES} pushes), target < 1 s"
    )
    print(
        f"  {'apps':>6s} {'cold s':>8s} {'warm s':>8s} {'push median s':>14s} {'push max s':>11s}"
        f" {'no walk s':>10s} {'ratio':>6s}"
    )
    for apps, row in results.items():
        ratio = row["push_during_walk_median_s"] / row["push_alone_median_s"]
        print(
            f"  {apps:>6s} {row['history_cold_s']:8.2f} {row['history_warm_s']:8.3f} "
            f"{row['push_during_walk_median_s']:14.3f} {max(row['push_during_walk_s']):11.3f}"
            f" {row['push_alone_median_s']:10.3f} {ratio:6.2f}"
        )


if __name__ == "__main__":
    print_table(run())
