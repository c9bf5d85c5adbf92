"""Contract point 5 with real processes: concurrent fetches never hand out an event twice.

Two `broker serve` processes share one Redis server; 64 fetchers split across them fetch
one listener until it is empty. Inside the 30 s back-off every subject must be handed out
exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from redis.asyncio import Redis

from broker.app import create_app
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis
from broker.storage.keys import Keys
from tests import clients
from tests.processes import Process, broker_env

# Slow: own broker processes or large backlogs (`pytest -m "not slow"` leaves them out).
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

SUBJECTS = 200
FETCHERS = 64
BURST = 300  # concurrent requests on one app: more than its Redis pool holds


@pytest.fixture
def redis_for_brokers(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def two_brokers(
    redis_for_brokers: EmbeddedRedis, tmp_path: Path, processes: list[Process]
) -> list[Process]:
    env = broker_env(
        BROKER_REDIS_URL=redis_for_brokers.url,
        BROKER_RETRY_MIN_SECONDS="30",
        BROKER_RETRY_MAX_SECONDS="30",
        BROKER_LOG_LEVEL="WARNING",
    )
    for n in range(2):
        processes.append(Process(env, tmp_path / f"broker-{n}.log"))
    return processes


async def gql(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    response = await http.post("/graphql/v25", json={"query": query, "variables": variables})
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def send_input(subject: str) -> dict[str, Any]:
    return {"input": {"namespace": "mo", "routing_key": "person", "subject": subject}}


async def fetch_until_empty(http: httpx.AsyncClient, listener: str) -> list[str]:
    subjects = []
    for _ in range(SUBJECTS + 1):  # bounded: there are only SUBJECTS events to hand out
        event = (await gql(http, clients.FETCH, {"listener": listener}))["event_fetch"]
        if event is None:
            return subjects
        subjects.append(event["subject"])
    raise AssertionError(f"a fetcher got more than {SUBJECTS} events")


async def test_concurrent_fetchers_on_two_brokers_hand_out_each_event_exactly_once(
    redis_for_brokers: EmbeddedRedis, two_brokers: list[Process]
) -> None:
    https = [httpx.AsyncClient(base_url=broker.url, timeout=30) for broker in two_brokers]
    redis = Redis.from_url(redis_for_brokers.url, decode_responses=True)
    try:
        async with asyncio.timeout(120):
            declared = await gql(
                https[0],
                clients.DECLARE_LISTENER,
                {"input": {"namespace": "mo", "user_key": "race", "routing_key": "person"}},
            )
            listener = declared["event_listener_declare"]["uuid"]
            sent = [f"subject-{n}" for n in range(SUBJECTS)]
            senders = asyncio.Semaphore(16)

            async def send(http: httpx.AsyncClient, subject: str) -> None:
                async with senders:
                    await gql(http, clients.SEND, send_input(subject))

            await asyncio.gather(*(send(https[n % 2], s) for n, s in enumerate(sent)))
            events = Keys("broker", 16).listener(UUID(listener)).events
            for _ in range(1200):  # both fan-out writers at work
                if await redis.hlen(events) == SUBJECTS:
                    break
                await asyncio.sleep(0.05)

            handed_out = await asyncio.gather(
                *(fetch_until_empty(https[n % 2], listener) for n in range(FETCHERS))
            )
    finally:
        for http in https:
            await http.aclose()
        await redis.aclose()

    counts = Counter(subject for fetched in handed_out for subject in fetched)
    assert [s for s, n in counts.items() if n > 1] == [], "handed out twice in the back-off"
    assert set(counts) == set(sent), "never handed out"


async def test_a_burst_of_requests_while_redis_is_briefly_busy_waits_instead_of_failing(
    redis_for_brokers: EmbeddedRedis,
) -> None:
    # In-process (the app's own Redis client and pool, as `connect` builds them) so that
    # only the broker's pool is under test, not how many sockets the machine accepts.
    settings = Settings(redis_url=redis_for_brokers.url, fanout_block_seconds=0.05)
    app = create_app(settings)
    redis = Redis.from_url(redis_for_brokers.url, decode_responses=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as http:
            await gql(
                http,
                clients.DECLARE_LISTENER,
                {"input": {"namespace": "mo", "user_key": "burst", "routing_key": "person"}},
            )
            # Redis answers nothing for two seconds, as during a large DEL or an AOF fork.
            await redis.execute_command("CLIENT", "PAUSE", 2000, "ALL")
            try:
                async with asyncio.timeout(60):
                    sends = [
                        http.post(
                            "/graphql/v25",
                            json={"query": clients.SEND, "variables": send_input(f"s{n}")},
                        )
                        for n in range(BURST)
                    ]
                    answers = [response.json() for response in await asyncio.gather(*sends)]
            finally:
                await redis.aclose()
    refusals = Counter(e["message"] for answer in answers for e in answer.get("errors", []))
    assert refusals == Counter(), refusals


async def test_a_process_that_found_nothing_gets_the_next_event_sent_through_another(
    two_brokers: list[Process],
) -> None:
    """Each idle poll is answered from memory; an event stored by either fan-out ends that."""
    idle, busy = (httpx.AsyncClient(base_url=b.url, timeout=30) for b in two_brokers)
    try:
        async with asyncio.timeout(60):
            declared = await gql(
                idle,
                clients.DECLARE_LISTENER,
                {"input": {"namespace": "mo", "user_key": "idle", "routing_key": "person"}},
            )
            listener = {"listener": declared["event_listener_declare"]["uuid"]}
            for n in range(10):  # both processes' fan-out writers take their turns
                for _ in range(3):
                    assert (await gql(idle, clients.FETCH, listener))["event_fetch"] is None
                await gql(busy, clients.SEND, send_input(f"subject-{n}"))
                for _ in range(100):  # well under BROKER_FETCH_EMPTY_CACHE_SECONDS
                    event = (await gql(idle, clients.FETCH, listener))["event_fetch"]
                    if event is not None:
                        break
                    await asyncio.sleep(0.05)
                assert event is not None and event["subject"] == f"subject-{n}"
                await gql(idle, clients.ACK, {"token": event["token"]})
    finally:
        await idle.aclose()
        await busy.aclose()
