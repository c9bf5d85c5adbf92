"""fetch+ack cycles on a 100k backlog against raw Redis and `{ __typename }`."""

from __future__ import annotations

from benchmarks.client import TYPENAME_DOC, body
from benchmarks.config import Config, Context
from benchmarks.environment import Env
from benchmarks.load import (
    Run,
    closed_loop,
    graphql_cycle_ops,
    graphql_request_ops,
    raw_cycle_ops,
    raw_stream,
)
from benchmarks.report import TIMES, Report, Row, pct

# 2,000 cycles/s was the goal when raw redis-py managed ~11,000/s on this machine.
CYCLES_VS_RAW = 0.2


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
                f"≥ {CYCLES_VS_RAW}{TIMES} baseline" if clients == 32 else "",
                (gql.rate >= CYCLES_VS_RAW * raw.rate) if clients == 32 else None,
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


NAME = "fetch+ack vs baselines (100k backlog)"


async def run(ctx: Context) -> None:
    ctx.runs.update(await bench_cycles(ctx.env, ctx.cfg, ctx.report, ctx.main_listener))
