"""``--workers N``: /config throughput with 1 and 2 server processes on this machine.

The same wrk load (the real client's body, access log off) against, in each
round: the minimal aiohttp handler in one process and in two processes sharing
the port (the baselines), and the server with ``--workers 1`` and
``--workers 2``, for an app without rules and one with rules. The load generator runs on the same
machine and needs a core of its own at these rates, so on a 2-core machine
the second process competes with it: the figure that transfers to a bigger
machine is the server's ratio to the baseline with the same process count.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, write_result
from bench.loadgen import CONNECTIONS, LoadResult, generator_name, run_load
from bench.workload import APP_WITH_RULES, APP_WITHOUT_RULES, client_body, generate_repo

ROUNDS = 3
SECONDS = 4.0
WARMUP_SECONDS = 1.0
APPS = 100


def run(rounds: int = ROUNDS, seconds: float = SECONDS) -> dict[str, Any]:
    body = client_body()
    minimal = [sys.executable, "-m", "bench.minimal_server"]
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        generate_repo(base / "repo", APPS)
        common = ("--repo", str(base / "repo"), "--poll-interval", "3600", "--no-watch")
        servers = {
            "baseline, 1 process": ServerProcess(command=minimal),
            "baseline, 2 processes": ServerProcess(command=[*minimal, "2"]),
            "--workers 1": ServerProcess(*common, "--data-dir", str(base / "one")),
            "--workers 2": ServerProcess(
                *common, "--data-dir", str(base / "two"), "--workers", "2"
            ),
        }
        targets = {name: (server, APP_WITHOUT_RULES) for name, server in servers.items()}
        targets["--workers 1, rules"] = (servers["--workers 1"], APP_WITH_RULES)
        targets["--workers 2, rules"] = (servers["--workers 2"], APP_WITH_RULES)
        try:
            samples: dict[str, list[LoadResult]] = {name: [] for name in targets}
            for _ in range(rounds):
                for name, (server, app) in targets.items():
                    url = server.base + "/config?appId=" + app
                    run_load(url, body, WARMUP_SECONDS)
                    samples[name].append(run_load(url, body, seconds))
        finally:
            for server in servers.values():
                server.stop()

    def ratio(name: str, against: str) -> float:
        pairs = zip(samples[name], samples[against], strict=True)
        return statistics.median(a.requests_per_second / b.requests_per_second for a, b in pairs)

    figures: dict[str, Any] = {
        name: {
            "requests_per_second": statistics.median(r.requests_per_second for r in results),
            "p50_ms": statistics.median(r.p50_ms for r in results),
            "p99_ms": statistics.median(r.p99_ms for r in results),
            "errors": sum(r.errors for r in results),
            "vs_baseline_1_process": ratio(name, "baseline, 1 process"),
            "p99_vs_baseline_1_process": statistics.median(
                r.p99_ms / b.p99_ms
                for r, b in zip(results, samples["baseline, 1 process"], strict=True)
            ),
        }
        for name, results in samples.items()
    }
    figures["--workers 1"]["vs_same_process_count"] = ratio("--workers 1", "baseline, 1 process")
    figures["--workers 2"]["vs_same_process_count"] = ratio("--workers 2", "baseline, 2 processes")
    figures["--workers 1, rules"]["vs_same_process_count"] = ratio(
        "--workers 1, rules", "baseline, 1 process"
    )
    figures["--workers 2, rules"]["vs_same_process_count"] = ratio(
        "--workers 2, rules", "baseline, 2 processes"
    )
    result = {
        "load_generator": generator_name(),
        "connections": CONNECTIONS,
        "seconds_per_sample": seconds,
        "rounds": rounds,
        "body_bytes": len(body),
        "targets": figures,
        "workers_2_vs_1": ratio("--workers 2", "--workers 1"),
        "workers_2_vs_1_rules": ratio("--workers 2, rules", "--workers 1, rules"),
    }
    write_result("workers", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"--workers: /config throughput, {result['load_generator']} "
        f"(on the same machine), median of {result['rounds']} rounds"
    )
    print(
        f"  {'target':22s} {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'x base 1':>8s} {'p99 x1':>6s} {'x base same':>11s} {'errors':>6s}"
    )
    for name, fig in result["targets"].items():
        same = fig.get("vs_same_process_count")
        print(
            f"  {name:22s} {fig['requests_per_second']:8.0f} {fig['p50_ms']:7.2f} "
            f"{fig['p99_ms']:7.2f} {fig['vs_baseline_1_process']:8.2f} "
            f"{fig['p99_vs_baseline_1_process']:6.2f} "
            f"{'' if same is None else f'{same:.2f}':>11s} {fig['errors']:6d}"
        )
    print(
        f"  --workers 2 vs --workers 1: {result['workers_2_vs_1']:.2f}x without rules, "
        f"{result['workers_2_vs_1_rules']:.2f}x with rules"
    )


if __name__ == "__main__":
    print_table(run())
