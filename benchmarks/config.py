"""How big and how long a run is (`--quick` or full), and what every phase is handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.environment import Env
    from benchmarks.load import Run
    from benchmarks.report import Report


@dataclass
class Config:
    quick: bool
    phase: float  # seconds per throughput phase
    max_ops: int  # per phase
    backlog: int
    fan_appends: int  # listener-stream appends per fan-out level
    fan_levels: tuple[int, ...]
    latency_samples: int
    mem_events: int
    mem_listeners: int
    flat_levels: tuple[int, ...]
    flat_cycles: int
    profile_seconds: float
    idle_seconds: float  # measured window of the idle-listener phases
    idle_warmup: float


QUICK = Config(
    True,
    2.0,
    40_000,
    100_000,
    20_000,
    (1, 10, 100, 1000),
    150,
    20_000,
    200,
    (1_000, 10_000, 100_000),
    250,
    4.0,
    15.0,
    3.0,
)
FULL = Config(
    False,
    10.0,
    90_000,
    100_000,
    150_000,
    (1, 10, 100, 1000),
    1000,
    100_000,
    1000,
    (1_000, 10_000, 100_000, 1_000_000),
    2000,
    15.0,
    30.0,
    5.0,
)


@dataclass
class Context:
    """What every phase gets: the running environment, the run's size, the report, and
    the results of earlier phases that later ones compare against."""

    env: Env
    cfg: Config
    report: Report
    main_listener: str  # the listener holding the 100k backlog
    runs: dict[str, Run] = field(default_factory=dict)  # by name, e.g. "gql32"
    profile_text: str = ""
