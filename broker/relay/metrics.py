"""The relay's Prometheus metrics: what it relayed, refused and failed at, and how fast."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.relayed = Counter(
            "broker_relay_relayed_total",
            "Events stored in the broker's `mo` and acknowledged upstream.",
            ["source", "routing_key"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "broker_relay_rejected_total",
            "Events that cannot be relayed (bad body, or refused by the broker).",
            ["source", "reason"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "broker_relay_upstream_errors_total",
            "Failed calls to the upstream (OS2mo's API or RabbitMQ).",
            ["source"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "broker_relay_store_errors_total",
            "Failed attempts to store an event in the broker (retried).",
            registry=self.registry,
        )
        self.lag = Histogram(
            "broker_relay_lag_seconds",
            "From receiving an event upstream to the broker confirming it.",
            ["source"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.last_relayed = Gauge(
            "broker_relay_last_relayed_timestamp_seconds",
            "Unix time of the last event relayed.",
            ["source"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
