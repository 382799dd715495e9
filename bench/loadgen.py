"""Load generation: wrk with a Lua script sending the client's body as a GET, or a fallback.

wrk (Debian's package, installed by ``make bench``) is the load generator. Where
it is missing, an aiohttp client in a separate process does the same job
(``python -m bench.loadgen``); its figures are lower (it is Python) but the
ratios hold, since the baseline is measured with the same generator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRK_SCRIPT = """\
wrk.method = "GET"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%f,"p50_ms":%f,"p99_ms":%f,"errors":%d,"non_2xx":%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.connect + e.read + e.write + e.timeout, e.status))
end
"""

CONNECTIONS = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and non-2xx answers


def generator_name() -> str:
    return "wrk" if shutil.which("wrk") else "aiohttp client (wrk not installed)"


def run_load(url: str, body: bytes, seconds: float, connections: int = CONNECTIONS) -> LoadResult:
    """Send GETs with ``body`` to ``url`` for ``seconds`` from a separate process."""
    with tempfile.TemporaryDirectory() as scratch:
        body_file = Path(scratch) / "body.json"
        body_file.write_bytes(body)
        if shutil.which("wrk"):
            script = Path(scratch) / "client.lua"
            script.write_text(WRK_SCRIPT)
            command = [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "-s",
                str(script),
                url,
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "bench.loadgen",
                url,
                str(body_file),
                str(seconds),
                str(connections),
            ]
        out = subprocess.run(
            command,
            env={"BENCH_BODY_FILE": str(body_file), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    return LoadResult(
        requests_per_second=figures["requests"] / figures["seconds"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        requests=figures["requests"],
        errors=figures["errors"] + figures["non_2xx"],
    )


async def _client_load(url: str, body: bytes, seconds: float, connections: int) -> dict[str, float]:
    import aiohttp  # noqa: PLC0415 - only the fallback needs it

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                async with session.get(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": 0,
        "non_2xx": errors,
    }


if __name__ == "__main__":
    target, body_path, duration, concurrency = sys.argv[1:5]
    result = asyncio.run(
        _client_load(target, Path(body_path).read_bytes(), float(duration), int(concurrency))
    )
    print(json.dumps(result))
