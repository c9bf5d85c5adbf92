"""Redis reads for the metrics and the console: pending counts and ages, activity rates."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from broker.storage.base import StoreBase

# The per-minute activity ring in each listener's meta hash (lua/listener.lua, count_rate).
RATE_SLOTS = 16
# Listeners per stats script call on a single server (a call held Redis 0.15 ms in
# benchmarks/registry_cost.py; more where silenced events are scanned),
# and calls at once on a cluster (see `listener_figures`).
STATS_PER_CALL = 100
STATS_CONCURRENCY = 32

Figures = tuple[int, int, int | None, int | None]


@dataclass(frozen=True, slots=True)
class ListenerRates:
    """Events stored for a listener and acknowledgements by it, per minute, lately."""

    stored_per_minute: float
    acknowledged_per_minute: float


def _figures(reply: list[Any]) -> Figures:
    pending, silenced, oldest, oldest_silenced = reply
    return (
        int(pending),
        int(silenced),
        int(oldest) if oldest != "" else None,
        int(oldest_silenced) if oldest_silenced != "" else None,
    )


class Stats(StoreBase):
    """Per-listener figures for the metrics' gauges and the console."""

    async def listener_rates(
        self, listeners: Sequence[UUID], now_ms: int, window_minutes: int
    ) -> list[ListenerRates]:
        """Per-minute rates over the `window_minutes` before the current minute and its part.

        The counts live in Redis (every pod sees the same); `now_ms` places the window.
        """
        if not 1 <= window_minutes < RATE_SLOTS:
            raise ValueError(f"window_minutes must be 1 to {RATE_SLOTS - 1}")
        fields = [f"rate:{kind}:{slot}" for kind in "sa" for slot in range(RATE_SLOTS)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for uuid in listeners:
                pipe.hmget(self.keys.listener(uuid).meta, fields)
            replies = await pipe.execute()
        minute = now_ms // 60000
        span_minutes = window_minutes + (now_ms % 60000) / 60000
        rates = []
        for reply in replies:
            totals = {"s": 0, "a": 0}
            for field, held in zip(fields, reply, strict=True):
                if held is None:
                    continue
                at, count = (int(part) for part in held.split("|"))
                if minute - window_minutes <= at <= minute:
                    totals[field.split(":")[1]] += count
            rates.append(ListenerRates(totals["s"] / span_minutes, totals["a"] / span_minutes))
        return rates

    # Metrics ----------------------------------------------------------------------------------

    async def listener_figures(self, listeners: Sequence[UUID], scan: int) -> list[Figures]:
        """Per listener: pending, silenced, oldest unsilenced ms, oldest silenced ms.

        lua/stats.lua tells the two kinds' oldest apart among the `scan` oldest events.
        On a single server one call reads `STATS_PER_CALL` listeners, all of them in one
        pipeline: with one call per listener, redis-py's work per call (packing, parsing)
        cost 150-300 ms of the client's CPU at 10,000 listeners against Redis' 45 ms. On a
        cluster, where one call's keys must share a slot and redis-py runs no scripts in a
        pipeline, one call per listener, `STATS_CONCURRENCY` at a time.
        """
        if isinstance(self.redis, RedisCluster):
            replies: list[Any] = []
            for start in range(0, len(listeners), STATS_CONCURRENCY):
                chunk = listeners[start : start + STATS_CONCURRENCY]
                replies += await asyncio.gather(
                    *(
                        self._stats(keys=self.keys.listener_stats(uuid), args=[scan])
                        for uuid in chunk
                    )
                )
            return [_figures(reply[0]) for reply in replies]
        calls = [
            [
                key
                for uuid in listeners[start : start + STATS_PER_CALL]
                for key in self.keys.listener_stats(uuid)
            ]
            for start in range(0, len(listeners), STATS_PER_CALL)
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in calls:
                pipe.evalsha(self._stats.sha, len(keys), *keys, scan)
            replies = await pipe.execute(raise_on_error=False)
        figures: list[Figures] = []
        for keys, reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):  # not loaded yet (or Redis restarted)
                reply = await self._stats(keys=keys, args=[scan])
            elif isinstance(reply, Exception):
                raise reply
            figures += [_figures(item) for item in reply]
        return figures
