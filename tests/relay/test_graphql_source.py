"""The GraphQL source against an in-process upstream broker speaking OS2mo's event API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.devtokens import owner_of
from broker.relay.graphql_source import UPSTREAM_ERRORS, GraphQLSource
from broker.relay.metrics import RelayMetrics
from broker.relay.settings import RelaySettings
from broker.relay.sink import MoSink
from broker.settings import Settings
from tests import clients
from tests.clients import declare, send, settle
from tests.conftest import FAST, Api, MakeApi

LISTENERS = "query { event_listeners { objects { uuid owner user_key routing_key } } }"


class CountingTransport(httpx.AsyncBaseTransport):
    """The upstream app, counting token requests; can answer 401 to the next GraphQL calls."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.token_requests = 0
        self.unauthorized = 0
        self.token_failures = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-connect/token"):
            self.token_requests += 1
            if self.token_failures:
                self.token_failures -= 1
                return httpx.Response(503, text="Keycloak is restarting")
        elif self.unauthorized:
            self.unauthorized -= 1
            return httpx.Response(401)
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def upstream(make_api: MakeApi) -> Api:
    return await make_api(key_prefix="up")


@pytest.fixture
async def downstream(make_api: MakeApi) -> Api:
    return await make_api(key_prefix="down")


@pytest.fixture
async def sink(redis: Any, downstream: Api) -> AsyncIterator[MoSink]:
    sink = MoSink(Settings(**FAST, key_prefix="down"), RelayMetrics(), redis)
    await sink.setup()
    yield sink
    await sink.close()


def relay_settings(**overrides: Any) -> RelaySettings:
    values: dict[str, Any] = {
        "source": "graphql",
        "os2mo_url": "http://upstream/graphql/v25",
        "auth_server": "http://upstream/auth",
        "client_id": "relay",
        "client_secret": "secret",
        "routing_keys": ["person"],
        "poll_seconds": 0.05,
    }
    return RelaySettings(**{**values, **overrides})


@pytest.fixture
async def source(upstream: Api, sink: MoSink) -> AsyncIterator[GraphQLSource]:
    source = GraphQLSource(relay_settings(), sink, sink.metrics, CountingTransport(upstream.app))
    yield source
    await source.close()


async def pending_upstream(upstream: Api, listener: str) -> list[str]:
    data = await upstream.data(clients.LIST_EVENTS, {"listener": listener})
    return [event["subject"] for event in data["events"]["objects"]]


async def test_an_event_is_stored_with_its_subject_and_priority_then_acknowledged_upstream(
    upstream: Api, downstream: Api, source: GraphQLSource
) -> None:
    integration = await declare(downstream, "person", "integration")
    listeners = await source.declare()
    await send(upstream, "person", "8a1f2c34-0000-4000-8000-000000000000", priority=3)
    await settle(upstream)
    assert await source.relay_one("person", listeners["person"]) is True
    await settle(downstream)
    event = await clients.fetch(downstream, integration)
    assert event is not None
    assert (event["subject"], event["priority"]) == ("8a1f2c34-0000-4000-8000-000000000000", 3)
    assert await pending_upstream(upstream, listeners["person"]) == []
    assert await source.relay_one("person", listeners["person"]) is False


async def test_the_relays_listeners_upstream_are_its_client_ids_one_per_routing_key(
    upstream: Api, sink: MoSink
) -> None:
    keys = ["person", "engagement"]
    source = GraphQLSource(
        relay_settings(routing_keys=keys), sink, sink.metrics, CountingTransport(upstream.app)
    )
    listeners = await source.declare()
    assert listeners == await source.declare()  # a restart (or a replica) finds the same ones
    await source.close()
    found = (await upstream.data(LISTENERS))["event_listeners"]["objects"]
    assert sorted(item["routing_key"] for item in found) == sorted(keys)
    assert {item["owner"] for item in found} == {str(owner_of("relay"))}
    assert {item["user_key"] for item in found} == {f"event-broker-relay-{key}" for key in keys}


