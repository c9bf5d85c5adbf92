"""Wakes long-polling fetches when one of their listeners may have an event.

Whoever makes events fetchable (the fan-out writer in any process, unsilence,
rerun) publishes the listener uuids on one Redis channel; every broker process
subscribes once and wakes its local waiters. A lost message only delays a
waiter until its next timed re-check.

The same messages keep a memory of listeners known to have nothing to fetch, so
that an idle integration polling without `wait` costs no Redis call: a fetch that
found nothing is remembered until the listener is published, its next back-off
ends, or `empty_seconds` pass, whichever comes first (by this host's clock). It is
only kept while the subscription is up (a (re)subscription forgets everything, since
messages may have been missed), and never from a fetch that overlapped a message for
its listener. Only a poll's first look uses it: a long poll's later looks ask Redis.
A message published by another process reaches this one a fraction of a millisecond
late; within that window, and for at most `empty_seconds` if a publish fails after its
events were stored, a poll may still answer "nothing" while the event waits for the
next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
POLL_SECONDS = 0.25  # how often the subscriber looks up from its socket to see if it should stop


# Listeners remembered as empty at most; beyond that the memory starts over.
MAX_EMPTY = 100_000


class Notifier:
    def __init__(self, redis: Any, channel: str, empty_seconds: float = 0.0) -> None:
        self.redis = redis
        self.channel = channel
        self.empty_seconds = empty_seconds
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        # listener -> owner -> unix ms until which it has nothing to fetch
        self._empty: dict[str, dict[str, int]] = {}
        self._subscribed = False
        # Counts wake-ups and memory resets. A fetch remembers "empty" only if neither its
        # listener was woken nor the memory reset since the fetch started (`sequence` then).
        self.sequence = 0
        self._woken_at: dict[str, int] = {}  # listener -> sequence of its last wake-up
        self._reset_at = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.closing = False  # shutting down: waits return at once

    async def publish(self, listeners: Iterable[UUID]) -> None:
        names = [str(listener) for listener in listeners]
        if names:
            self._wake(names)  # this process at once, the others through Redis
            await self.redis.publish(self.channel, " ".join(names))

    def empty_until(self, listener: UUID, owner: str) -> int | None:
        """Until when (unix ms) a fetch for `owner` is known to find nothing, if it is."""
        owners = self._empty.get(str(listener))
        if not owners or owner not in owners:
            return None
        if owners[owner] > time.time() * 1000 and self._subscribed:
            return owners[owner]
        del owners[owner]
        return None

    def remember_empty(
        self, listener: UUID, owner: str, sequence: int, next_due_ms: int | None
    ) -> None:
        """A fetch that started at `sequence` found nothing; next back-off ends then."""
        if not self._subscribed or self.empty_seconds <= 0 or self._reset_at > sequence:
            return
        if self._woken_at.get(str(listener), -1) > sequence:
            return
        until_ms = int((time.time() + self.empty_seconds) * 1000)
        if next_due_ms is not None:
            until_ms = min(until_ms, next_due_ms)
        if len(self._empty) >= MAX_EMPTY:
            self._empty.clear()
        self._empty.setdefault(str(listener), {})[owner] = until_ms

    def forget_empty(self) -> None:
        """Forget every listener remembered as empty, and what fetches now under way find."""
        self.sequence += 1
        self._reset_at = self.sequence
        self._empty.clear()
        self._woken_at.clear()

    def _wake(self, listeners: Iterable[str]) -> None:
        self.sequence += 1
        if len(self._woken_at) >= MAX_EMPTY:
            self.forget_empty()
        for listener in listeners:
            self._woken_at[listener] = self.sequence
            for woken in self._waiters.get(listener, ()):
                woken.set()
            self._empty.pop(listener, None)

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
            await self._task
            self._task = None

    async def _listen_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._listen()
            except (RedisError, OSError) as error:
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
                        self.forget_empty()
                        self._subscribed = True
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes):
                        data = data.decode()
                    if isinstance(data, str):
                        self._wake(data.split())
            finally:
                self._subscribed = False
                self.forget_empty()
