"""Where relayed events go: the broker's `mo` namespace, through the same domain operation
as `event_send` (so coalescing, ingest and fan-out apply), on the broker's own Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from broker.errors import BrokerError
from broker.models import MO_NAMESPACE, Caller
from broker.notify import Notifier
from broker.operations import SYSTEM_OWNER, Broker
from broker.relay.metrics import RelayMetrics
from broker.settings import Settings
from broker.storage.connection import UNAVAILABLE, connect
from broker.storage.keys import Keys
from broker.storage.replication import Replication
from broker.storage.server import ServerWatch
from broker.storage.store import RedisClient, Store

log = logging.getLogger(__name__)

# The relay sends as OS2mo would: into `mo`, which only emitters may send into.
RELAY_CALLER = Caller(owner=SYSTEM_OWNER, mo_emitter=True)
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0


class Refused(Exception):
    """The broker refused the event itself (e.g. an overlong subject): retrying cannot help."""


class MoSink:
    def __init__(
        self, settings: Settings, metrics: RelayMetrics, redis: RedisClient | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.client = redis if redis is not None else connect(settings)
        self.own_client = redis is None
        keys = Keys(settings.key_prefix, settings.ingest_shards)
        # As in the broker: a confirmation waits for the configured replicas (and AOF fsync).
        replication = Replication(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
        self.server = ServerWatch(self.client, settings, replication)
        self.watching: asyncio.Task[None] | None = None
        self.store = Store(self.client, keys, replication)
        # Sending never waits on notifications; the broker needs a notifier all the same.
        notifier = Notifier(self.client, keys.notify_channel, 0)
        self.broker = Broker(self.store, settings, notifier)
        self.stopping = asyncio.Event()

    async def setup(self) -> None:
        """Check the server (as the broker does), the layout of the data (ingest shards)
        and that `mo` exists; then keep re-checking the server, for failovers."""
        await self.server.check()
        await self.broker.setup()
        self.watching = asyncio.create_task(self.server.watch())

    async def store_event(self, routing_key: str, subject: str, priority: int) -> bool:
        """Store one event; True once the broker confirmed it.

        Redis errors are retried with back-off until it succeeds, or until the relay stops
        (False: not stored, so the caller must not acknowledge it upstream).
        """
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await self.broker.send(RELAY_CALLER, MO_NAMESPACE, routing_key, subject, priority)
                return True
            except BrokerError as error:
                raise Refused(str(error)) from error
            except UNAVAILABLE as error:
                self.metrics.store_errors.inc()
                log.warning("cannot store an event in the broker (%s); retrying", error)
            if self.stopping.is_set():
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def ready(self) -> bool:
        if self.server.problem is not None:
            return False
        try:
            async with asyncio.timeout(1.0):
                return await self.store.ping()
        except UNAVAILABLE:
            return False

    def stop(self) -> None:
        """Stop retrying: events not stored by now stay unacknowledged upstream."""
        self.stopping.set()

    async def close(self) -> None:
        if self.watching is not None:
            self.watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watching
        if self.own_client:
            await self.client.aclose()
