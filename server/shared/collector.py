"""The shared-state metrics, read at scrape time from the leader's :class:`SharedState`."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..ops.metrics import PREFIX
from .replicas import SharedState


class SharedCollector:
    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        shared = self._shared
        yield GaugeMetricFamily(
            f"{PREFIX}_shared_up",
            "1 while the shared state (Redis) answers, else 0 (replicas then poll alone).",
            value=1.0 if shared.health.available else 0.0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_shared_dropped",
            "Fleet sightings not sent to Redis because the buffer was full.",
            value=shared.buffer.dropped,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_replicas",
            "Replicas with a heartbeat in Redis (this one included).",
            value=len({*shared.peers, shared.target.replica}),
        )
