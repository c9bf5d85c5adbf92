"""Registry cost: one owner's listings while another owner has 10 or 10,000 listeners.

    python -m benchmarks.registry_cost            # 10 against 10,000 listeners
    python -m benchmarks.registry_cost --others 2000 --requests 50   # a quicker run

Starts a private Valkey/Redis server (no persistence) and `python -m broker serve` on
free loopback ports. Owner A has 10 listeners; owner B first has 10 (the baseline),
then `--others`: the first 10 of each declared through the API, the rest written with
the store's own declare steps (claim, state, subscription) from this process, which is
quicker. Each listing of A's is measured over `--requests` sequential requests, both
times in the same run: the median wall time, and the CPU the broker and Redis spent per
request (from /proc, so less at the mercy of a busy machine), each with the ratio
(target <= 1.5x). `/metrics` is measured the same way (target <= 250 ms at 10,000) once
the broker's stats snapshot holds every listener. What the broker's background task
does per refresh, reading that snapshot, is measured from this process with the same
store code, as shipped and with one stats script call per listener (the earlier
design), next to a reference: one pipeline of as many HLENs from this process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from broker import auth
from broker.models import Listener
from broker.storage import stats as storage_stats
from broker.storage.embedded import EmbeddedRedis, free_port
from broker.storage.gauges import read_snapshot
from broker.storage.keys import Keys
from broker.storage.store import Store

OWN = 10
# Every role but read_event_all and admin: an integration's own view.
ROLES = sorted(auth.ROLES - {"read_event_all"})

LISTINGS = {
    "event_listeners(limit: 10)": "{ event_listeners(limit: 10) { objects { uuid user_key } } }",
    "event_listeners(owners: [A])": """query($o: UUID!) {
        event_listeners(filter: {owners: [$o]}) { objects { uuid routing_key } } }""",
    "event_namespaces(limit: 10)": "{ event_namespaces(limit: 10) { objects { name } } }",
    "me": "{ me { actor { uuid event_namespaces { name } event_listeners { uuid } } } }",
    "events(limit: 10)": "{ events(limit: 10) { objects { subject } } }",
    "event_listeners { events }": """query($o: UUID!) {
        event_listeners(filter: {owners: [$o]}) { objects { uuid events { subject } } } }""",
    "event_unsilence(user_keys)": """mutation {
        event_unsilence(input: {listeners: {user_keys: ["a0"]}}) }""",
    "event_rerun(all own)": "mutation { event_rerun(input: {}) { subject } }",
}

DECLARE = """mutation($ns: String!, $k: String!) {
  event_listener_declare(input: {namespace: $ns, user_key: $k, routing_key: "r"}) { uuid } }"""
DECLARE_NS = """mutation($ns: String!) {
  event_namespace_declare(input: {name: $ns, public: false}) { name } }"""


def token(owner: uuid.UUID) -> str:
    """An insecure-dev token: claims only, no signature check."""
    claims = {"uuid": str(owner), "realm_access": {"roles": ROLES}}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{payload}.x"


class Broker:
    """A private Redis server and one `broker serve` process on loopback."""

    def __init__(self, workdir: Path, others: int) -> None:
        self.workdir = workdir
        self.redis = EmbeddedRedis(workdir / "redis", extra_args=("--appendonly", "no"))
        self.port = free_port()
        self.others = others
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start `python -m broker serve` (a quick, non-blocking fork+exec)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(
            BROKER_REDIS_URL=self.redis.url,
            BROKER_LOG_LEVEL="WARNING",
            BROKER_MAX_LISTENERS_PER_OWNER=str(self.others + OWN),
        )
        with open(self.workdir / "broker.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "broker", "serve", "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    async def __aenter__(self) -> httpx.AsyncClient:
        self.redis.start()
        self.process = self._spawn()
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=60,
            limits=httpx.Limits(max_connections=32),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "broker.log").read_text()
            try:
                if (await self.http.get("/health/ready")).status_code == 200:
                    return self.http
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("the broker did not get ready in 30 s")

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.redis.stop()


async def gql(
    http: httpx.AsyncClient, owner: uuid.UUID, query: str, variables: dict[str, Any]
) -> Any:
    response = await http.post(
        "/graphql/v25",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token(owner)}"},
    )
    body = response.json()
    if "errors" in body:
        raise RuntimeError(body["errors"])
    return body["data"]


async def declare(
    http: httpx.AsyncClient, owner: uuid.UUID, namespace: str, keys: list[str]
) -> None:
    queue = list(keys)

    async def worker() -> None:
        while queue:
            key = queue.pop()
            await gql(http, owner, DECLARE, {"ns": namespace, "k": key})

    await asyncio.gather(*(worker() for _ in range(32)))


async def populate(url: str, owner: uuid.UUID, namespace: str, keys: list[str]) -> None:
    """Declare listeners with the store's steps (as `Broker.declare_listener` runs them)."""
    redis = Redis.from_url(url, decode_responses=True)
    store = Store(redis, Keys("broker", 16))
    gate = asyncio.Semaphore(64)

    async def one(user_key: str) -> None:
        async with gate:
            listener, _ = await store.claim_listener(
                Listener(uuid.uuid4(), owner, namespace, "r", user_key)
            )
            assert listener is not None
            await store.create_listener_state(listener)
            await store.subscribe(listener)

    try:
        await asyncio.gather(*(one(key) for key in keys))
    finally:
        await redis.aclose()


