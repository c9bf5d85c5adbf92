"""Idle listeners polled every 5 s: the CPU of the broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.accounting import Meter, Usage
from benchmarks.client import DELETE_DOC, FETCH_DOC, TYPENAME_DOC, Http, body
from benchmarks.config import Config, Context
from benchmarks.environment import Env
from benchmarks.report import TIMES, Report, Row, pct

IDLE_LISTENERS = 1000
IDLE_PERIOD = 5.0  # FastRAMQPI sleeps 5 s after a null event_fetch, then asks again
IDLE_CONNS = 4
# Broker + Redis CPU against `{ __typename }` at the same rate (the HTTP floor); < 10 % of
# one core was the goal when that floor was ~3 %.
IDLE_VS_TYPENAME = 2.5


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
                f"≤ {IDLE_VS_TYPENAME}{TIMES} baseline" if total else "",
                (value <= IDLE_VS_TYPENAME * share(base_u, part)) if total else None,
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


NAME = "idle listeners polled every 5 s"


async def run(ctx: Context) -> None:
    await bench_idle(ctx.env, ctx.cfg, ctx.report)
