"""What the operator console costs: its activity counters on the hot path, and its pages.

    python -m benchmarks.console [--listeners 5000] [--events 10000] [--rounds 7]

Runs on a private Valkey/Redis (EmbeddedRedis, no persistence) on a free port. Figures,
each beside a baseline measured in the same run:

1. Redis CPU per acknowledge and per fan-out apply call (`INFO commandstats`, usec per
   EVALSHA) for the scripts as shipped, which count events per minute for the console's
   rates, against the same scripts with that `count_rate` call cut out. Rounds alternate
   the two so that drift hits both. Fetch does not count anything and is unchanged.
2. GET /console/listeners with `--listeners` listeners (the app in-process over ASGI):
   sorted and filtered by backlog, the first time (no stats snapshot yet: every
   listener's counts read then) and then from the snapshot, against the default page
   (sorted by name: only the shown page's counts read); and one listener's page and a
   subject search with `--events` pending events.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from broker.app import create_app
from broker.models import EventSelection, Listener, Namespace
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis
from broker.storage.keys import Keys
from broker.storage.store import IngestEntry, Store, _lua, listener_script

RATE_CALLS = {
    "acknowledge": "count_rate('a', 1, tonumber(ARGV[4]))\n",
    "apply": "if changed > 0 then count_rate('s', changed, tonumber(ARGV[1])) end\n",
}
APPLY_BATCH = 64


def without_counter(redis: Redis, name: str) -> Any:
    """The script `name` as shipped but without its per-minute counter (the baseline)."""
    assert RATE_CALLS[name] in _lua(name), f"{name}.lua no longer counts as expected"
    return redis.register_script(listener_script(name).replace(RATE_CALLS[name], ""))


async def usec_per_call(redis: Redis, work: Callable[[], Awaitable[None]]) -> float:
    await redis.config_resetstat()
    await work()
    stats = await redis.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"])


async def new_listener(store: Store, user_key: str) -> Listener:
    owner = uuid.uuid4()
    # The namespace first: a listener's claim is refused in one that does not exist.
    await store.claim_namespace(Namespace("bench", owner, public=True), "bench")
    listener = Listener(uuid.uuid4(), owner, "bench", "r", user_key)
    claimed, _ = await store.claim_listener(listener)
    assert claimed is not None
    await store.create_listener_state(listener)
    await store.subscribe(listener)
    return listener


def entries(count: int, start: int) -> list[IngestEntry]:
    now = int(time.time() * 1000)
    return [
        IngestEntry(f"{now}-{start + i}", "bench", "r", f"s{start + i}", 10) for i in range(count)
    ]


async def hot_path(redis: Redis, rounds: int, events: int) -> None:
    store = Store(redis, Keys("hot", 1))
    await store.setup()
    shipped = {"acknowledge": store._acknowledge, "apply": store._apply}
    baseline = {name: without_counter(redis, name) for name in RATE_CALLS}
    figures: dict[str, dict[str, list[float]]] = {
        name: {"shipped": [], "baseline": []} for name in RATE_CALLS
    }
    for round_number in range(rounds):
        variants = ["shipped", "baseline"] if round_number % 2 == 0 else ["baseline", "shipped"]
        for variant in variants:
            listener = await new_listener(store, f"{variant}-{round_number}")
            keys = store.keys.listener(listener.uuid).as_list()
            apply_script = (shipped if variant == "shipped" else baseline)["apply"]

            async def apply_all(script: Any = apply_script, keys: list[str] = keys) -> None:
                for start in range(0, events, APPLY_BATCH):
                    args: list[Any] = [int(time.time() * 1000)]
                    for entry in entries(APPLY_BATCH, start):
                        args += [entry.subject, entry.priority, entry.id, entry.created_ms]
                    await script(keys=keys, args=args)

            figures["apply"][variant].append(await usec_per_call(redis, apply_all))
            pending = await store.pending(listener.uuid, EventSelection(), None, None)
            ack_script = (shipped if variant == "shipped" else baseline)["acknowledge"]

            async def ack_all(
                script: Any = ack_script, keys: list[str] = keys, pending: Any = pending
            ) -> None:
                for event in pending:
                    now = int(time.time() * 1000)
                    assert await script(keys=keys, args=["", event.subject, event.generation, now])

            figures["acknowledge"][variant].append(await usec_per_call(redis, ack_all))
            await store.delete_listener_state(listener.uuid, None, True)
    print(f"1. Redis time per script call over {rounds} rounds of {events} events")
    print("   (min: least disturbed by other processes; median)")
    for name, found in figures.items():
        unit = f"call of {APPLY_BATCH} events" if name == "apply" else "call"
        for pick in (min, statistics.median):
            shipped_us, baseline_us = pick(found["shipped"]), pick(found["baseline"])
            print(
                f"   {name:<12} {pick.__name__:<6} with counters {shipped_us:7.2f} us/{unit}   "
                f"without (baseline) {baseline_us:7.2f}   ratio {shipped_us / baseline_us:.3f}"
            )


async def timed(http: httpx.AsyncClient, path: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = await http.get(path)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(times) * 1000


async def pages(redis: Redis, listeners: int, events: int, repeats: int) -> None:
    prefix = "pages"
    store = Store(redis, Keys(prefix, 16))
    await store.setup()
    created: list[Listener] = []
    for start in range(0, listeners, 200):
        created += await asyncio.gather(
            *(
                new_listener(store, f"listener-{i:05d}")
                for i in range(start, min(start + 200, listeners))
            )
        )
    for number, listener in enumerate(created[: listeners // 10]):
        await store.apply(listener.uuid, entries(1 + number % 20, 0))
    deep = created[0]
    for start in range(0, events, 500):
        await store.apply(deep.uuid, entries(500, 100 + start))
    settings = Settings(key_prefix=prefix, ingest_shards=16, fanout_block_seconds=0.05)
    app = create_app(settings, redis=redis)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as http:
            by_name = await timed(http, "/console/listeners", repeats)
            sorted_page = "/console/listeners?sort=pending&order=desc"
            first = await timed(http, sorted_page, 1)
            await http.get("/metrics")  # waits for the snapshot's first read
            listing = await timed(http, sorted_page, repeats)
            backlog = await timed(http, "/console/listeners?backlog=1&older=1", repeats)
            one = await timed(http, f"/console/listeners/{deep.uuid}", repeats)
            search = await timed(http, f"/console/listeners/{deep.uuid}?q=s777", repeats)
            graphql_page = await http.post(
                "/graphql/v25",
                json={"query": "{ event_listeners(limit: 50) { objects { uuid } } }"},
            )
            assert graphql_page.status_code == 200
    print(f"2. Console pages, median of {repeats} (in-process, one client)")
    print(f"   /console/listeners, {listeners} listeners, by name (default):  {by_name:7.1f} ms")
    print(f"   sorted by pending, first time (reads every listener now): {first:7.1f} ms")
    print(f"   sorted by pending, from the snapshot:                     {listing:7.1f} ms")
    print(f"   same, filtered (has backlog, oldest > 1 min):             {backlog:7.1f} ms")
    print(f"   ratio sorted (snapshot) / by name: {listing / by_name:.2f}")
    print(f"   one listener with {events} pending events, first page:  {one:7.1f} ms")
    print(f"   same, search by subject (scans every pending event):    {search:7.1f} ms")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="broker-console-bench-") as workdir:
        server = EmbeddedRedis(Path(workdir), extra_args=("--appendonly", "no")).start()
        redis = Redis.from_url(server.url, decode_responses=True, max_connections=400)
        try:
            await hot_path(redis, args.rounds, min(args.events, 1024))
            await pages(redis, args.listeners, args.events, args.repeats)
        finally:
            await redis.aclose()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=5000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
