"""Broker benchmarks: one command, own Redis, own broker, a table with same-run baselines.

    python -m benchmarks                  # full run (< 20 min on a quiet machine)
    python -m benchmarks --quick          # smaller and shorter (< 6 min on a quiet machine)
    python -m benchmarks --only logging_cost,earn_it   # some phases only
    python -m benchmarks --write          # also update the tracked benchmarks/RESULTS*.md

Everything runs on loopback: a private Valkey/Redis server on a free port (via
`broker.storage.embedded.EmbeddedRedis`, no persistence) and `python -m broker serve` on another
free port, both torn down at the end. Every phase is bounded in requests and in time, and
a watchdog ends the whole run if it overshoots. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from benchmarks import document_cost, profile
from benchmarks.client import NS_DOC
from benchmarks.config import FULL, QUICK, Config, Context
from benchmarks.environment import NAMESPACE, Env
from benchmarks.phases import (
    cycles,
    earn_it,
    fanout,
    flat,
    idle,
    latency,
    logging_cost,
    memory,
    send,
    workers,
)
from benchmarks.report import Report, write_results

# The phases in the order they run. A phase is a module with `NAME: str` and
# `async def run(ctx: Context) -> None`; adding one is adding it here.
PHASES: list[ModuleType] = [
    memory,
    cycles,
    send,
    fanout,
    latency,
    idle,
    flat,
    profile,
    earn_it,
    logging_cost,
    document_cost,
    workers,  # last: it restarts the broker with other process counts
]


def phase_name(module: ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[-1]


async def main(cfg: Config, command: str, only: set[str] | None, write: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    env = Env(workdir)
    rep = Report()
    started = time.perf_counter()
    ctx: Context | None = None
    try:
        await env.start_redis()
        await env.start_broker(workers=1)
        await env.gql(NS_DOC, {"input": {"name": NAMESPACE, "public": False}})
        print(
            f"{env.redis_version} pid {env.redis_pid}; broker pid {env.broker_pid} port {env.port}"
        )
        main_listener = (await env.declare_listeners("main", 1))[0]
        t = await env.load(main_listener, cfg.backlog, "b")
        rep.detail(
            f"backlog: {cfg.backlog:,} events loaded by direct apply-script calls in {t:.1f}s"
        )
        ctx = Context(env, cfg, rep, main_listener)
        for phase in PHASES:
            if only is not None and phase_name(phase) not in only:
                continue
            print(f"== {phase.NAME} (t={time.perf_counter() - started:.0f}s)", flush=True)
            await phase.run(ctx)
    except Exception:
        print("the broker's log ends:\n" + env.broker_log(), file=sys.stderr)
        raise
    finally:
        await env.close()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(rep.table())
    wall = sum(w for w, _ in env.others) or 1.0
    background = 100 * sum(o for _, o in env.others) / wall
    peak = max((100 * o / w for w, o in env.others if w > 0.5), default=0.0)
    print(
        f"other processes used {background:.0f}% of one core on average during measured phases "
        f"(peak {peak:.0f}%)"
    )
    write_results(
        cfg,
        command,
        rep,
        ctx.profile_text,
        elapsed,
        env.redis_version,
        background,
        peak,
        tracked=write,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller, < 6 minutes")
    parser.add_argument(
        "--write", action="store_true", help="update the tracked benchmarks/RESULTS*.md"
    )
    names = [phase_name(phase) for phase in PHASES]
    parser.add_argument("--only", help=f"comma-separated phases of: {', '.join(names)}")
    args = parser.parse_args()
    only = None if args.only is None else set(args.only.split(","))
    if only is not None and not only <= set(names):
        parser.error(f"unknown phase(s): {', '.join(sorted(only - set(names)))}")
    cfg = QUICK if args.quick else FULL
    # Generous for a loaded machine; a quiet one needs about half.
    limit = 900 if args.quick else 2400
    command = "python -m benchmarks" + "".join(
        f" {arg}" for arg in sys.argv[1:] if arg != "--write"
    )

    def watchdog(signum: int, frame: object) -> None:
        raise TimeoutError(f"benchmark exceeded its {limit} s bound")

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(limit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        runner.run(main(cfg, command, only, args.write))


if __name__ == "__main__":
    cli()
