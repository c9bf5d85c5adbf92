"""event_send throughput against raw XADD."""

from __future__ import annotations

from benchmarks.config import Config, Context
from benchmarks.environment import Env, wait_ingest_empty
from benchmarks.load import closed_loop, graphql_send_ops, raw_xadd_ops
from benchmarks.report import Report, Row, pct


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


NAME = "event_send"


async def run(ctx: Context) -> None:
    await bench_send(ctx.env, ctx.cfg, ctx.report)
