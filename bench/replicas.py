"""Push-to-serve across replicas: a webhook to one of three, timed until ALL three serve.

Three replicas share a real ``redis-server`` (``--redis``); each push is followed
by one signed webhook to one replica (in turn), and the time runs until every
replica's /config answers the new commit, so the fan-out through Redis is in
the figure. The same run measures one replica without Redis (webhook to it,
until it serves), and the ratio of the medians says what the fan-out costs.
The poll interval is an hour, so polling plays no part.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import GIT_ENV, ServerProcess, free_port, summary, write_result
from bench.push_to_serve import SECRET, _push, _send_webhook, _setup, _wait_served

PUSHES = 20
REPLICAS = 3


def _redis(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test-tools`")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return process, port


def _daemon(base: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
         "--listen=127.0.0.1", f"--port={port}", "--enable=receive-pack", str(base)],
        env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _server(url: str, data: Path, *extra: str) -> ServerProcess:
    return ServerProcess(
        "--repo", url, "--poll-interval", "3600", "--data-dir", str(data), *extra,
        env={"LMCACHE_CONFIG_SERVER_WEBHOOK_SECRET": SECRET},
    )  # fmt: skip


def measure(base: Path) -> dict[str, list[float]]:
    port = free_port()
    daemon = _daemon(base, port)
    redis, redis_port = _redis(base)
    servers: list[ServerProcess] = []
    try:
        time.sleep(0.5)
        url = f"git://127.0.0.1:{port}/upstream.git"
        _setup(base, push_url=url)
        author = base / "author"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for i in range(REPLICAS):
            servers.append(
                _server(url, base / f"data-{i}", "--redis", redis_url, "--replica-name", f"r{i}")
            )
        alone = _server(url, base / "data-alone")
        servers.append(alone)
        time.sleep(2.0)  # every replica's subscriber in place
        fleet: list[float] = []
        single: list[float] = []
        for n in range(PUSHES):
            sha = _push(author, 2 * n + 2)
            started = time.perf_counter()
            _send_webhook(servers[n % REPLICAS])
            for server in servers[:REPLICAS]:
                _wait_served(server, sha, started)
            fleet.append(time.perf_counter() - started)
            # The lone replica serves a commit of its own, with the same webhook path.
            sha = _push(author, 2 * n + 3)
            started = time.perf_counter()
            _send_webhook(alone)
            single.append(_wait_served(alone, sha, started))
        return {"all_three": fleet, "one_replica": single}
    finally:
        for server in servers:
            server.stop()
        redis.terminate()
        redis.wait()
        daemon.terminate()
        daemon.wait()


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        samples = measure(Path(scratch))
    figures: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    figures["ratio_median"] = figures["all_three"]["median"] / figures["one_replica"]["median"]
    write_result("replicas", {"seconds": figures, "pushes": PUSHES, "replicas": REPLICAS})
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(f"push-to-serve with --redis, {PUSHES} pushes, webhook to one of {REPLICAS} (s)")
    print(f"  {'until':12s} {'median':>8s} {'p90':>8s} {'max':>8s}")
    for name in ("all_three", "one_replica"):
        stats = figures[name]
        print(f"  {name:12s} {stats['median']:8.3f} {stats['p90']:8.3f} {stats['max']:8.3f}")
    print(f"  all three / one replica (medians): {figures['ratio_median']:.2f}x")


if __name__ == "__main__":
    print_table(run())
