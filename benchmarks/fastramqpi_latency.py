"""Send -> handler latency of an unchanged FastRAMQPI integration, without and with
BROKER_FETCH_DEFAULT_WAIT_SECONDS, in the same run.

    python -m benchmarks.fastramqpi_latency [--events N] [--fastramqpi-python PATH]

Starts a private Redis (the embedded Valkey) and two brokers on it: the baseline with
BROKER_FETCH_DEFAULT_WAIT_SECONDS=0 (OS2mo's behaviour) and one with it set. Against each,
FastRAMQPI's real token client (from the broker's development token endpoint) and real
event fetcher (from its own environment, see examples/fastramqpi_integration) handle events
sent at random moments; prints p50/p99 of send -> handler for both, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from broker.storage.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
# Runs in FastRAMQPI's own environment (pydantic 1), beside the example integration.
DRIVER = ROOT / "examples" / "fastramqpi_integration" / "latency_driver.py"
DEFAULT_WAIT = 20.0  # below FastRAMQPI's 120 s client timeout


def start_broker(
    redis_url: str, prefix: str, default_wait: float, log: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(
        BROKER_REDIS_URL=redis_url,
        BROKER_KEY_PREFIX=prefix,
        BROKER_FETCH_DEFAULT_WAIT_SECONDS=str(default_wait),
        BROKER_LOG_LEVEL="WARNING",
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                return url, proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the broker did not start; see {log}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--fastramqpi-python", default=str(ROOT / ".venv-fastramqpi/bin/python"))
    args = parser.parse_args()
    if not Path(args.fastramqpi_python).exists():
        raise SystemExit(
            f"{args.fastramqpi_python} is missing; create FastRAMQPI's environment with\n"
            "  python3 -m venv .venv-fastramqpi && .venv-fastramqpi/bin/pip install -r "
            "examples/fastramqpi_integration/requirements.txt"
        )
    work = Path(tempfile.mkdtemp(prefix="broker-fastramqpi-"))
    redis = EmbeddedRedis(work / "redis").start()
    brokers: list[subprocess.Popen[bytes]] = []
    try:
        results = {}
        for name, wait in (
            ("default wait 0 (baseline)", 0.0),
            (f"default wait {DEFAULT_WAIT:g}", DEFAULT_WAIT),
        ):
            url, proc = start_broker(
                redis.url, f"b{len(brokers)}", wait, work / f"broker{len(brokers)}.log"
            )
            brokers.append(proc)
            out = subprocess.run(
                [args.fastramqpi_python, str(DRIVER), url, str(args.events), "7"],
                capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        baseline = None
        print(f"FastRAMQPI send -> handler latency, {args.events} events each")
        for name, latencies in results.items():
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            ratio = ""
            if baseline is not None:
                ratio = (
                    f"  ({baseline[0] / p50:.0f}x lower p50, {baseline[1] / p99:.0f}x lower p99)"
                )
            baseline = baseline or (p50, p99)
            mean = statistics.mean(latencies) * 1000
            print(
                f"  {name:28} p50 {p50 * 1000:8.1f} ms  p99 {p99 * 1000:8.1f} ms"
                f"  mean {mean:8.1f} ms  n={len(latencies)}{ratio}"
            )
    finally:
        for proc in brokers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        redis.stop()


if __name__ == "__main__":
    main()
