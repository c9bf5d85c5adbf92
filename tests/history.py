"""A history checker for fault tests: what was confirmed, and did every listener get it?

Emitters record every send the broker confirmed (`event_send` answered `true`);
consumers record every fetch and acknowledgement. The check: every confirmed event
reached every listener that matches it at least once (lost events are the failure),
and how many were delivered more than once (allowed: delivery is at-least-once).
Load runs in threads against broker processes over HTTP, as real clients would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests import clients

# Lines every fault test adds; conftest prints them in the session summary.
REPORTS: list[str] = []


@dataclass
class Verdict:
    confirmed: int
    lost: dict[str, set[str]]  # listener -> confirmed subjects it never got
    duplicates: int  # deliveries beyond the first, over all listeners
    refused: int  # sends answered with an error (not confirmed: free to be lost)
    reasons: dict[str, int]

    @property
    def lost_count(self) -> int:
        return sum(len(subjects) for subjects in self.lost.values())

    def summary(self, scenario: str) -> str:
        return (
            f"{scenario}: {self.confirmed} confirmed sends, {self.lost_count} lost, "
            f"{self.duplicates} duplicate deliveries, {self.refused} refused sends "
            f"{sorted(self.reasons.items())}"
        )


@dataclass
class History:
    """Thread-safe record of one run."""

    confirmed: set[str] = field(default_factory=set)
    refused: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # refusal messages
    fetched: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    acknowledged: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def confirm(self, subject: str) -> None:
        with self._lock:
            self.confirmed.add(subject)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused += 1
            self.reasons[reason] += 1

    def fetch(self, listener: str, subject: str) -> None:
        with self._lock:
            self.fetched[listener][subject] += 1

    def acknowledge(self, listener: str, subject: str) -> None:
        with self._lock:
            self.acknowledged[listener].add(subject)

    def missing(self, listener: str) -> set[str]:
        with self._lock:
            return self.confirmed - set(self.fetched[listener])

    def check(self, listeners: Sequence[str]) -> Verdict:
        """Judge the run: every listener here matches every confirmed event."""
        with self._lock:
            lost = {
                listener: self.confirmed - set(self.fetched[listener]) for listener in listeners
            }
            duplicates = sum(
                count - 1 for listener in listeners for count in self.fetched[listener].values()
            )
            return Verdict(
                len(self.confirmed),
                {k: v for k, v in lost.items() if v},
                duplicates,
                self.refused,
                dict(self.reasons),
            )


_clients = threading.local()  # one keep-alive client per load thread, as real clients


def _post(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any] | None:
    """The response body, or None when the broker could not be reached."""
    try:
        body: dict[str, Any] = _clients.http.post(
            f"{url}/graphql/v25", json={"query": query, "variables": variables}
        ).json()
    except (httpx.TransportError, ValueError):
        return None
    return body


def _with_client(run: Callable[..., None], *args: Any) -> None:
    with httpx.Client(timeout=10) as _clients.http:
        run(*args)


class Load:
    """Emitter and consumer threads against brokers; `stop()` ends the emitters."""

    def __init__(
        self,
        history: History,
        urls: Callable[[], Sequence[str]],
        listeners: Sequence[str],
        routing_key: str = "person",
        emitters: int = 3,
    ) -> None:
        self.history = history
        self.urls = urls  # the brokers alive now
        self.routing_key = routing_key
        self._emitting = threading.Event()
        self._consuming = threading.Event()
        self._emitters = [
            threading.Thread(target=_with_client, args=(self._emit, i), daemon=True)
            for i in range(emitters)
        ]
        self._consumers = [
            threading.Thread(target=_with_client, args=(self._consume, listener, i), daemon=True)
            for i, listener in enumerate(listeners)
        ]

    def start(self) -> Load:
        self._emitting.set()
        self._consuming.set()
        for thread in [*self._emitters, *self._consumers]:
            thread.start()
        return self

    def _url(self, i: int) -> str | None:
        urls = self.urls()
        return urls[i % len(urls)] if urls else None

    def _emit(self, i: int) -> None:
        n = 0
        while self._emitting.is_set():
            url = self._url(i + n)
            n += 1
            if url is None:
                time.sleep(0.05)
                continue
            subject = str(uuid.uuid4())
            event = {"namespace": "mo", "routing_key": self.routing_key, "subject": subject}
            body = _post(url, clients.SEND, {"input": {**event, "priority": 1}})
            if body is not None and (body.get("data") or {}).get("event_send") is True:
                self.history.confirm(subject)
            else:
                errors = (body or {}).get("errors") or [{"message": "no answer"}]
                self.history.refuse(errors[0]["message"])
                time.sleep(0.02)

    def _consume(self, listener: str, i: int) -> None:
        n = 0
        while self._consuming.is_set():
            url = self._url(i + n)
            n += 1
            if url is None:
                time.sleep(0.05)
                continue
            body = _post(url, clients.FETCH, {"listener": listener})
            event = ((body or {}).get("data") or {}).get("event_fetch")
            if not event:
                time.sleep(0.02)
                continue
            self.history.fetch(listener, event["subject"])
            acked = _post(url, clients.ACK, {"token": event["token"]})
            if acked is not None and (acked.get("data") or {}).get("event_acknowledge"):
                self.history.acknowledge(listener, event["subject"])

    def stop_emitting(self) -> None:
        self._emitting.clear()
        for thread in self._emitters:
            thread.join(timeout=15)

    def drain(self, listeners: Sequence[str], seconds: float) -> None:
        """Let consumers run until every listener got every confirmed event, or `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(self.history.missing(x) for x in listeners):
            time.sleep(0.1)

    def stop(self) -> None:
        self._emitting.clear()
        self._consuming.clear()
        for thread in [*self._emitters, *self._consumers]:
            thread.join(timeout=15)
