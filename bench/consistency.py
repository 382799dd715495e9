"""One commit everywhere: with ``--workers 2``, does a commit go live in both processes at once?

For a repository of 10 apps and one of 5,000, with ``--workers 1`` (the
baseline, measured in the same run) and ``--workers 2``: clients ask /config
on a new connection each (so the kernel spreads them over the processes)
while COMMITS one-file commits land in the watched upstream. Per setup:

- push-to-serve: from the commit to the first answer that carries it;
- stale answers: requests that started after some request had already been
  answered with a newer commit, and still got an older one (and the worst lag);
  the issue measured 1,968 of 59,000, up to 236 ms, before commits were staged.
"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, get_json, write_result
from bench.workload import APP_WITHOUT_RULES, commit_one_file, generate_repo

SIZES = (10, 5_000)
COMMITS = 10
CLIENTS = 4
SETTLE = 0.4  # seconds of answers after each first answer of a new commit


def _ask(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", f"/config?appId={APP_WITHOUT_RULES}")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    return str(body.get("version"))


class _Clients:
    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            version = _ask(self.port)
            self.seen.append((started, time.perf_counter(), version))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def first_answer_of(self, sha: str, since: float, timeout: float = 60) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for _, ended, version in reversed(self.seen[-2000:]):
                if version == sha:
                    return ended - since
            time.sleep(0.002)
        raise RuntimeError(f"{sha[:12]} not served within {timeout} s")


def _stale(seen: list[tuple[float, float, str]], order: dict[str, int]) -> list[float]:
    """For each request that got an older commit than one already answered: how long after."""
    first_end: dict[int, float] = {}
    for _, ended, version in sorted(seen, key=lambda answer: answer[1]):
        if version in order:
            first_end.setdefault(order[version], ended)
    lags = []
    for started, _, version in seen:
        newer = [end for index, end in first_end.items() if index > order.get(version, -1)]
        answered_before = [end for end in newer if end < started]
        if answered_before:
            lags.append(started - min(answered_before))
    return lags


def _both_serve(server: ServerProcess, sha: str, workers: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, status = get_json(server.base + "/status")
        if status and status["served"] and status["served"]["sha"] == sha:
            followers = status["process"].get("followers", [])
            caught_up = all(f["serving"] == sha and not f["behind"] for f in followers)
            if caught_up and len(followers) == workers - 1:
                return
        time.sleep(0.1)
    raise RuntimeError("the processes never served the first commit")


def measure(repo: Path, data: Path, workers: int) -> dict[str, Any]:
    first = workers * 1000  # each setup commits values of its own
    head = commit_one_file(repo, first)
    server = ServerProcess(
        "--repo", str(repo), "--workers", str(workers), "--poll-interval", "3600",
        "--data-dir", str(data),
    )  # fmt: skip
    clients = _Clients(server.port)
    try:
        _both_serve(server, head, workers)
        order = {head: 0}
        clients.start()
        push_to_serve = []
        for index in range(1, COMMITS + 1):
            sha = commit_one_file(repo, first + index)
            order[sha] = index
            push_to_serve.append(clients.first_answer_of(sha, time.perf_counter()))
            time.sleep(SETTLE)
    finally:
        clients.stop()
        server.stop()
    lags = _stale(clients.seen, order)
    return {
        "workers": workers,
        "requests": len(clients.seen),
        "push_to_serve_median_s": statistics.median(push_to_serve),
        "push_to_serve_max_s": max(push_to_serve),
        "stale_answers": len(lags),
        "worst_stale_ms": max(lags) * 1000 if lags else 0.0,
    }


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for apps in SIZES:
        with tempfile.TemporaryDirectory() as scratch:
            base = Path(scratch)
            generate_repo(base / "repo", apps)
            rows = [measure(base / "repo", base / f"data-{w}", w) for w in (1, 2)]
        one, two = rows
        results[str(apps)] = {
            "rows": rows,
            "push_to_serve_ratio": two["push_to_serve_median_s"] / one["push_to_serve_median_s"],
        }
    write_result("consistency", {"commits": COMMITS, "clients": CLIENTS, "sizes": results})
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"one commit everywhere: {COMMITS} commits while {CLIENTS} clients ask on new "
        "connections; target with --workers 2: 0 stale answers"
    )
    print(
        f"  {'apps':>6s} {'workers':>7s} {'requests':>8s} {'push->serve med':>15s} "
        f"{'max':>6s} {'stale':>6s} {'worst':>8s}"
    )
    for apps, result in results.items():
        for row in result["rows"]:
            print(
                f"  {int(apps):6d} {row['workers']:7d} {row['requests']:8d} "
                f"{row['push_to_serve_median_s']:13.3f} s {row['push_to_serve_max_s']:6.3f} "
                f"{row['stale_answers']:6d} {row['worst_stale_ms']:6.1f} ms"
            )
        print(
            f"  {'':6s} push-to-serve, --workers 2 / --workers 1: {result['push_to_serve_ratio']:.2f}x"
        )


if __name__ == "__main__":
    print_table(run())
