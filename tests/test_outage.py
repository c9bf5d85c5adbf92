"""Redis goes away under a running broker and comes back: the broker recovers by itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.errors import StorageUnavailable
from broker.storage.embedded import EmbeddedRedis, free_port
from tests import clients
from tests.processes import Process, broker_env

# Slow: own broker processes or large backlogs (`pytest -m "not slow"` leaves them out).
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], object]]]:
    undo: list[Callable[[], object]] = []
    yield undo
    for step in reversed(undo):
        step()


def _post(broker: Process, query: str, variables: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{broker.url}/graphql/v25", json={"query": query, "variables": variables}, timeout=30
    )


def _eventually(check: Callable[[], bool], seconds: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"{what} within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _ready(broker: Process) -> int:
    return httpx.get(f"{broker.url}/health/ready", timeout=10).status_code


def test_broker_fails_fast_while_redis_is_down_and_recovers_when_it_returns(
    tmp_path: Path, cleanup: list[Callable[[], object]]
) -> None:
    port = free_port()
    redis = EmbeddedRedis(tmp_path / "redis", port=port).start()
    cleanup.append(lambda: redis.stop())
    env = broker_env(BROKER_REDIS_URL=redis.url, BROKER_FANOUT_BLOCK_SECONDS="0.2")
    broker = Process(env, tmp_path / "broker.log")
    cleanup.append(lambda: broker.proc.poll() is None and broker.proc.kill())
    listener = broker.declare("l", "person")

    def send(subject: str) -> httpx.Response:
        event = {"namespace": "mo", "routing_key": "person", "subject": subject, "priority": 1}
        return _post(broker, clients.SEND, {"input": event})

    def pending() -> list[str]:
        events = broker.gql(clients.LIST_EVENTS, {"listener": listener})["events"]["objects"]
        return sorted(event["subject"] for event in events)

    assert send("before").json() == {"data": {"event_send": True}}
    _eventually(lambda: pending() == ["before"], 10, "fan-out delivers")

    redis.stop()

    assert _eventually(lambda: _ready(broker) == 503, 3, "readiness turns false") < 3
    fetch, refused_send = _post(broker, clients.FETCH, {"listener": listener}), send("during")
    assert fetch.status_code == 200
    # A non-null field's error nulls `data`, which Ariadne answers with 400 (as any refusal).
    assert refused_send.status_code == 400
    for response in (fetch, refused_send):
        assert response.elapsed.total_seconds() < 3
        body = response.json()
        assert not any((body["data"] or {}).values())
        assert [error["message"] for error in body["errors"]] == [str(StorageUnavailable())]
        assert "Traceback" not in response.text
    assert httpx.get(f"{broker.url}/metrics").status_code == 200

    time.sleep(2)  # long enough for the fan-out and notifier to be retrying
    redis = EmbeddedRedis(tmp_path / "redis", port=port).start()

    _eventually(lambda: _ready(broker) == 200, 10, "readiness turns true again")
    assert send("after").json() == {"data": {"event_send": True}}
    _eventually(lambda: pending() == ["after", "before"], 10, "fan-out resumes")
    fetched = _post(broker, clients.FETCH, {"listener": listener}).json()["data"]["event_fetch"]
    assert fetched["subject"] == "before"
    metrics = httpx.get(f"{broker.url}/metrics").text
    assert 'broker_redis_errors_total{component="api"}' in metrics
    assert broker.stop() == 0
