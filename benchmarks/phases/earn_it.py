"""Earn it or delete it: fetch+ack with and without a piece of the broker, interleaved.

The broker as shipped against `benchmarks.variants`' broker without the piece. A piece
earns its place with at least its threshold more cycles per CPU second (see
benchmarks/interleaved.py); cycles per second are printed beside.
"""

from __future__ import annotations

from benchmarks.config import Context
from benchmarks.interleaved import CLIENTS, Setup, compare
from benchmarks.report import TIMES, Row

NAME = "earn it or delete it (plans.py)"
# (variant without the piece, what the piece is, the gain it must show). The broker's own
# connection pool was measured here too, against redis-py's BlockingConnectionPool: it
# gained nothing (benchmarks/RESULTS.md) and is gone.
PIECES = (("no-plans", "compiled plans (broker/http/plans.py)", 1.25),)


async def run(ctx: Context) -> None:
    for variant, piece, needed in PIECES:
        found = await compare(ctx, Setup("as shipped"), Setup(variant, variant=variant))
        ctx.report.add(
            Row(
                f"fetch+ack cycles/s, {CLIENTS} clients, with {piece}",
                found.a.rate,
                "/s",
                found.b.rate,
                f"without ({variant})",
            )
        )
        ctx.report.add(
            Row(
                f"fetch+ack cycles per broker+Redis CPU second, with {piece}",
                found.a.efficiency,
                "/CPU s",
                found.b.efficiency,
                f"without ({variant})",
                f"≥ {needed:.2f}{TIMES} baseline to keep it",
                found.ratio >= needed,
                note=f"median of per-round ratios {found.ratio:.2f}",
            )
        )
