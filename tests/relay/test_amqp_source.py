"""The AMQP source against the machine's real RabbitMQ, with names of its own per test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aio_pika
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.relay.amqp_source import AmqpSource, subject_of
from broker.relay.metrics import RelayMetrics
from broker.relay.settings import RelaySettings
from broker.relay.sink import MoSink
from broker.settings import Settings
from tests import clients
from tests.clients import declare, settle
from tests.conftest import FAST, Api, MakeApi

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PERSON = "c390b9a2-0000-4000-8000-000000000001"


@pytest.fixture
async def downstream(make_api: MakeApi) -> Api:
    return await make_api(key_prefix="down")


@pytest.fixture
async def sink(redis: Any, downstream: Api) -> AsyncIterator[MoSink]:
    sink = MoSink(Settings(**FAST, key_prefix="down"), RelayMetrics(), redis)
    await sink.setup()
    yield sink
    await sink.close()


@pytest.fixture
async def names() -> AsyncIterator[tuple[str, str]]:
    """A unique exchange and queue name; both (and the dead-letter pair) deleted afterwards."""
    exchange, queue = f"test-os2mo-{uuid4().hex}", f"test-relay-{uuid4().hex}"
    yield exchange, queue
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (queue, f"{queue}.dead-letter"):
            await channel.queue_delete(name)
        for name in (exchange, f"{queue}.dead-letter"):
            await channel.exchange_delete(name)


@pytest.fixture
async def source(sink: MoSink, names: tuple[str, str]) -> AsyncIterator[AmqpSource]:
    exchange, queue = names
    settings = RelaySettings(
        source="amqp",
        amqp_url=AMQP_URL,
        amqp_exchange=exchange,
        amqp_queue=queue,
        routing_keys=["person", "engagement"],
    )
    source = AmqpSource(settings, sink, sink.metrics)
    yield source
    source.stop()
    await source.close()


async def publish(exchange_name: str, routing_key: str, body: bytes) -> None:
    """As OS2mo publishes: persistent messages on its durable topic exchange."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(exchange_name)
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key
        )


async def queue_depth(name: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)


async def eventually(check: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def test_a_body_is_a_json_string_holding_a_uuid() -> None:
    assert subject_of(json.dumps(PERSON).encode()) == PERSON
    assert subject_of(json.dumps(PERSON.upper()).encode()) == PERSON  # canonical form
    for bad in (PERSON.encode(), b'{"uuid": "x"}', b'"not-a-uuid"', b"\xff", b"", b"[[[["):
        assert subject_of(bad) is None


async def test_messages_become_events_in_mo_and_are_acknowledged(
    downstream: Api, source: AmqpSource, names: tuple[str, str]
) -> None:
    exchange, queue = names
    integration = await declare(downstream, "person", "integration")
    running = asyncio.ensure_future(source.run())
    await eventually(lambda: asyncio.sleep(0, source.queue is not None))
    await publish(exchange, "person", json.dumps(PERSON).encode())
    await publish(exchange, "org", json.dumps(PERSON).encode())  # not bound: not ours

    async def arrived() -> bool:
        await settle(downstream)
        event = await clients.fetch(downstream, integration)
        return event is not None and event["subject"] == PERSON and event["priority"] == 10000

    await eventually(arrived)
    await eventually(lambda: asyncio.sleep(0, source.metrics.relayed._metrics))
    source.stop()
    await source.drain()
    await running
    await source.close()
    assert await queue_depth(queue) == 0


async def test_the_source_is_healthy_only_once_its_queue_is_bound_and_consumed(
    source: AmqpSource,
) -> None:
    """Readiness gates OS2mo's first publish: its exchange drops what no bound queue takes."""
    running = asyncio.ensure_future(source.run())
    ticks = 0
    while not source.healthy and not running.done():  # watched at every step of the set-up
        ticks += 1
        await asyncio.sleep(0)
    assert ticks > 0
    assert source.healthy and source.consumer_tag is not None
    source.stop()
    await source.drain()
    await running
    await source.close()
    assert not source.healthy


async def test_a_bad_body_goes_to_the_dead_letter_queue_and_the_relay_goes_on(
    downstream: Api, source: AmqpSource, names: tuple[str, str]
) -> None:
    exchange, queue = names
    integration = await declare(downstream, "person", "integration")
    running = asyncio.ensure_future(source.run())
    await eventually(lambda: asyncio.sleep(0, source.queue is not None))
    await publish(exchange, "person", PERSON.encode())  # no JSON quotes
    await publish(exchange, "person", json.dumps(PERSON).encode())

    async def arrived() -> bool:
        await settle(downstream)
        return await clients.fetch(downstream, integration) is not None

    await eventually(arrived)
    assert not running.done()
    source.stop()
    await source.drain()
    await running
    await source.close()
    assert await queue_depth(f"{queue}.dead-letter") == 1
    assert await queue_depth(queue) == 0
    rejected = source.metrics.rejected.labels("amqp", "bad body")._value.get()
    assert rejected == 1


async def test_a_message_the_broker_did_not_confirm_goes_back_to_the_queue(
    source: AmqpSource, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange, queue = names

    async def unavailable(*args: object) -> bool:
        raise RedisConnectionError("down")

    monkeypatch.setattr(source.sink.broker, "send", unavailable)
    running = asyncio.ensure_future(source.run())
    await eventually(lambda: asyncio.sleep(0, source.queue is not None))
    await publish(exchange, "person", json.dumps(PERSON).encode())
    await eventually(lambda: asyncio.sleep(0, source.metrics.store_errors._value.get() > 0))
    source.sink.stop()  # SIGTERM while Redis is down: give up, acknowledge nothing
    source.stop()
    await source.drain()
    await running
    await source.close()
    await eventually(lambda: queue_depth(queue))
    assert await queue_depth(queue) == 1
