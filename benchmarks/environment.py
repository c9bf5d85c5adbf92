"""The run's private Redis and broker processes, and setup helpers that talk to them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks.accounting import process_tree
from benchmarks.client import LISTENER_DOC, Http, body
from broker.storage.embedded import EmbeddedRedis, free_port
from broker.storage.keys import Keys
from broker.storage.store import IngestEntry, Store

PREFIX = "broker"  # the broker's default BROKER_KEY_PREFIX
SHARDS = 16  # the broker's default BROKER_INGEST_SHARDS
NAMESPACE = "bench"
RETRY_MIN_MS, RETRY_MAX_MS = 180_000, 61_200_000  # broker defaults


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
        # Raw replies, read by index: typed loosely, as redis-py's reply types are unions.
        self.rb: Any = Redis.from_url(
            self.redis_server.url, decode_responses=False, max_connections=256
        )
        self.store = Store(self.r, self.keys)
        info = await self.r.info("server")
        self.redis_pid = int(info["process_id"])
        self.redis_version = (
            f"Valkey {info['valkey_version']}"
            if "valkey_version" in info
            else f"Redis {info['redis_version']}"
        )

    async def start_broker(
        self,
        workers: int = 1,
        processes: int = 1,
        settings: dict[str, str] | None = None,
        variant: str | None = None,
    ) -> None:
        """`processes` separate brokers (own ports), each `serve --workers <workers>`.

        `settings` adds BROKER_* variables (the default: BROKER_LOG_LEVEL=WARNING, and
        quotas no phase reaches); `variant` names a change of benchmarks/variants.py to
        run the broker with.
        """
        assert self.redis_server is not None
        self.workers = workers
        for _ in range(processes):
            self.port = free_port()
            process = self._spawn_broker(self.redis_server.url, workers, settings or {}, variant)
            self.brokers.append((process, self.port))
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

    def _spawn_broker(
        self, redis_url: str, workers: int, settings: dict[str, str], variant: str | None
    ) -> subprocess.Popen[bytes]:
        """Start `python -m broker serve` (a quick, non-blocking fork+exec)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(BROKER_REDIS_URL=redis_url, BROKER_LOG_LEVEL="WARNING")
        # Every phase declares as one (insecure-dev) owner, past the default quota.
        env.update(
            BROKER_MAX_LISTENERS_PER_OWNER="1000000", BROKER_MAX_NAMESPACES_PER_OWNER="10000"
        )
        env.update(settings)
        entry = ["broker"] if variant is None else ["benchmarks.variants", variant]
        # The child gets its own copy of the log's descriptor; ours is closed right away.
        with open(self.workdir / f"broker-{self.port}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", *entry, "serve", "--host", "127.0.0.1",
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
        self,
        listener: str,
        count: int,
        tag: str,
        batch: int = 2000,
        parallel: int = 4,
        uuid_subjects: bool = False,
    ) -> float:
        """Put `count` pending events on a listener by calling the store's apply script directly
        (what the fan-out writer does per listener), in big batches. Returns seconds taken.

        Subjects are 47 characters (`tag`, a counter and a UUID), or bare UUIDs (36, as
        OS2mo's) with `uuid_subjects`."""
        lid = uuid.UUID(listener)
        t0 = time.perf_counter()
        base_ms = int(time.time() * 1000) - 60_000
        starts = iter(range(0, count, batch))

        async def work() -> None:
            for start in starts:
                entries = [
                    IngestEntry(
                        f"{base_ms}-{i}",
                        NAMESPACE,
                        "load",
                        str(uuid.uuid4()) if uuid_subjects else f"{tag}-{i:08d}-{uuid.uuid4()}",
                        10000,
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


async def commandstats(env: Env) -> dict[str, tuple[int, float]]:
    stats = await env.r.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"])) for k, v in stats.items()
    }
