"""SIGTERM under load: the broker finishes what it accepted, exits 0, and loses nothing."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from broker.storage.embedded import EmbeddedRedis
from broker.storage.keys import Keys
from tests import clients
from tests.processes import Process, broker_env

# Slow: own broker processes or large backlogs (`pytest -m "not slow"` leaves them out).
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

SENDERS = 4
CONSUMERS = 4
GRACE_SECONDS = 10


class Load:
    """Clients sending distinct subjects and fetching + acknowledging until the broker goes."""

    def __init__(self, url: str, listener: str, idle_listener: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.confirmed: set[str] = set()  # event_send answered true
        self.unsure_sends: set[str] = set()  # no answer: may or may not have been accepted
        self.acknowledged: set[str] = set()
        self.unsure_acks: set[str] = set()
        self.threads = [
            *(threading.Thread(target=self._send, args=(n,)) for n in range(SENDERS)),
            *(threading.Thread(target=self._consume, args=(listener,)) for _ in range(CONSUMERS)),
            # Long-polls a listener that never gets an event: in flight at SIGTERM.
            threading.Thread(target=self._consume, args=(idle_listener,)),
        ]

    def _post(self, http: httpx.Client, query: str, variables: dict[str, Any]) -> Any:
        body = http.post("/graphql/v25", json={"query": query, "variables": variables}).json()
        assert "errors" not in body, body
        return body["data"]

    def _send(self, sender: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for n in range(1_000_000):
                subject = f"s{sender}-{n}"
                event = {"namespace": "mo", "routing_key": "person", "subject": subject}
                try:
                    sent = self._post(http, clients.SEND, {"input": {**event, "priority": 1}})
                except httpx.TransportError:
                    with self.lock:
                        self.unsure_sends.add(subject)
                    return
                assert sent == {"event_send": True}
                with self.lock:
                    self.confirmed.add(subject)

    def _consume(self, listener: str) -> None:
        fetch = (
            "query($l: UUID!) { event_fetch(filter: {listener: $l, wait: 30}) { subject token } }"
        )
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while True:
                try:
                    event = self._post(http, fetch, {"l": listener})["event_fetch"]
                except httpx.TransportError:
                    return
                if event is None:
                    continue
                try:
                    self._post(http, clients.ACK, {"token": event["token"]})
                except httpx.TransportError:
                    with self.lock:
                        self.unsure_acks.add(event["subject"])
                    return
                with self.lock:
                    self.acknowledged.add(event["subject"])

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def test_sigterm_under_load_exits_0_in_time_and_loses_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        env = broker_env(
            BROKER_REDIS_URL=server.url,
            BROKER_SHUTDOWN_TIMEOUT_SECONDS=str(GRACE_SECONDS),
            BROKER_FANOUT_CLAIM_IDLE_SECONDS="1",
            BROKER_LOG_FORMAT="json",
        )
        first = Process(env, tmp_path / "first.log")
        processes.append(first)
        listener = first.declare("l", "person")
        idle = first.declare("idle", "org")
        load = Load(first.url, listener, idle)
        load.start()
        time.sleep(2)

        first.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert first.proc.wait(timeout=GRACE_SECONDS + 5) == 0
        took = time.monotonic() - start
        load.join()
        assert took < GRACE_SECONDS, f"shutdown took {took:.1f} s"
        assert "graceful shutdown exceeded" not in first.output()
        assert len(load.confirmed) > 50 and len(load.acknowledged) > 50, "too little load"

        second = Process(env, tmp_path / "second.log")
        processes.append(second)
        keys = Keys("broker", 16)
        with redis.Redis.from_url(server.url) as direct:
            deadline = time.monotonic() + 15
            while sum(direct.xlen(keys.ingest(shard)) for shard in range(16)):
                assert time.monotonic() < deadline, "ingest entries stuck unfanned"
                time.sleep(0.1)
        events = second.gql(clients.LIST_EVENTS, {"listener": listener})["events"]["objects"]
        pending = {event["subject"] for event in events}
        assert second.stop() == 0

    # Every confirmed send is acknowledged or still pending, exactly once. Requests cut
    # off by the closing socket (at most one per client) went either way.
    assert len(load.unsure_sends | load.unsure_acks) <= SENDERS + CONSUMERS
    assert not pending & load.acknowledged
    assert not load.confirmed - pending - load.acknowledged - load.unsure_acks, "lost"
    assert not (pending | load.acknowledged) - load.confirmed - load.unsure_sends, "invented"
