"""BROKER_REDIS_WAIT_REPLICAS: the broker confirms a write only once replicas have it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from broker.app import create_app
from broker.errors import NotReplicated
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis
from tests import clients
from tests.conftest import FAST, Api
from tests.redis_sentinel import LocalSentinel

pytestmark = pytest.mark.real_redis

LISTENER = {"namespace": "mo", "user_key": "l", "routing_key": "person"}
EVENT = {"namespace": "mo", "routing_key": "person", "subject": "s1", "priority": 5}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    """A master (appendfsync always, so WAITAOF is used and quick) and its replica."""
    folder = tmp_path_factory.mktemp("pair")
    master = EmbeddedRedis(folder / "master", extra_args=("--appendfsync", "always")).start()
    replica = EmbeddedRedis(
        folder / "replica", extra_args=("--replicaof", "127.0.0.1", str(master.port))
    ).start()
    LocalSentinel.wait_for_replicas(master, 1)
    yield master, replica
    replica.stop()
    master.stop()


class Paused:
    """SIGSTOP a server: it keeps its connections but acknowledges nothing."""

    def __init__(self, server: EmbeddedRedis) -> None:
        self.pid = server._process.pid if server._process else 0

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture
async def make(pair: tuple[EmbeddedRedis, EmbeddedRedis]) -> AsyncIterator[Any]:
    master, _ = pair
    redis = Redis.from_url(master.url, decode_responses=True)
    await redis.flushall()
    stack: list[Any] = []

    async def make_api(**overrides: Any) -> Api:
        settings = Settings(**{**FAST, "redis_wait_timeout_ms": 1000, **overrides})
        app = create_app(settings, redis=redis)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
        stack.append((lifespan, http))
        return Api(http, app)

    yield make_api
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)
    await redis.aclose()


async def _delivered(api: Api, listener: str) -> list[dict[str, Any]]:
    """The events a listener can fetch once the fan-out has finished every ingest entry."""
    for _ in range(600):  # up to 30 s: the fan-out backs off while the replica is away
        store = api.app.state.broker_state["store"]
        backlog = [await store.ingest_backlog(shard) for shard in range(store.keys.shards)]
        if sum(backlog) == 0:
            return await clients.drain(api, listener)
        await asyncio.sleep(0.05)
    raise AssertionError("the fan-out did not finish")


async def test_without_the_replica_a_send_is_refused_as_retryable_and_a_retry_coalesces(
    make: Any, pair: tuple[EmbeddedRedis, EmbeddedRedis]
) -> None:
    api = await make(redis_wait_replicas=1)
    listener = (await api.data(clients.DECLARE_LISTENER, {"input": LISTENER}))[
        "event_listener_declare"
    ]["uuid"]
    with Paused(pair[1]):
        assert await api.error(clients.SEND, {"input": EVENT}) == str(NotReplicated())
    assert (await api.data(clients.SEND, {"input": EVENT}))["event_send"] is True
    events = await _delivered(api, listener)
    assert [event["subject"] for event in events] == ["s1"]
    metrics = (await api.http.get("/metrics")).text
    assert "broker_not_replicated_total 1.0" in metrics


async def test_declares_and_acknowledgements_wait_too(
    make: Any, pair: tuple[EmbeddedRedis, EmbeddedRedis]
) -> None:
    api = await make(redis_wait_replicas=1)
    declare = {"input": LISTENER}
    listener = (await api.data(clients.DECLARE_LISTENER, declare))["event_listener_declare"]
    await api.data(clients.SEND, {"input": EVENT})
    events = await _delivered(api, listener["uuid"])
    with Paused(pair[1]):
        assert await api.error(clients.DECLARE_LISTENER, declare) == str(NotReplicated())
        assert await api.error(clients.ACK, {"token": events[0]["token"]}) == str(NotReplicated())


async def test_without_wait_a_send_does_not_wait_for_a_stalled_replica(
    make: Any, pair: tuple[EmbeddedRedis, EmbeddedRedis]
) -> None:
    api = await make()
    await api.data(clients.DECLARE_LISTENER, {"input": LISTENER})
    with Paused(pair[1]):
        assert (await api.data(clients.SEND, {"input": EVENT}))["event_send"] is True
