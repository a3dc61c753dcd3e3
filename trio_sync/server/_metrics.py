"""Prometheus metrics of one server, in a registry of its own (several servers can share a
process, as tests do). Labels are short fixed words, never store or client ids: their
number must not grow with the number of users."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

#: Content type of :meth:`ServerMetrics.render`.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _TrafficCollector(Collector):
    """Bytes sent and received, summed over closed and live connections at scrape time."""

    def __init__(self, totals: Callable[[], tuple[int, int]]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        sent, received = self._totals()
        yield CounterMetricFamily(
            "trio_sync_sent_bytes", "Bytes of frames sent to clients", value=sent
        )
        yield CounterMetricFamily(
            "trio_sync_received_bytes", "Bytes of frames received from clients", value=received
        )


class ServerMetrics:
    """The server's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.connections = Gauge(
            "trio_sync_connections", "Connections that said hello and are open", registry=registry
        )
        self.connections_opened = Counter(
            "trio_sync_connections_opened", "Connections that said hello", registry=registry
        )
        self.blob_connections = Gauge(
            "trio_sync_blob_connections",
            "Blob connections (file transfers) welcomed and open",
            registry=registry,
        )
        self.blob_connections_opened = Counter(
            "trio_sync_blob_connections_opened",
            "Blob connections (file transfers) welcomed",
            registry=registry,
        )
        self.refusals = Counter(
            "trio_sync_refusals",
            "Connections refused or closed by the server, by reason",
            ["reason"],
            registry=registry,
        )
        self.stores_open = Gauge(
            "trio_sync_stores_open", "Stores with at least one connection", registry=registry
        )
        self.events_appended = Counter(
            "trio_sync_events_appended", "Events appended to the log", registry=registry
        )
        self.pushes = Counter(
            "trio_sync_pushes", "Pushes answered, by result", ["result"], registry=registry
        )
        self.commit_seconds = Histogram(
            "trio_sync_commit_seconds",
            "Duration of one group commit (pushes applied in one transaction)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.pull_lag = Histogram(
            "trio_sync_pull_lag_events",
            "Events a puller still lacks after a page was sent to it",
            buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
            registry=registry,
        )
        self.tail_bytes = Gauge(
            "trio_sync_tail_bytes", "Bytes of recent events kept in memory", registry=registry
        )
        self.healthy = Gauge(
            "trio_sync_storage_writable", "1 while the database can be written", registry=registry
        )
        self.closed_bytes_sent = 0
        self.closed_bytes_received = 0
        self._live_traffic: Callable[[], tuple[int, int]] = lambda: (0, 0)
        registry.register(_TrafficCollector(self._traffic))

    def count_live_traffic(self, live: Callable[[], tuple[int, int]]) -> None:
        """Where to read the bytes of connections that are still open."""
        self._live_traffic = live

    def _traffic(self) -> tuple[int, int]:
        sent, received = self._live_traffic()
        return self.closed_bytes_sent + sent, self.closed_bytes_received + received

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
