"""`broker relay` as a real process killed mid-stream: from an upstream broker acting as OS2mo,
and from the real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from uuid import uuid4

import aio_pika
import httpx
import pytest

from broker.storage.embedded import EmbeddedRedis
from tests import clients
from tests.processes import Process, broker_env

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

EVENTS = 15
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def send_upstream(upstream: Process, subjects: list[str], routing_key: str) -> None:
    for subject in subjects:
        variables = {
            "input": {
                "namespace": "mo",
                "routing_key": routing_key,
                "subject": subject,
                "priority": 7,
            }
        }
        assert upstream.gql(clients.SEND, variables)["event_send"] is True


def receive_downstream(
    downstream: Process, listener: str, wanted: set[str], seconds: float, priority: int = 7
) -> set[str]:
    """Fetch and acknowledge until every wanted subject arrived (or time is up)."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while not wanted <= seen and time.monotonic() < deadline:
        event = downstream.gql(clients.FETCH, {"listener": listener})["event_fetch"]
        if event is None:  # after the broker's default wait
            continue
        assert event["priority"] == priority
        seen.add(event["subject"])
        downstream.gql(clients.ACK, {"token": event["token"]})
    return seen


def test_every_event_sent_upstream_reaches_the_downstream_listener_across_kill_9_of_the_relay(
    redis_server: EmbeddedRedis, tmp_path: Path, processes: list[Process]
) -> None:
    prefix = uuid4().hex[:8]
    common = {
        "BROKER_REDIS_URL": redis_server.url,
        "BROKER_FANOUT_BLOCK_SECONDS": "0.1",
        # Fetches (the relay's upstream, the test's downstream) long-poll instead of spinning.
        "BROKER_FETCH_DEFAULT_WAIT_SECONDS": "2",
    }
    # Upstream "OS2mo": its relay listener's unacknowledged events come back after 1 s.
    upstream = Process(
        broker_env(
            **common,
            BROKER_KEY_PREFIX=f"up{prefix}",
            BROKER_RETRY_MIN_SECONDS="1",
            BROKER_RETRY_MAX_SECONDS="1",
        ),
        tmp_path / "upstream.log",
    )
    processes.append(upstream)
    downstream = Process(
        broker_env(**common, BROKER_KEY_PREFIX=f"down{prefix}"), tmp_path / "downstream.log"
    )
    processes.append(downstream)
    listener = downstream.declare("integration", "person")
    relay_env = broker_env(
        **common,
        BROKER_KEY_PREFIX=f"down{prefix}",
        BROKER_RELAY_SOURCE="graphql",
        BROKER_RELAY_OS2MO_URL=f"{upstream.url}/graphql/v25",
        # The upstream broker's development token endpoint stands in for Keycloak.
        BROKER_RELAY_AUTH_SERVER=f"{upstream.url}/auth",
        BROKER_RELAY_AUTH_REALM="mo",
        BROKER_RELAY_CLIENT_ID="event-broker-relay",
        BROKER_RELAY_CLIENT_SECRET="dev",
        BROKER_RELAY_ROUTING_KEYS="person,engagement",
        BROKER_RELAY_PARALLELISM="2",
    )
    relay = Process(relay_env, tmp_path / "relay-1.log", command="relay")
    processes.append(relay)

    first = [f"first-{n}" for n in range(EVENTS)]
    send_upstream(upstream, first, "person")
    seen = receive_downstream(downstream, listener, {first[0]}, seconds=60)
    assert first[0] in seen, relay.output()
    relay.proc.send_signal(signal.SIGKILL)  # mid-stream: others are fetched, not yet stored
    relay.proc.wait()

    second = [f"second-{n}" for n in range(EVENTS)]
    send_upstream(upstream, second, "person")
    restarted = Process(relay_env, tmp_path / "relay-2.log", command="relay")
    processes.append(restarted)
    wanted = set(first) | set(second)
    seen |= receive_downstream(downstream, listener, wanted, seconds=90)
    assert wanted - seen == set(), restarted.output()
    metrics = httpx.get(f"{restarted.url}/metrics").text
    assert 'broker_relay_relayed_total{routing_key="person",source="graphql"}' in metrics
    assert restarted.stop() == 0


def publish(exchange: str, bodies: list[bytes]) -> None:
    async def go() -> None:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            target = await channel.get_exchange(exchange)
            for body in bodies:
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await target.publish(message, "person")

    asyncio.run(go())


def delete(exchange: str, queue: str) -> None:
    async def go() -> None:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            for name in (queue, f"{queue}.dead-letter"):
                await channel.queue_delete(name)
            for name in (exchange, f"{queue}.dead-letter"):
                await channel.exchange_delete(name)

    asyncio.run(go())


