"""--workers 2 and two broker processes against one."""

from __future__ import annotations

from benchmarks.accounting import cpu_seconds, process_tree
from benchmarks.client import TYPENAME_DOC, body
from benchmarks.config import Config, Context
from benchmarks.environment import Env
from benchmarks.load import Run, closed_loop, graphql_request_ops
from benchmarks.phases.cycles import backlog_cycles
from benchmarks.report import Report, Row


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


NAME = "--workers 2"


async def run(ctx: Context) -> None:
    await bench_workers(ctx.env, ctx.cfg, ctx.report, ctx.runs, ctx.main_listener)