def cpu_ms(pids: list[int]) -> float:
    """CPU (user + system) the processes have used so far, in ms."""
    total = 0
    for pid in pids:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / os.sysconf("SC_CLK_TCK")


SPLIT: dict[str, tuple[float, float]] = {}  # figure -> (broker, Redis) CPU ms per request


async def timed(name: str, pids: list[int], requests: int, call: Any) -> tuple[float, float]:
    """(median wall ms, broker + Redis CPU ms per request) over `requests` calls."""
    await call()  # warm: document cache, scripts
    times = []
    before = [cpu_ms([pid]) for pid in pids]
    for _ in range(requests):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    broker, redis = (
        (cpu_ms([pid]) - was) / requests for pid, was in zip(pids, before, strict=True)
    )
    SPLIT[name] = (broker, redis)
    return statistics.median(times), broker + redis


async def measure(
    http: httpx.AsyncClient, pids: list[int], a: uuid.UUID, requests: int
) -> dict[str, tuple[float, float]]:
    figures = {}
    for name, query in LISTINGS.items():
        variables = {"o": str(a)} if "$o" in query else {}

        async def call(query: str = query, variables: dict[str, Any] = variables) -> None:
            await gql(http, a, query, variables)

        figures[name] = await timed(name, pids, requests, call)

    async def scrape() -> None:
        response = await http.get("/metrics")
        response.raise_for_status()

    figures["/metrics"] = await timed("/metrics", pids, max(requests // 10, 5), scrape)
    return figures


async def await_snapshot(http: httpx.AsyncClient, listeners: int) -> float:
    """Seconds until the broker's scrapes show `listeners` listeners (its next refresh)."""
    start = time.perf_counter()
    while time.perf_counter() - start < 120:
        text = (await http.get("/metrics")).text
        if text.count('silenced="false"} ') >= listeners:
            return time.perf_counter() - start
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the stats snapshot did not reach {listeners} listeners in 120 s")


async def snapshot_reads(url: str, per_call: int) -> float:
    """Median ms of 5 `read_snapshot`s (what one background refresh does) with `per_call`."""
    redis = Redis.from_url(url, decode_responses=True)
    shipped = storage_stats.STATS_PER_CALL
    storage_stats.STATS_PER_CALL = per_call
    try:
        store = Store(redis, Keys("broker", 16))
        await read_snapshot(store)  # warm: script loaded, records cached
        times = []
        for _ in range(5):
            start = time.perf_counter()
            await read_snapshot(store)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        storage_stats.STATS_PER_CALL = shipped
        await redis.aclose()
    return statistics.median(times)


async def redis_pid(url: str) -> int:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        return int((await redis.info("server"))["process_id"])
    finally:
        await redis.aclose()


async def pipeline_reference(url: str, commands: int) -> float:
    """This machine's speed: ms for one pipeline of `commands` HLENs (median of 5)."""
    redis = Redis.from_url(url, decode_responses=True)
    times = []
    try:
        for _ in range(5):
            start = time.perf_counter()
            async with redis.pipeline(transaction=False) as pipe:
                for n in range(commands):
                    pipe.hlen(f"reference:{n}")
                await pipe.execute()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        await redis.aclose()
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=10_000, help="owner B's listeners")
    parser.add_argument("--requests", type=int, default=100, help="requests per figure")
    options = parser.parse_args()
    a, b = uuid.uuid4(), uuid.uuid4()
    with tempfile.TemporaryDirectory(prefix="registry-cost-") as tmp:
        broker = Broker(Path(tmp), options.others)
        async with broker as http:
            await gql(http, a, DECLARE_NS, {"ns": "quiet"})
            await gql(http, b, DECLARE_NS, {"ns": "busy"})
            await declare(http, a, "quiet", [f"a{n}" for n in range(OWN)])
            await declare(http, b, "busy", [f"b{n}" for n in range(OWN)])
            assert broker.process is not None
            redis = await redis_pid(broker.redis.url)
            pids = [broker.process.pid, redis]
            baseline = await measure(http, pids, a, options.requests)
            reads = {
                n: await snapshot_reads(broker.redis.url, n)
                for n in (storage_stats.STATS_PER_CALL, 1)
            }
            start = time.perf_counter()
            await populate(
                broker.redis.url, b, "busy", [f"b{n}" for n in range(OWN, options.others)]
            )
            declared_s = time.perf_counter() - start
            refreshed_s = await await_snapshot(http, options.others + OWN)
            crowded = await measure(http, pids, a, options.requests)
            crowded_reads = {n: await snapshot_reads(broker.redis.url, n) for n in reads}
            reference = await pipeline_reference(broker.redis.url, options.others)
    print(f"owner A: {OWN} listeners; owner B: {OWN}, then {options.others} "
          f"(written in {declared_s:.1f} s)")  # fmt: skip
    print(
        f"median of {options.requests} requests each (/metrics: {max(options.requests // 10, 5)})"
    )
    print()
    print(f"| figure | B has {OWN} | B has {options.others} | ratio | CPU/request, B has {OWN} "
          f"| B has {options.others} | ratio | target |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, (base, base_cpu) in baseline.items():
        target = "<= 250 ms" if name == "/metrics" else "<= 1.5x"
        wall, cpu = crowded[name]
        print(
            f"| {name} | {base:.2f} ms | {wall:.2f} ms | {wall / base:.2f}x "
            f"| {base_cpu:.2f} ms | {cpu:.2f} ms | {cpu / max(base_cpu, 0.01):.2f}x | {target} |"
        )
    broker_cpu, redis_cpu = SPLIT["/metrics"]
    print()
    print(
        f"/metrics at {options.others}: broker {broker_cpu:.1f} ms + Redis {redis_cpu:.1f} ms "
        f"CPU, from a snapshot that took {refreshed_s:.1f} s to show them all"
    )
    print("one snapshot read (the background refresh, every BROKER_STATS_INTERVAL_SECONDS):")
    for per_call, base in reads.items():
        shape = "as shipped" if per_call > 1 else "one call per listener (earlier design)"
        print(f"  {per_call:>3} listeners per script call ({shape}): B has {OWN}: {base:.1f} ms, "
              f"B has {options.others}: {crowded_reads[per_call]:.1f} ms")  # fmt: skip
    print(
        f"reference: one pipeline of {options.others} HLENs from this process takes "
        f"{reference:.0f} ms here"
    )


if __name__ == "__main__":
    asyncio.run(main())
