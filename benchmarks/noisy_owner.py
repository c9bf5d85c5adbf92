"""A noisy owner: one owner's large listings, sent from several clients, against another
owner's fetch + acknowledge.

    python -m benchmarks.noisy_owner                  # 4 clients, 1,000 listeners, 200 cycles
    python -m benchmarks.noisy_owner --clients 8 --cycles 100

Starts a private Valkey/Redis server and `python -m broker serve` (as
benchmarks/registry_cost.py does). Owner A has `--listeners` listeners; owner B has one
listener with a backlog. B fetches and acknowledges one event at a time, `--cycles`
times, first with A idle (the baseline), then while A's `--clients` clients each loop one
of A's queries in a closed loop; `/health/live` is probed every 10 ms meanwhile. Each
query's row gives B's median cycle and the probe's p99 against the baseline of the same
run, and how many requests A got through per second (a cap that starved A would show
there). A's clients run in a process of their own, so that the measuring process's event
loop is not the one busy with A's answers. The "cheap" query is the control for what any
four busy clients cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.registry_cost import DECLARE_NS, Broker, declare, gql, populate, token

QUERIES = {
    "cheap (control)": "{ me { actor { uuid } } }",
    "event_listeners(limit: 1000)": (
        "{ event_listeners(limit: 1000) { objects { uuid user_key routing_key } } }"
    ),
    "event_listeners (no limit)": "{ event_listeners { objects { uuid user_key } } }",
    "10 aliases of event_listeners(limit: 1000)": "{ "
    + " ".join(f"a{n}: event_listeners(limit: 1000) {{ objects {{ uuid }} }}" for n in range(10))
    + " }",
    "me { actor { event_listeners } }": (
        "{ me { actor { event_listeners { uuid user_key routing_key } } } }"
    ),
}
FETCH = """query($listener: UUID!) {
  event_fetch(filter: {listener: $listener}) { subject token } }"""
ACK = "mutation($token: EventToken!) { event_acknowledge(input: {token: $token}) }"
DECLARE = (
    """mutation($input: ListenerCreateInput!) { event_listener_declare(input: $input) { uuid } }"""
)
SEND = """mutation($s: String!) { event_send(input: {namespace: "quiet", routing_key: "r",
  subject: $s, priority: 1}) }"""


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1] if values else float("nan")


async def cycles(http: httpx.AsyncClient, owner: uuid.UUID, listener: str, n: int) -> list[float]:
    """Wall ms of `n` fetch + acknowledge cycles of one event each."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        event = (await gql(http, owner, FETCH, {"listener": listener}))["event_fetch"]
        assert event is not None, "B's backlog ran out: raise --backlog"
        await gql(http, owner, ACK, {"token": event["token"]})
        times.append((time.perf_counter() - start) * 1000)
    return times


async def probe(http: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    times = []
    while not stop.is_set():
        start = time.perf_counter()
        (await http.get("/health/live")).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)
    return times


def noisy(url: str, owner: str, query: str, clients: int, stop: Any, done: Any) -> None:
    """Owner A's clients, in a process of their own: the measuring process's event loop
    must not be the one busy with A's large answers."""

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await http.post(
                "/graphql/v25",
                json={"query": query},
                headers={"Authorization": f"Bearer {token(uuid.UUID(owner))}"},
            )
            assert response.status_code == 200 and b'"errors"' not in response.content
            with done.get_lock():
                done.value += 1

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await asyncio.gather(*(client(http) for _ in range(clients)))

    asyncio.run(run())


async def measure(
    http: httpx.AsyncClient,
    a: uuid.UUID,
    b: uuid.UUID,
    listener: str,
    query: str | None,
    options: argparse.Namespace,
) -> tuple[float, float, float]:
    """(B's median cycle ms, /health/live p99 ms, A's requests per second) with A looping
    `query` from `--clients` clients (None: A idle)."""
    spawn = multiprocessing.get_context("spawn")
    stop, done = spawn.Event(), spawn.Value("i", 0)
    load = None
    if query is not None:
        load = spawn.Process(
            target=noisy, args=(str(http.base_url), str(a), query, options.clients, stop, done)
        )
        load.start()
        # A's clients under way (a counter in shared memory: no event to wait on).
        while done.value < options.clients:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    probing_stop = asyncio.Event()
    probing = asyncio.create_task(probe(http, probing_stop))
    start = time.perf_counter()
    served = done.value
    try:
        times = await cycles(http, b, listener, options.cycles)
    finally:
        elapsed = time.perf_counter() - start
        served = done.value - served
        stop.set()
        probing_stop.set()
        if load is not None:
            load.join(60)
            assert load.exitcode == 0, "A's clients failed"
    live = await probing
    return statistics.median(times), p99(live), served / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=1000, help="owner A's listeners")
    parser.add_argument("--clients", type=int, default=4, help="owner A's concurrent clients")
    parser.add_argument("--cycles", type=int, default=200, help="B's cycles per figure")
    options = parser.parse_args()
    backlog = options.cycles * (2 * len(QUERIES) + 1)
    a, b = uuid.uuid4(), uuid.uuid4()
    with tempfile.TemporaryDirectory(prefix="noisy-owner-") as tmp:
        broker = Broker(Path(tmp), options.listeners)
        async with broker as http:
            await gql(http, a, DECLARE_NS, {"ns": "busy"})
            await gql(http, b, DECLARE_NS, {"ns": "quiet"})
            await declare(http, a, "busy", ["a0"])
            await populate(
                broker.redis.url, a, "busy", [f"a{n}" for n in range(1, options.listeners)]
            )
            declared = await gql(
                http,
                b,
                DECLARE,
                {"input": {"namespace": "quiet", "user_key": "b", "routing_key": "r"}},
            )
            listener = declared["event_listener_declare"]["uuid"]
            for n in range(backlog):
                await gql(http, b, SEND, {"s": f"subject-{n}"})
            for query in QUERIES.values():  # warm: documents seen, answers correct
                await gql(http, a, query, {})
            rows = []
            for name, query in QUERIES.items():
                quiet = await measure(http, a, b, listener, None, options)
                busy = await measure(http, a, b, listener, query, options)
                rows.append((name, quiet, busy))
    print(f"owner A: {options.listeners} listeners, {options.clients} clients; owner B: "
          f"{options.cycles} fetch + acknowledge cycles per figure")  # fmt: skip
    print()
    print("| A's query | B's cycle, A idle → loaded | ratio | live p99, idle → loaded "
          "| A's requests/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name, (cycle, live, _), (loaded, loaded_live, rate) in rows:
        print(
            f"| {name} | {cycle:.1f} → {loaded:.1f} ms | {loaded / cycle:.2f}x "
            f"| {live:.1f} → {loaded_live:.1f} ms | {rate:.0f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
