"""A fleet restart: 5,000 workers connecting at once, while 500 slow connections are cut.

Each worker opens its own connection (as the LMCache client does: one request
per process start) and sends the real client's body; every one must be
answered 200 within the client's 10 s timeout, on one server process, while
500 slowloris connections (one byte a second) are held open against the same
server and cut by ``--header-timeout``. This is the trade-off of the
connection guard measured from the side it must not hurt.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ServerProcess, get_json, write_result
from bench.workload import APP_WITHOUT_RULES, client_body, generate_repo

WORKERS = 5_000
SLOW = 500
CLIENT_TIMEOUT = 10.0
HEADER_TIMEOUT = 3


async def _slowloris(port: int, stop: asyncio.Event) -> int:
    """Hold a connection sending a byte a second; return how many seconds it lasted."""
    started = time.monotonic()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /config HTTP/1.1\r\nHost")
        while not stop.is_set():
            await asyncio.sleep(1)
            writer.write(b"x")
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    return round(time.monotonic() - started)


async def _worker(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        async with session.get(url, data=body, headers={"Content-Type": "application/json"}) as r:
            await r.read()
            return r.status, time.perf_counter() - started
    except (aiohttp.ClientError, TimeoutError):
        return 0, time.perf_counter() - started


async def _burst(port: int) -> dict[str, Any]:
    stop = asyncio.Event()
    slow = [asyncio.create_task(_slowloris(port, stop)) for _ in range(SLOW)]
    await asyncio.sleep(0.5)  # the slow connections are in place
    body = client_body()
    url = f"http://127.0.0.1:{port}/config?appId={APP_WITHOUT_RULES}"
    # One connection per worker, no pooling: a restart is thousands of fresh clients.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(_worker(session, url, body) for _ in range(WORKERS)))
    elapsed = time.perf_counter() - started
    stop.set()
    lasted = await asyncio.gather(*slow)
    latencies = sorted(seconds for status, seconds in results if status == 200)
    return {
        "workers": WORKERS,
        "answered_200": len(latencies),
        "failed": WORKERS - len(latencies),
        "burst_s": elapsed,
        "p50_s": statistics.median(latencies) if latencies else None,
        "max_s": latencies[-1] if latencies else None,
        "slow_connections": SLOW,
        "slow_lasted_max_s": max(lasted),
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        generate_repo(repo, 100)
        # A header timeout shorter than the burst, so the slow connections are cut during it.
        server = ServerProcess(
            "--repo",
            str(repo),
            "--poll-interval",
            "3600",
            "--data-dir",
            f"{tmp}/data",
            "--header-timeout",
            str(HEADER_TIMEOUT),
        )
        try:
            result = asyncio.run(_burst(server.port))
            _, status = get_json(f"{server.base}/readyz")
            result["ready_after"] = bool(status and status.get("ready"))
            with urllib.request.urlopen(f"{server.base}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            result["cut_by_server"] = next(
                float(line.split()[1])
                for line in metrics.splitlines()
                if line.startswith("lmcache_config_connections_timed_out_total ")
            )
        finally:
            server.stop()
    write_result("burst", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"fleet restart: {result['workers']} workers at once, each its own connection, while "
        f"{result['slow_connections']} slowloris connections are cut; target: all 200 within "
        f"{CLIENT_TIMEOUT:g} s"
    )
    print(
        f"  answered 200: {result['answered_200']} (failed {result['failed']}), "
        f"burst {result['burst_s']:.2f} s, p50 {result['p50_s']:.2f} s, "
        f"max {result['max_s']:.2f} s; slow connections cut by the server: "
        f"{result['cut_by_server']:.0f} of {result['slow_connections']} "
        f"(--header-timeout {HEADER_TIMEOUT} s)"
    )


if __name__ == "__main__":
    print_table(run())
