"""What production logging costs: fetch+ack with JSON request logs at INFO against WARNING.

The chart runs `BROKER_LOG_FORMAT=json BROKER_LOG_LEVEL=INFO` (one line per request);
the baseline is the same broker at WARNING (no request lines), interleaved (see
benchmarks/interleaved.py). Both write to a file, as a container's stderr goes to a pipe.
"""

from __future__ import annotations

from benchmarks.config import Context
from benchmarks.interleaved import CLIENTS, Setup, compare
from benchmarks.report import TIMES, Row

NAME = "logging cost (JSON at INFO against WARNING)"
INFO = Setup("logs at INFO", {"BROKER_LOG_LEVEL": "INFO", "BROKER_LOG_FORMAT": "json"})
WARNING = Setup("logs at WARNING", {"BROKER_LOG_LEVEL": "WARNING", "BROKER_LOG_FORMAT": "json"})
MOST_COST = 0.10  # the share of throughput logs may cost


async def run(ctx: Context) -> None:
    found = await compare(ctx, INFO, WARNING)
    ctx.report.add(
        Row(
            f"fetch+ack cycles/s, {CLIENTS} clients, JSON request logs at INFO",
            found.a.rate,
            "/s",
            found.b.rate,
            "WARNING, same run",
        )
    )
    ctx.report.add(
        Row(
            "fetch+ack cycles per broker+Redis CPU second, JSON request logs at INFO",
            found.a.efficiency,
            "/CPU s",
            found.b.efficiency,
            "WARNING, same run",
            f"≥ {1 - MOST_COST:.2f}{TIMES} baseline",
            found.ratio >= 1 - MOST_COST,
            note=f"median of per-round ratios {found.ratio:.2f}",
        )
    )
