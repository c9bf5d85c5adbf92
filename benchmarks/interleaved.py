"""A against B, interleaved: fetch+ack on two broker set-ups taking turns (A B, B A, …).

The machine is shared, so throughput swings with everyone else's load from one phase to
the next. Taking turns puts both set-ups under the same swings, and the verdict uses
cycles per CPU second of the broker and Redis together, which depends far less on how
much of the machine the run happened to get than cycles per second of wall time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmarks.config import Context
from benchmarks.load import Run
from benchmarks.phases.cycles import backlog_cycles

CLIENTS = 32


@dataclass
class Setup:
    name: str
    settings: dict[str, str] = field(default_factory=dict)  # BROKER_* variables
    variant: str | None = None  # a benchmarks.variants change


@dataclass
class Side:
    rates: list[float] = field(default_factory=list)  # cycles/s
    per_cpu: list[float] = field(default_factory=list)  # cycles per broker + Redis CPU s

    def add(self, run: Run) -> None:
        self.rates.append(run.rate)
        cpu = run.usage.broker + run.usage.redis
        self.per_cpu.append(run.count / cpu if cpu else 0.0)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def efficiency(self) -> float:
        return statistics.median(self.per_cpu)


@dataclass
class Comparison:
    a: Side
    b: Side

    @property
    def ratio(self) -> float:
        """A's cycles per CPU second over B's: the median of the per-round ratios."""
        pairs = zip(self.a.per_cpu, self.b.per_cpu, strict=True)
        return statistics.median(a / b for a, b in pairs if b)


async def cycles(ctx: Context, setup: Setup, tag: str) -> Run:
    env = ctx.env
    env.stop_broker()
    await env.start_broker(settings=setup.settings, variant=setup.variant)
    await env.top_up(ctx.main_listener, ctx.cfg.backlog, tag)
    run = await backlog_cycles(env, ctx.cfg, CLIENTS, ctx.main_listener)
    cpu = run.usage.broker + run.usage.redis
    ctx.report.detail(
        f"{setup.name}: fetch+ack x{CLIENTS} {run.rate:,.0f} cycles/s, "
        f"{run.count / cpu if cpu else 0:,.0f} cycles per broker+Redis CPU second; "
        f"{run.usage.pct()}"
    )
    return run


async def compare(ctx: Context, a: Setup, b: Setup) -> Comparison:
    """`a` and `b` taking turns, then the broker as the run started it again."""
    rounds = 3 if ctx.cfg.quick else 5
    result = Comparison(Side(), Side())
    for i in range(rounds):
        # A B, then B A: neither side always runs first after the other.
        if i % 2 == 0:
            result.a.add(await cycles(ctx, a, f"a{i}"))
            result.b.add(await cycles(ctx, b, f"b{i}"))
        else:
            result.b.add(await cycles(ctx, b, f"b{i}"))
            result.a.add(await cycles(ctx, a, f"a{i}"))
    ctx.env.stop_broker()
    await ctx.env.start_broker()
    return result
