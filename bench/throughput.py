"""/config throughput and latency against a minimal aiohttp handler, measured in the same run.

Targets, in rounds so that machine noise hits every target alike: the minimal
handler (the baseline), then the server for an app without rules and one with
rules, with the access log off and on. Each round measures every target once;
the figures are medians over rounds, and each ratio is taken against the
baseline of its own round.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, write_result
from bench.loadgen import LoadResult, generator_name, run_load
from bench.workload import APP_WITH_RULES, APP_WITHOUT_RULES, client_body, generate_repo

ROUNDS = 3
SECONDS = 4.0
WARMUP_SECONDS = 1.0
APPS = 100


def _targets(servers: dict[str, ServerProcess]) -> dict[str, str]:
    return {
        "baseline": servers["baseline"].base + "/config?appId=" + APP_WITHOUT_RULES,
        "no rules": servers["quiet"].base + "/config?appId=" + APP_WITHOUT_RULES,
        "rules": servers["quiet"].base + "/config?appId=" + APP_WITH_RULES,
        "no rules, access log": servers["logged"].base + "/config?appId=" + APP_WITHOUT_RULES,
        "rules, access log": servers["logged"].base + "/config?appId=" + APP_WITH_RULES,
    }


def _median(results: list[LoadResult], field: str) -> float:
    return float(statistics.median(getattr(result, field) for result in results))


def run(rounds: int = ROUNDS, seconds: float = SECONDS) -> dict[str, Any]:
    body = client_body()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        generate_repo(base / "repo", APPS)
        common = ("--repo", str(base / "repo"), "--poll-interval", "3600", "--no-watch")
        servers = {
            "baseline": ServerProcess(command=[sys.executable, "-m", "bench.minimal_server"]),
            "quiet": ServerProcess(*common, "--data-dir", str(base / "quiet")),
            "logged": ServerProcess(*common, "--data-dir", str(base / "logged"), access_log=True),
        }
        try:
            targets = _targets(servers)
            samples: dict[str, list[LoadResult]] = {name: [] for name in targets}
            for _ in range(rounds):
                for name, url in targets.items():
                    run_load(url, body, WARMUP_SECONDS)
                    samples[name].append(run_load(url, body, seconds))
        finally:
            for server in servers.values():
                server.stop()
    figures: dict[str, Any] = {}
    for name, results in samples.items():
        baselines = samples["baseline"]
        figures[name] = {
            "requests_per_second": _median(results, "requests_per_second"),
            "p50_ms": _median(results, "p50_ms"),
            "p99_ms": _median(results, "p99_ms"),
            "throughput_ratio": statistics.median(
                r.requests_per_second / b.requests_per_second
                for r, b in zip(results, baselines, strict=True)
            ),
            "p99_ratio": statistics.median(
                r.p99_ms / b.p99_ms for r, b in zip(results, baselines, strict=True)
            ),
            "errors": sum(r.errors for r in results),
            "rounds": [r.__dict__ for r in results],
        }
    result = {
        "load_generator": generator_name(),
        "connections": 32,
        "seconds_per_sample": seconds,
        "rounds": rounds,
        "body_bytes": len(body),
        "apps": APPS,
        "targets": figures,
    }
    write_result("throughput", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"/config throughput, {result['body_bytes']} B GET body, {result['load_generator']}, "
        f"{result['connections']} connections, median of {result['rounds']} rounds "
        f"x {result['seconds_per_sample']:g} s"
    )
    print("  targets: no rules >= 0.8x baseline, rules >= 0.6x, p99 <= 2x baseline")
    print(
        f"  {'target':22s} {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'x base':>7s} {'p99 x':>6s} {'errors':>6s}"
    )
    for name, fig in result["targets"].items():
        print(
            f"  {name:22s} {fig['requests_per_second']:8.0f} {fig['p50_ms']:7.2f} "
            f"{fig['p99_ms']:7.2f} {fig['throughput_ratio']:7.2f} {fig['p99_ratio']:6.2f} "
            f"{fig['errors']:6d}"
        )


if __name__ == "__main__":
    print_table(run())
