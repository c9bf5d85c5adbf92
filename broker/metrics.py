"""Prometheus metrics: OS2mo's event series plus the broker's own.

Counters and histograms count what this process did. The pending-event gauges and
the fan-out lag come from the process's latest snapshot of Redis (broker/stats.py, about
one `BROKER_STATS_INTERVAL_SECONDS` old at most), so every replica reports the same,
whole-system values for them. Label values never contain event subjects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.errors import BrokerError
from broker.models import Listener
from broker.storage.connection import UNAVAILABLE
from broker.storage.gauges import Snapshot

LISTENER_LABELS = ("owner", "user_key", "ns", "routing_key")
# Long polls make fetch latencies reach BROKER_FETCH_MAX_WAIT_SECONDS.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def listener_labels(listener: Listener) -> tuple[str, str, str, str]:
    return (str(listener.owner), listener.user_key, listener.namespace, listener.routing_key)


class _SnapshotCollector(Collector):
    """Renders the snapshot the `/metrics` endpoint has just been given (never reads Redis)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.age = 0.0

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is None:
            return
        yield GaugeMetricFamily(
            "broker_stats_age_seconds",
            "Age of the snapshot the pending-event and fan-out gauges come from.",
            value=self.age,
        )
        backlog = GaugeMetricFamily(
            "broker_fanout_backlog",
            "Ingest entries per shard not yet fanned out to listeners.",
            labels=["shard"],
        )
        age = GaugeMetricFamily(
            "broker_fanout_oldest_seconds",
            "Age of the oldest ingest entry per shard not yet fanned out (0 with none).",
            labels=["shard"],
        )
        for shard, lag in enumerate(self.snapshot.ingest):
            backlog.add_metric([str(shard)], lag.entries)
            waited = 0.0 if lag.oldest_ms is None else self.snapshot.now - lag.oldest_ms / 1000
            age.add_metric([str(shard)], max(waited, 0.0))
        yield from (backlog, age)


def _label_value(value: str) -> str:
    """A label value escaped as the text exposition format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _ListenerGauges:
    """Renders the per-listener gauges (`os2mo_events`, `os2mo_event_oldest`) as text.

    By hand, because prometheus_client formats and escapes every label of every
    sample on each scrape, which at 10,000 listeners costs more than reading Redis.
    A listener's labels never change, so their text is made once per listener, and the
    text of a snapshot is made once for all the scrapes it answers.
    """

    def __init__(self) -> None:
        self._labels: dict[UUID, str] = {}
        self._rendered: tuple[Snapshot, bytes] | None = None

    def render(self, snapshot: Snapshot) -> bytes:
        if self._rendered is not None and self._rendered[0] is snapshot:
            return self._rendered[1]
        known, self._labels = self._labels, {}  # keep only the listeners that still exist
        events = [
            "# HELP os2mo_events Pending events per listener.",
            "# TYPE os2mo_events gauge",
        ]
        oldest = [
            "# HELP os2mo_event_oldest Unix time of the oldest pending event's first "
            "emission (absent with none).",
            "# TYPE os2mo_event_oldest gauge",
        ]
        for listener, stats in snapshot.listeners:
            labels = known.get(listener.uuid)
            if labels is None:
                labels = ",".join(
                    f'{name}="{_label_value(value)}"'
                    for name, value in zip(LISTENER_LABELS, listener_labels(listener), strict=True)
                )
            self._labels[listener.uuid] = labels
            for silenced, count, oldest_ms in (
                ("false", stats.pending - stats.silenced, stats.oldest_ms),
                ("true", stats.silenced, stats.oldest_silenced_ms),
            ):
                events.append(f'os2mo_events{{{labels},silenced="{silenced}"}} {count}.0')
                if count and oldest_ms is not None:
                    at = repr(oldest_ms / 1000)
                    oldest.append(f'os2mo_event_oldest{{{labels},silenced="{silenced}"}} {at}')
        text = ("\n".join(events + oldest) + "\n").encode()
        self._rendered = (snapshot, text)
        return text


class Metrics:
    """One app's metrics, in a registry of its own (so tests can run several apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._snapshot = _SnapshotCollector()
        self._gauges = _ListenerGauges()
        self.registry.register(self._snapshot)
        self.sent = Counter(
            "os2mo_event_sent", "Events sent.", ["ns", "routing_key"], registry=self.registry
        )
        self.acknowledged = Counter(
            "os2mo_event_acknowledged",
            "Successful acknowledgements.",
            LISTENER_LABELS,
            registry=self.registry,
        )
        self.requests = Histogram(
            "broker_request_duration_seconds",
            "event_send/event_fetch/event_acknowledge calls by outcome "
            "(ok, refused, unavailable, error); _count counts them.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "broker_redeliveries", "Events fetched again after a back-off.", registry=self.registry
        )
        self.redis_errors = Counter(
            "broker_redis_errors",
            "Redis commands that failed, by component (api, fanout, notifier, metrics).",
            ["component"],
            registry=self.registry,
        )
        self.store_full = Counter(
            "broker_store_full",
            "Writes refused because Redis is full (maxmemory reached, noeviction).",
            registry=self.registry,
        )
        self.not_replicated = Counter(
            "broker_not_replicated",
            "Writes not confirmed because too few replicas had them in time.",
            registry=self.registry,
        )
        self.unreadable_records = Counter(
            "broker_unreadable_records",
            "Stored records skipped because they cannot be read (an older layout, or "
            "damaged), by kind (namespace, listener, listener_state, event); counted at "
            "every read, so a steady rate means one is still there.",
            ["kind"],
            registry=self.registry,
        )

    def count_unreadable(self, kind: str) -> None:
        self.unreadable_records.labels(kind).inc()

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        """Count and time one operation, labelled with how it ended."""
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except BrokerError:
            outcome = "refused"
            raise
        except UNAVAILABLE:
            outcome = "unavailable"
            raise
        finally:
            elapsed = time.perf_counter() - start
            self.requests.labels(operation, outcome).observe(elapsed)

    def render(self, snapshot: Snapshot | None, age: float = 0.0) -> bytes:
        """The exposition text, with `snapshot`'s gauges (none when Redis could not be read)."""
        # No await between setting and rendering, so concurrent scrapes cannot mix.
        self._snapshot.snapshot, self._snapshot.age = snapshot, age
        try:
            text = generate_latest(self.registry)
        finally:
            self._snapshot.snapshot = None
        return text if snapshot is None else self._gauges.render(snapshot) + text
