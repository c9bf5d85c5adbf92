"""Profile the broker under the idle-listener load (py-spy), standalone.

    python -m benchmarks.idle_profile [seconds]

Own Valkey + broker (as `python -m benchmarks`), 1,000 listeners in `mo`, FastRAMQPI's
FetchEvent for each once every 5 s (200 req/s, the idle phase's `paced_polls`), `py-spy
record` of the broker meanwhile;
prints the CPU split, Redis' commandstats per fetch, two `py-spy dump`s and the profile table.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.client import FETCH_DOC, body
from benchmarks.environment import Env, commandstats
from benchmarks.phases.idle import IDLE_LISTENERS, paced_polls
from benchmarks.profile import summarize_profile


def no_event(data: Any) -> None:
    assert data["event_fetch"] is None, data


async def main(seconds: float) -> None:
    pyspy = str(Path(sys.executable).parent / "py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="broker-idle-prof-"))
    env = Env(workdir)
    try:
        await env.start_redis()
        await env.start_broker()
        listeners = await env.declare_listeners("idle", IDLE_LISTENERS, namespace="mo")
        fetches = [body(FETCH_DOC, {"listener": x}) for x in listeners]
        await paced_polls(env, fetches, 3, no_event, meter=False)
        out = workdir / "profile.txt"
        await env.r.config_resetstat()
        proc = await asyncio.create_subprocess_exec(
            pyspy, "record", "--pid", str(env.broker_pid), "--rate", "100",
            "--duration", str(int(seconds)), "--format", "raw", "--output", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(0.5)
        polled = await paced_polls(env, fetches, seconds, no_event)
        await proc.communicate()
        stats = await commandstats(env)
        print(f"{polled.sent} FetchEvent polls in {polled.seconds:.1f}s; {polled.usage.pct()}")
        per = {k: (c / polled.sent, us / polled.sent) for k, (c, us) in stats.items() if c}
        print(
            "Redis per fetch (calls, µs):",
            ", ".join(f"{k} {c:.2f} {us:.1f}" for k, (c, us) in per.items()),
        )
        background = asyncio.create_task(paced_polls(env, fetches, 3, no_event, meter=False))
        await asyncio.sleep(1)
        for _ in range(2):
            dump = await asyncio.create_subprocess_exec(
                pyspy, "dump", "--pid", str(env.broker_pid), stdout=asyncio.subprocess.PIPE
            )
            print((await dump.communicate())[0].decode())
            await asyncio.sleep(0.5)
        await background
        print(summarize_profile(out.read_text(), seconds, 100))
    finally:
        await env.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 15.0))