def test_every_message_published_to_rabbitmq_reaches_the_listener_across_kill_9_of_the_relay(
    redis_server: EmbeddedRedis, tmp_path: Path, processes: list[Process]
) -> None:
    prefix = uuid4().hex[:8]
    exchange, queue = f"test-os2mo-{prefix}", f"test-relay-{prefix}"
    common = {
        "BROKER_REDIS_URL": redis_server.url,
        "BROKER_FANOUT_BLOCK_SECONDS": "0.1",
        "BROKER_KEY_PREFIX": f"down{prefix}",
        "BROKER_FETCH_DEFAULT_WAIT_SECONDS": "2",
    }
    downstream = Process(broker_env(**common), tmp_path / "downstream.log")
    processes.append(downstream)
    listener = downstream.declare("integration", "person")
    relay_env = broker_env(
        **common,
        BROKER_RELAY_SOURCE="amqp",
        BROKER_RELAY_AMQP_URL=AMQP_URL,
        BROKER_RELAY_AMQP_EXCHANGE=exchange,
        BROKER_RELAY_AMQP_QUEUE=queue,
        BROKER_RELAY_ROUTING_KEYS="person",
    )
    try:
        relay = Process(relay_env, tmp_path / "relay-1.log", command="relay")
        processes.append(relay)
        subjects = [str(uuid4()) for _ in range(2 * EVENTS)]
        publish(exchange, [json.dumps(subject).encode() for subject in subjects[:EVENTS]])
        seen = receive_downstream(downstream, listener, {subjects[0]}, seconds=60, priority=10000)
        assert subjects[0] in seen, relay.output()
        relay.proc.send_signal(signal.SIGKILL)
        relay.proc.wait()
        publish(exchange, [json.dumps(subject).encode() for subject in subjects[EVENTS:]])
        restarted = Process(relay_env, tmp_path / "relay-2.log", command="relay")
        processes.append(restarted)
        seen |= receive_downstream(downstream, listener, set(subjects), 90, priority=10000)
        assert set(subjects) - seen == set(), restarted.output()
        assert restarted.stop() == 0
    finally:
        delete(exchange, queue)


def test_nothing_is_lost_across_kill_9_of_redis_and_of_the_downstream_broker(
    redis_server: EmbeddedRedis, tmp_path: Path, processes: list[Process]
) -> None:
    """The relay retries while the broker's Redis is down; fan-out work a killed broker left
    is taken over by its successor."""
    own = EmbeddedRedis(tmp_path / "redis").start()
    try:
        prefix = uuid4().hex[:8]
        upstream = Process(
            broker_env(
                BROKER_REDIS_URL=redis_server.url,
                BROKER_KEY_PREFIX=f"up{prefix}",
                BROKER_RETRY_MIN_SECONDS="1",
                BROKER_RETRY_MAX_SECONDS="1",
                BROKER_FETCH_DEFAULT_WAIT_SECONDS="2",
            ),
            tmp_path / "upstream.log",
        )
        processes.append(upstream)
        down_env = broker_env(
            BROKER_REDIS_URL=own.url,
            BROKER_FANOUT_BLOCK_SECONDS="0.1",
            BROKER_FANOUT_CLAIM_IDLE_SECONDS="1",
            BROKER_FETCH_DEFAULT_WAIT_SECONDS="2",
        )
        downstream = Process(down_env, tmp_path / "downstream-1.log")
        processes.append(downstream)
        listener = downstream.declare("integration", "person")
        relay = Process(
            broker_env(
                BROKER_REDIS_URL=own.url,
                BROKER_RELAY_OS2MO_URL=f"{upstream.url}/graphql/v25",
                BROKER_RELAY_AUTH_SERVER=f"{upstream.url}/auth",
                BROKER_RELAY_CLIENT_ID="event-broker-relay",
                BROKER_RELAY_CLIENT_SECRET="dev",
                BROKER_RELAY_ROUTING_KEYS="person",
            ),
            tmp_path / "relay.log",
            command="relay",
        )
        processes.append(relay)

        batches = [[f"{name}-{n}" for n in range(10)] for name in ("a", "b", "c")]
        send_upstream(upstream, batches[0], "person")
        own.kill()  # Redis dies mid-stream; the relay keeps its fetched events unacknowledged
        send_upstream(upstream, batches[1], "person")
        time.sleep(1)
        own.start()  # same port and data: what Redis confirmed is in its append-only file
        downstream.proc.send_signal(signal.SIGKILL)
        downstream.proc.wait()
        send_upstream(upstream, batches[2], "person")
        restarted = Process(down_env, tmp_path / "downstream-2.log")
        processes.append(restarted)
        wanted = {subject for batch in batches for subject in batch}
        seen = receive_downstream(restarted, listener, wanted, seconds=90)
        assert wanted - seen == set(), relay.output()
        assert relay.stop() == 0
    finally:
        own.stop()
