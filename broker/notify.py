"""Wakes long-polling fetches when one of their listeners may have an event.

Whoever makes events fetchable (the fan-out writer in any process, unsilence,
rerun) publishes the listener uuids on one Redis channel; every broker process
subscribes once and wakes its local waiters. A lost message only delays a
waiter until its next timed re-check. The same messages keep `empty`, the memory of
listeners with nothing to fetch (broker/idle.py), up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from redis.exceptions import RedisError

from broker.idle import EmptyListeners
from broker.storage.connection import UNAVAILABLE

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
POLL_SECONDS = 0.25  # how often the subscriber looks up from its socket to see if it should stop


class Notifier:
    def __init__(self, redis: Any, channel: str, empty_seconds: float = 0.0) -> None:
        self.redis = redis
        self.channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.empty = EmptyListeners(empty_seconds)
        self._subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.closing = False  # shutting down: waits return at once

    async def publish(self, listeners: Iterable[UUID]) -> None:
        names = [str(listener) for listener in listeners]
        if names:
            self._wake(names)  # this process at once, the others through Redis
            await self.redis.publish(self.channel, " ".join(names))

    def _wake(self, listeners: list[str]) -> None:
        self.empty.woken(listeners)
        for listener in listeners:
            for woken in self._waiters.get(listener, ()):
                woken.set()

    async def wait(self, listener: UUID, seconds: float) -> None:
        """Return when `listener` is published, after `seconds`, or on `close()`."""
        if self.closing:
            return
        key = str(listener)
        woken = asyncio.Event()
        self._waiters[key].add(woken)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=seconds)
        finally:
            self._waiters[key].discard(woken)
            if not self._waiters[key]:
                del self._waiters[key]

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._waiters.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    def close(self) -> None:
        """Wake every waiter now and from now on: the server is shutting down."""
        self.closing = True
        for events in self._waiters.values():
            for woken in events:
                woken.set()

    async def stop(self) -> None:
        self.close()
        # Not a cancellation: cancelling a pub/sub read mid-way can hang its clean-up.
        self._stopping.set()
        if self._task is not None:
            if self._subscribed:
                # An empty message (a no-op for every subscriber) ends the subscriber's
                # read now rather than at its next look-up, `POLL_SECONDS` later.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self.redis.publish(self.channel, "")
            await self._task
            self._task = None

    async def _listen_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._listen()
            except UNAVAILABLE as error:
                log.warning("event notifications interrupted (%s); resubscribing", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), RECONNECT_SECONDS)

    async def _listen(self) -> None:
        async with self.redis.pubsub() as pubsub:
            try:
                await pubsub.subscribe(self.channel)
                while not self._stopping.is_set():
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    if message.get("type") == "subscribe":
                        # Messages may have been missed before (also when redis-py has
                        # reconnected on its own): start remembering afresh.
                        self.empty.trust()
                        self._subscribed = True
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes):
                        data = data.decode()
                    if isinstance(data, str):
                        self._wake(data.split())
            finally:
                self._subscribed = False
                self.empty.distrust()
