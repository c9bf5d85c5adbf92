"""Load generators: closed loops of operations (GraphQL, store scripts, raw Redis)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from benchmarks.accounting import Meter, Usage
from benchmarks.client import ACK_POST, ACK_PRE, SEND_DOC, Http, body, fetch_doc
from benchmarks.environment import NAMESPACE, RETRY_MAX_MS, RETRY_MIN_MS, Env


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


def close_all(conns: list[Http]) -> None:
    for conn in conns:
        conn.close()


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

        return Ops([make(c) for c in conns], lambda: close_all(conns))

    return factory


def graphql_request_ops(env: Env, payload: bytes) -> Any:
    async def factory(n: int) -> Ops:
        conns = await env.http(n)

        def make(conn: Http) -> Any:
            async def op() -> bool:
                await conn.post(payload)
                return True

            return op

        return Ops([make(c) for c in conns], lambda: close_all(conns))

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

        return Ops([make(c) for c in conns], lambda: close_all(conns))

    return factory


def script_cycle_ops(env: Env, listener: str) -> Any:
    lid = uuid.UUID(listener)

    async def factory(n: int) -> Ops:
        async def op() -> bool:
            found = await env.store.fetch(lid, None, RETRY_MIN_MS, RETRY_MAX_MS)
            event = found.event
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
