"""send→fetch latency against XADD→blocked XREADGROUP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from benchmarks.accounting import Meter
from benchmarks.client import ACK_POST, ACK_PRE, SEND_DOC, body, fetch_doc
from benchmarks.config import Config, Context
from benchmarks.environment import NAMESPACE, Env
from benchmarks.report import TIMES, Report, Row, pct

# 10 ms was the goal when a blocked XREADGROUP returned in ~0.3 ms (p99) here.
LATENCY_VS_RAW = 30


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
    assert env.redis_server is not None
    reader: Any = Redis.from_url(env.redis_server.url, decode_responses=False)
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
            f"≤ {LATENCY_VS_RAW}{TIMES} baseline",
            p99 <= LATENCY_VS_RAW * pct(raw_ms, 0.99) and len(ms) == cfg.latency_samples,
        )
    )


NAME = "latency"


async def run(ctx: Context) -> None:
    await bench_latency(ctx.env, ctx.cfg, ctx.report)
