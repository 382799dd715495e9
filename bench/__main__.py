"""``make bench``: run every benchmark, print the figures, write each as JSON."""

from __future__ import annotations

import os

from bench import (
    burst,
    consistency,
    history,
    push_to_serve,
    replicas,
    scale,
    throughput,
    workers,
)
from bench.common import RESULTS, machine
from bench.loadgen import generator_name


def main() -> None:
    info = machine()
    load = os.getloadavg()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['git']}")
    print(f"load generator: {generator_name()}; load average before the run: {load[0]:.2f}")
    print("(a shared, noisy machine: read medians and ratios, not single runs)\n")

    throughput.print_table(throughput.run())
    print()
    workers.print_table(workers.run())
    print()
    consistency.print_table(consistency.run())
    print()
    scale.print_table(scale.run())
    print()
    history.print_table(history.run())
    print()
    burst.print_table(burst.run())
    print()
    figures = push_to_serve.run()
    print(
        f"push-to-serve latency, {push_to_serve.PUSHES} pushes each (s); target median < 0.5, max < 1.0"
    )
    print(f"  {'path':8s} {'median':>8s} {'p90':>8s} {'max':>8s}")
    for path, stats in figures.items():
        print(f"  {path:8s} {stats['median']:8.3f} {stats['p90']:8.3f} {stats['max']:8.3f}")
    print()
    replicas.print_table(replicas.run())
    print(f"\nJSON results in {RESULTS}/")


if __name__ == "__main__":
    main()
