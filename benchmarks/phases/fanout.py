"""Fan-out appends per second at 1 to 1,000 listeners against raw pipelined XADD."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator

from benchmarks.accounting import Meter
from benchmarks.client import DELETE_DOC, Http, body
from benchmarks.config import Config, Context
from benchmarks.environment import NAMESPACE, Env, wait_ingest_empty
from benchmarks.report import TIMES, Report, Row

# 50,000 appends/s was the goal when raw pipelined XADD managed ~100,000/s here.
FANOUT_VS_RAW = 0.5


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
                f"≥ {FANOUT_VS_RAW}{TIMES} baseline" if n == 100 else "",
                (rate >= FANOUT_VS_RAW * raw_rate) if n == 100 else None,
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


NAME = "fan-out"


async def run(ctx: Context) -> None:
    await bench_fanout(ctx.env, ctx.cfg, ctx.report)
