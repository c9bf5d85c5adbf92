"""CPU accounting: what the client, the broker, Redis and everyone else used over a phase."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.environment import Env

CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


@dataclass
class Usage:
    wall: float = 0.0
    client: float = 0.0
    broker: float = 0.0
    redis: float = 0.0
    others: float = 0.0  # every other process on the machine (busy CPU from /proc/stat minus ours)

    def pct(self) -> str:
        w = self.wall or 1.0
        return (
            f"client {100 * self.client / w:.0f}%, broker {100 * self.broker / w:.0f}%, "
            f"redis {100 * self.redis / w:.0f}%, other processes {100 * self.others / w:.0f}% "
            "(% of one core)"
        )


def busy_seconds() -> float:
    """Machine-wide busy CPU seconds (all cores) from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK


class Meter:
    """CPU of the three parties over a phase: this process (client), broker tree, Redis."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def __enter__(self) -> Usage:
        self.usage = Usage()
        self.broker_pids = self.env.broker_pids()
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.b0 = cpu_seconds(self.broker_pids)
        self.r0 = cpu_seconds([self.env.redis_pid])
        self.m0 = busy_seconds()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        u = self.usage
        u.wall = time.perf_counter() - self.t0
        u.client = time.process_time() - self.c0
        u.broker = cpu_seconds(self.broker_pids) - self.b0
        u.redis = cpu_seconds([self.env.redis_pid]) - self.r0
        u.others = max(0.0, busy_seconds() - self.m0 - u.client - u.broker - u.redis)
        self.env.others.append((u.wall, u.others))
