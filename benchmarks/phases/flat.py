"""fetch+ack cost at 1k to 1M pending events: flat, or not."""

from __future__ import annotations

import statistics
import time
import uuid

from benchmarks.client import DELETE_DOC
from benchmarks.config import Config, Context
from benchmarks.environment import Env, commandstats
from benchmarks.load import closed_loop, graphql_cycle_ops, script_cycle_ops
from benchmarks.report import TIMES, Report, Row, pct


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


NAME = "flat cost"


async def run(ctx: Context) -> None:
    await bench_flat(ctx.env, ctx.cfg, ctx.report, ctx.main_listener)
