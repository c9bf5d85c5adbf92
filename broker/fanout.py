"""The fan-out writer: copies each ingest entry into every matching listener.

Every broker process runs one. Processes share the work through the `fanout`
consumer group on each ingest shard; entries a crashed process read but did not
finish are taken over after `fanout_claim_idle_seconds`. An entry is acknowledged
only after every listener has it, so a crash means a repeat, never a loss, and
the listener script makes a repeat harmless (see lua/apply.lua).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID, uuid4

from redis.exceptions import ResponseError

from broker.errors import NotReplicated
from broker.metrics import Metrics
from broker.notify import Notifier
from broker.settings import Settings
from broker.storage.connection import UNAVAILABLE
from broker.storage.store import IngestEntry, Store, stream_id_order

# What a shard's writer waits out and retries (the batch stays unacknowledged).
RETRIED: tuple[type[Exception], ...] = (*UNAVAILABLE, NotReplicated)

log = logging.getLogger(__name__)

APPLY_CONCURRENCY = 64
MIN_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0
FORGET_CONSUMERS_IDLE_MS = 3_600_000  # consumers of gone processes are dropped after an hour


class FanOut:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid4().hex[:8]}"
        self.notifier = notifier
        self.block_ms = int(settings.fanout_block_seconds * 1000)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle: set[asyncio.Task[None]] = set()  # blocked reading, holding no work
        # A shard's batch that failed part-way (e.g. not replicated in time): this worker
        # does it again after its back-off, instead of leaving it for the take-over, which
        # waits `fanout_claim_idle_seconds`.
        self._unfinished: dict[int, Sequence[IngestEntry]] = {}

    def start(self) -> None:
        for shard in range(self.store.keys.shards):
            self._tasks.append(asyncio.create_task(self._forever(self._read, shard)))
            self._tasks.append(asyncio.create_task(self._forever(self._claim, shard)))

    async def stop(self, grace_seconds: float) -> None:
        """Let batches in progress finish (up to `grace_seconds`), then cancel what is left."""
        self._stopping.set()
        for task in self._idle:
            task.cancel()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()

    async def _forever(self, step: Callable[[int], Awaitable[None]], shard: int) -> None:
        backoff = MIN_BACKOFF_SECONDS
        recreate = False
        while not self._stopping.is_set():
            try:
                if recreate:
                    await self.store.ensure_ingest(shard)
                    recreate = False
                await step(shard)
                backoff = MIN_BACKOFF_SECONDS
            except RETRIED as error:
                # NotReplicated: the batch stays unacknowledged and is done again.
                # The ingest stream vanished (e.g. Redis lost its data): recreate it.
                recreate = isinstance(error, ResponseError) and "NOGROUP" in str(error)
                self.metrics.redis_errors.labels("fanout").inc()
                log.warning("fan-out shard %d: %s; retrying in %.1f s", shard, error, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception:
                # A shard's writer must never die: its entries would wait forever. Seen:
                # redis-py's cluster client failing on a connection it closed during a
                # failover (AttributeError on a None writer).
                self.metrics.redis_errors.labels("fanout").inc()
                log.exception(
                    "fan-out shard %d: unexpected error; retrying in %.1f s", shard, backoff
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _read(self, shard: int) -> None:
        if unfinished := self._unfinished.pop(shard, None):
            await self._process_or_keep(shard, unfinished)
            return
        task = asyncio.current_task()
        assert task is not None
        self._idle.add(task)
        try:
            entries = await self.store.read_ingest(
                shard, self.consumer, self.settings.fanout_batch, self.block_ms
            )
        finally:
            self._idle.discard(task)
        if entries:
            await self._process_or_keep(shard, entries)

    async def _process_or_keep(self, shard: int, entries: Sequence[IngestEntry]) -> None:
        try:
            await self.process(shard, entries)
        except BaseException:
            self._unfinished[shard] = entries
            raise

    async def _claim(self, shard: int) -> None:
        await self._sleep(self.settings.fanout_claim_idle_seconds / 2)
        if self._stopping.is_set():
            return
        idle_ms = int(self.settings.fanout_claim_idle_seconds * 1000)
        entries = await self.store.claim_ingest(
            shard, self.consumer, idle_ms, self.settings.fanout_batch
        )
        if entries:
            log.info("fan-out shard %d: took over %d unfinished entries", shard, len(entries))
            await self.process(shard, entries)
        await self.store.forget_idle_consumers(shard, FORGET_CONSUMERS_IDLE_MS)

    async def process(self, shard: int, entries: Sequence[IngestEntry]) -> None:
        """Apply a batch of one shard's entries to their listeners, then acknowledge it."""
        by_topic: dict[tuple[str, str], list[IngestEntry]] = defaultdict(list)
        for entry in entries:
            by_topic[entry.namespace, entry.routing_key].append(entry)

        work: dict[UUID, tuple[tuple[str, str], list[IngestEntry]]] = {}
        for topic, topic_entries in by_topic.items():
            for listener, since in (await self.store.topic_listeners(*topic)).items():
                newer = stream_id_order(since)
                mine = [e for e in topic_entries if stream_id_order(e.id) > newer]
                if mine:
                    work[listener] = (topic, mine)

        limit = asyncio.Semaphore(APPLY_CONCURRENCY)
        applied_to: set[UUID] = set()

        async def apply(listener: UUID, topic: tuple[str, str], mine: list[IngestEntry]) -> None:
            async with limit:
                changed = await self.store.apply(listener, mine)
            if changed < 0:
                # Deleted while registered with its topic: finish the unsubscribe.
                await self.store.drop_from_topic(*topic, listener)
            else:
                # Even when nothing changed: this may be the retry of a batch whose
                # wake-ups were never published.
                applied_to.add(listener)

        outcomes = await asyncio.gather(
            *(apply(lst, topic, mine) for lst, (topic, mine) in work.items()),
            return_exceptions=True,
        )
        # Wake long polls first: the events are stored, and this is the latency path.
        # Also when one listener failed: the others' events are stored all the same.
        if self.notifier is not None:
            await self.notifier.publish(applied_to)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the batch stays unacknowledged and is done again
        await self.store.ack_ingest(shard, [entry.id for entry in entries])
