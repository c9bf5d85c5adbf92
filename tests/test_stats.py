"""The stats snapshot: scrapes answer from it, it catches up, and it rests when unasked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import RedisError

from broker import stats
from broker.storage.gauges import Snapshot
from tests import clients
from tests.conftest import MakeApi
from tests.test_metrics import listener_labels, scrape

LOUD = listener_labels("worker", "person", silenced="false")


async def test_a_scrape_answers_from_the_snapshot_until_the_next_read(
    make_api: MakeApi,
) -> None:
    api = await make_api(stats_interval_seconds=3600)
    await clients.declare(api, "person", "worker")
    await clients.send(api, "person", "s1")
    await clients.settle(api)
    _, first = await scrape(api)
    await clients.send(api, "person", "s2")
    await clients.settle(api)

    _, second = await scrape(api)

    assert first["os2mo_events", LOUD] == second["os2mo_events", LOUD] == 1
    assert second["broker_stats_age_seconds", frozenset()] > 0


async def test_the_snapshot_catches_up_within_a_few_intervals(make_api: MakeApi) -> None:
    api = await make_api(stats_interval_seconds=0.05)
    await clients.declare(api, "person", "worker")
    _, before = await scrape(api)
    await clients.send(api, "person", "s1")
    await clients.settle(api)

    for _ in range(200):
        _, samples = await scrape(api)
        if samples["os2mo_events", LOUD] == 1:
            break
        await asyncio.sleep(0.05)

    assert before["os2mo_events", LOUD] == 0
    assert samples["os2mo_events", LOUD] == 1


async def test_nobody_asking_stops_the_reads_and_a_scrape_starts_them_again(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    read_again = asyncio.Event()
    read_snapshot = stats.read_snapshot

    async def counted(store: Any) -> Snapshot:
        nonlocal reads
        reads += 1
        if reads > 1:
            read_again.set()
        return await read_snapshot(store)

    monkeypatch.setattr(stats, "read_snapshot", counted)
    interval = 0.05
    api = await make_api(stats_interval_seconds=interval)
    await scrape(api)
    # Polled, not timed: a loaded machine may run the background task late.
    quiet = 2 * stats.ACTIVE_INTERVALS * interval
    async with asyncio.timeout(60):
        await read_again.wait()  # it reads again while asked for
        while True:  # then stops: no read over twice the time it stays active
            resting = reads
            await asyncio.sleep(quiet)
            if reads == resting:
                break

    await clients.declare(api, "person", "worker")
    _, samples = await scrape(api)

    assert reads > resting
    assert samples["os2mo_events", LOUD] == 0  # a fresh read: the new listener is there


async def test_failed_reads_are_counted_and_a_stale_snapshot_is_left_out(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = 0.05
    api = await make_api(stats_interval_seconds=interval)
    await clients.declare(api, "person", "worker")
    _, fresh = await scrape(api)

    failed = asyncio.Event()

    async def unavailable(store: Any) -> Snapshot:
        failed.set()
        raise RedisError("Connection refused")

    monkeypatch.setattr(stats, "read_snapshot", unavailable)
    await asyncio.sleep(2 * stats.STALE_INTERVALS * interval)
    async with asyncio.timeout(60):  # a loaded machine may run the background task late
        await failed.wait()
    _, stale = await scrape(api)
    errors = ("broker_redis_errors_total", frozenset({("component", "metrics")}))

    assert ("os2mo_events", LOUD) in fresh
    assert ("os2mo_events", LOUD) not in stale
    assert ("broker_stats_age_seconds", frozenset()) not in stale
    assert stale[errors] >= 1
