"""Source: OS2mo's AMQP exchange (older installs), read through a durable quorum queue.

Routing key = object type; body = the object's UUID as a JSON string. A message is
acknowledged to RabbitMQ only after the broker confirmed the event; a bad body is logged,
counted and rejected into the queue's dead-letter queue. Replicas consume the same queue,
so RabbitMQ hands each message to one of them; unacknowledged messages (a crash) return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from uuid import UUID

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from broker.relay.metrics import RelayMetrics
from broker.relay.settings import RelaySettings
from broker.relay.sink import MoSink, Refused

log = logging.getLogger(__name__)

SOURCE = "amqp"
# OS2mo's default priority: AMQP messages carry none.
DEFAULT_PRIORITY = 10000


def subject_of(body: bytes) -> str | None:
    """The object UUID a body names (canonical form, as OS2mo's GraphQL events), or None."""
    try:
        value = json.loads(body)
        return str(UUID(value)) if isinstance(value, str) else None
    except (ValueError, UnicodeDecodeError):
        return None


class AmqpSource:
    def __init__(self, settings: RelaySettings, sink: MoSink, metrics: RelayMetrics) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None
        self.queue: AbstractQueue | None = None
        self.consumer_tag: str | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        self.stopped = asyncio.Event()

    @property
    def dead_letter(self) -> str:
        """Name of the dead-letter exchange and queue that bad bodies go to."""
        return f"{self.settings.amqp_queue}.dead-letter"

    @property
    def healthy(self) -> bool:
        """Connected and consuming. Not before: OS2mo's exchange drops what it publishes
        while our queue is not yet bound, so readiness must mean "bound and consuming"."""
        connected = self.connection is not None and not self.connection.is_closed
        return connected and self.consumer_tag is not None

    async def declare(self) -> AbstractQueue:
        """Connect and declare exchange, queue, bindings and the dead-letter queue (idempotent)."""
        assert self.settings.amqp_url is not None
        self.connection = await aio_pika.connect_robust(
            self.settings.amqp_url.get_secret_value(),
            client_properties={"connection_name": "event-broker-relay"},
        )
        self.connection.close_callbacks.add(self._connection_lost)
        channel = await self.connection.channel()
        assert isinstance(channel, aio_pika.RobustChannel)
        self.channel = channel
        await channel.set_qos(prefetch_count=self.settings.amqp_prefetch)
        exchange = await channel.declare_exchange(
            self.settings.amqp_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead_letter = await channel.declare_exchange(
            self.dead_letter, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(
            self.dead_letter, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead_letter)
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_letter,
        }
        queue = await channel.declare_queue(
            self.settings.amqp_queue, durable=True, arguments=arguments
        )
        for routing_key in self.settings.routing_keys:
            await queue.bind(exchange, routing_key)
        self.queue = queue
        return queue

    def _connection_lost(self, *args: object) -> None:
        if not self.stopped.is_set():
            self.metrics.upstream_errors.labels(SOURCE).inc()
            log.warning("lost the connection to RabbitMQ; reconnecting")

    async def run(self) -> None:
        """Consume until `stop()`; each message is handled in a task of its own."""
        pause = 1.0
        while not self.stopped.is_set():
            try:
                queue = await self.declare()
                break
            except (aio_pika.exceptions.AMQPError, OSError) as error:
                self.metrics.upstream_errors.labels(SOURCE).inc()
                log.warning("cannot set up the AMQP queue (%r); retrying", error)
                await self.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self.stopped.wait()
                pause = min(pause * 2, 30.0)
        else:
            return
        self.consumer_tag = await queue.consume(self._on_message)
        await self.stopped.wait()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika awaits this callback; prefetch bounds how many run at once.
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            await self.handle(message)
        except Exception:
            # Never leave a message unsettled on a live channel: it would hold a prefetch slot.
            log.exception("unexpected error relaying an AMQP message; it goes back to the queue")
            await message.nack(requeue=True)
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        received = time.monotonic()
        routing_key = message.routing_key or ""
        subject = subject_of(message.body)
        if subject is None:
            log.error(
                "rejected an AMQP message with routing key %r: its body is not a JSON string "
                "holding a UUID (%d bytes); it goes to %s",
                routing_key,
                len(message.body),
                self.dead_letter,
            )
            self.metrics.rejected.labels(SOURCE, "bad body").inc()
            await message.reject(requeue=False)
            return
        try:
            stored = await self.sink.store_event(routing_key, subject, DEFAULT_PRIORITY)
        except Refused as error:
            log.error("the broker refused an event from %s: %s", routing_key, error)
            self.metrics.rejected.labels(SOURCE, "refused").inc()
            await message.reject(requeue=False)
            return
        if not stored:
            return  # stopping: RabbitMQ hands it out again once this channel closes
        await message.ack()
        self.metrics.relayed.labels(SOURCE, routing_key).inc()
        self.metrics.lag.labels(SOURCE).observe(time.monotonic() - received)
        self.metrics.last_relayed.labels(SOURCE).set_to_current_time()

    async def drain(self) -> None:
        """Stop taking messages; let those in flight finish (stored and acked, or not)."""
        if self.queue is not None and self.consumer_tag is not None:
            try:
                await self.queue.cancel(self.consumer_tag)
            except (aio_pika.exceptions.AMQPError, ConnectionError) as error:
                log.warning("could not cancel the AMQP consumer: %r", error)
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    def stop(self) -> None:
        self.stopped.set()

    async def close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            await connection.close()
