"""``make bench``: run every benchmark, print the figures, write each as JSON."""

from __future__ import annotations

from bench import push_to_serve
from bench.common import RESULTS, machine


def main() -> None:
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['git']}")
    print("(a shared, noisy machine: read medians and ratios, not single runs)\n")
    figures = push_to_serve.run()
    print(
        f"push-to-serve latency, {push_to_serve.PUSHES} pushes each (s); target median < 0.5, max < 1.0"
    )
    print(f"  {'path':8s} {'median':>8s} {'p90':>8s} {'max':>8s}")
    for path, stats in figures.items():
        print(f"  {path:8s} {stats['median']:8.3f} {stats['p90']:8.3f} {stats['max']:8.3f}")
    print(f"\nJSON results in {RESULTS}/")


if __name__ == "__main__":
    main()
