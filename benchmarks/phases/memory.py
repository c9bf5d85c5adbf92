"""Redis memory per pending event and per idle listener."""

from __future__ import annotations

import asyncio
import uuid

from benchmarks.config import Config, Context
from benchmarks.environment import RETRY_MAX_MS, RETRY_MIN_MS, Env
from benchmarks.report import Report, Row


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
    await env.load(listener, cfg.mem_events, "m")  # 47-character subjects
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
    # the same with OS2mo's subjects: bare UUIDs, 36 characters
    uuid_listener = (await env.declare_listeners("mem-uuid", 1))[0]
    before_u = await used_memory(env)
    await env.load(uuid_listener, cfg.mem_events, "u", uuid_subjects=True)
    per_uuid_event = (await used_memory(env) - before_u) / cfg.mem_events
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
            "Redis memory per pending event (ready, 36-character UUID subjects)",
            per_uuid_event,
            "B",
            bare,
            "bare stream entry",
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


NAME = "memory"


async def run(ctx: Context) -> None:
    await bench_memory(ctx.env, ctx.cfg, ctx.report)