async def test_an_event_the_broker_did_not_confirm_stays_pending_upstream(
    upstream: Api, downstream: Api, source: GraphQLSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    listeners = await source.declare()
    await send(upstream, "person", "s1")
    await settle(upstream)

    async def unavailable(*args: object) -> bool:
        raise RedisConnectionError("down")

    monkeypatch.setattr(source.sink.broker, "send", unavailable)
    source.sink.stop()  # as at SIGTERM: no more retries
    assert await source.relay_one("person", listeners["person"]) is True
    assert await pending_upstream(upstream, listeners["person"]) == ["s1"]


async def test_redis_errors_are_retried_until_the_broker_confirms(
    upstream: Api, downstream: Api, source: GraphQLSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    integration = await declare(downstream, "person", "integration")
    listeners = await source.declare()
    await send(upstream, "person", "s1")
    await settle(upstream)
    real = source.sink.broker.send
    failures = [RedisConnectionError("down"), RedisConnectionError("still down")]

    async def flaky(*args: Any) -> bool:
        if failures:
            raise failures.pop()
        return await real(*args)

    monkeypatch.setattr(source.sink.broker, "send", flaky)
    assert await source.relay_one("person", listeners["person"]) is True
    await settle(downstream)
    assert (await clients.fetch(downstream, integration) or {}).get("subject") == "s1"
    assert await pending_upstream(upstream, listeners["person"]) == []
    assert source.metrics.store_errors._value.get() == 2


async def test_a_401_fetches_a_new_token_and_retries_the_call(upstream: Api, sink: MoSink) -> None:
    transport = CountingTransport(upstream.app)
    source = GraphQLSource(relay_settings(), sink, sink.metrics, transport)
    listeners = await source.declare()
    assert transport.token_requests == 1
    transport.unauthorized = 1  # e.g. the identity provider revoked the token
    assert await source.relay_one("person", listeners["person"]) is False
    assert transport.token_requests == 2
    await source.close()


async def test_two_replicas_relay_every_event(upstream: Api, downstream: Api, sink: MoSink) -> None:
    integration = await declare(downstream, "person", "integration")
    replicas = [
        GraphQLSource(
            relay_settings(parallelism=2), sink, sink.metrics, CountingTransport(upstream.app)
        )
        for _ in range(2)
    ]
    await replicas[0].declare()  # upstream keeps events only for listeners that exist
    running = [asyncio.ensure_future(replica.run()) for replica in replicas]
    subjects = {f"s{n}" for n in range(20)}
    for subject in sorted(subjects):
        await send(upstream, "person", subject)
    seen: set[str] = set()
    for _ in range(500):
        if subjects <= seen:
            break
        event = await clients.fetch(downstream, integration)
        if event is None:
            await asyncio.sleep(0.02)
            continue
        seen.add(event["subject"])
        await clients.ack(downstream, event["token"])
    for replica in replicas:
        replica.stop()
    await asyncio.gather(*running)
    for replica in replicas:
        await replica.close()
    assert seen == subjects


async def test_a_failing_token_endpoint_is_an_upstream_error_the_relay_survives(
    upstream: Api, sink: MoSink
) -> None:
    transport = CountingTransport(upstream.app)
    transport.token_failures = 1
    source = GraphQLSource(relay_settings(), sink, sink.metrics, transport)
    with pytest.raises(UPSTREAM_ERRORS):
        await source.declare()
    assert "person" in await source.declare()  # the identity provider is back
    await source.close()


async def test_stopping_ends_a_fetch_that_an_upstream_holds_in_a_long_poll(
    make_api: MakeApi, sink: MoSink
) -> None:
    upstream = await make_api(
        key_prefix="up", fetch_default_wait_seconds=600, fetch_max_wait_seconds=600
    )
    source = GraphQLSource(relay_settings(), sink, sink.metrics, CountingTransport(upstream.app))
    listeners = await source.declare()
    polling = asyncio.ensure_future(source.relay_one("person", listeners["person"]))
    await asyncio.sleep(0.3)
    source.stop()
    async with asyncio.timeout(60):  # far below the upstream's 600 s wait
        assert await polling is False
    await source.close()
