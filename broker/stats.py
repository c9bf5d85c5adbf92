"""The process's snapshot of every listener's figures, refreshed while someone asks for it.

Reading every listener's pending counts costs in proportion to the whole registry, so
no request pays for it: `/metrics` and the console's sort by backlog answer from the
latest snapshot, which one background task reads again at most every
`BROKER_STATS_INTERVAL_SECONDS`, a page of listeners at a time (broker/storage/gauges.py),
and only while a scrape or a console page asked for it within the last
`ACTIVE_INTERVALS` intervals. The same design as RabbitMQ's management statistics, which
are collected per interval rather than per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from broker.storage.connection import UNAVAILABLE
from broker.storage.gauges import Snapshot, read_snapshot
from broker.storage.store import Store

log = logging.getLogger(__name__)

# The refresh stops when nobody asked for this many intervals.
ACTIVE_INTERVALS = 6
# A snapshot older than this many intervals (the reads failed since) is not shown.
STALE_INTERVALS = 3


class Stats:
    """The latest `Snapshot` of this process, and the task that keeps it fresh."""

    def __init__(
        self, store: Store, interval: float, on_error: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.interval = interval
        self.on_error = on_error
        self.latest: Snapshot | None = None
        self._latest_at = 0.0  # loop time of the read that made `latest`
        self._asked_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None  # a run's first read, until done

    async def snapshot(self, wait: float) -> Snapshot | None:
        """The latest snapshot, at once; after a quiet spell, the first fresh one within `wait`.

        Keeps the background refresh going. None when no snapshot is recent (the first
        read not done within `wait`, or Redis could not be read for a while).
        """
        loop = asyncio.get_running_loop()
        self._asked_at = loop.time()
        if self._task is None or self._task.done():
            self._first = loop.create_future()
            self._task = asyncio.create_task(self._refresh(), name="broker-stats")
        if wait > 0 and self._first is not None:
            with contextlib.suppress(TimeoutError):
                # Shielded: a request that gives up leaves the read to finish for the next.
                await asyncio.wait_for(asyncio.shield(self._first), wait)
        return self.latest if self._current() else None

    def age(self) -> float:
        """Seconds since the latest snapshot was read."""
        return asyncio.get_running_loop().time() - self._latest_at

    def _current(self) -> bool:
        return self.latest is not None and self.age() <= STALE_INTERVALS * self.interval

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() - self._asked_at < ACTIVE_INTERVALS * self.interval:
            started = loop.time()
            try:
                self.latest, self._latest_at = await read_snapshot(self.store), loop.time()
            except UNAVAILABLE as error:
                log.warning("stats: cannot read the event store (%s)", error)
                self.on_error()
            finally:
                if self._first is not None:
                    self._first.set_result(None)
                    self._first = None
            await asyncio.sleep(max(0.0, started + self.interval - loop.time()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
