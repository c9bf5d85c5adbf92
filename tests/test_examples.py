"""The example FastRAMQPI integration, unchanged, against the broker fed through the relay
from an upstream broker acting as OS2mo, with no identity provider anywhere."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from broker.devtokens import owner_of
from broker.storage.embedded import EmbeddedRedis
from tests import clients
from tests.fastramqpi_env import ROOT, fastramqpi_python
from tests.processes import Process, broker_env

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "fastramqpi_integration"
# FastRAMQPI posts each event to its own HTTP server at this fixed address.
INTEGRATION = "http://127.0.0.1:8000"
LISTENERS = "query { event_listeners { objects { uuid owner user_key } } }"


def port_8000_is_free() -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8000))
        except OSError:
            return False
    return True


class Example:
    """The example integration under uvicorn in FastRAMQPI's environment."""

    def __init__(self, broker: Process, fail_once: str, log: Path) -> None:
        assert port_8000_is_free(), "FastRAMQPI needs 127.0.0.1:8000, which is in use"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(
            MO_URL=broker.url,
            AUTH_SERVER=f"{broker.url}/auth",  # the broker's development token endpoint
            CLIENT_ID="example",
            CLIENT_SECRET="anything",
            EXAMPLE_FAIL_ONCE=fail_once,
            ENABLE_METRICS="false",
        )
        command = [str(fastramqpi_python()), "-m", "uvicorn", "--factory", "app:create_app"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", "8000"],
                cwd=EXAMPLE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.log = log
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{INTEGRATION}/seen").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"the example did not start:\n{log.read_text()}")

    def seen(self) -> list[dict[str, Any]]:
        deliveries: list[dict[str, Any]] = httpx.get(f"{INTEGRATION}/seen").json()
        return deliveries

    def stop(self) -> None:
        """SIGTERM; uvicorn shuts down gracefully, then dies by the signal it caught."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) in (0, -signal.SIGTERM), self.log.read_text()


def test_the_example_declares_once_handles_every_event_and_gets_a_failed_one_again(
    redis_server: EmbeddedRedis, tmp_path: Path, processes: list[Process]
) -> None:
    prefix = uuid4().hex[:8]
    common = {
        "BROKER_REDIS_URL": redis_server.url,
        "BROKER_FANOUT_BLOCK_SECONDS": "0.1",
        # Unchanged clients (the relay's and FastRAMQPI's fetches) long-poll.
        "BROKER_FETCH_DEFAULT_WAIT_SECONDS": "20",
        "BROKER_RETRY_MIN_SECONDS": "1",
        "BROKER_RETRY_MAX_SECONDS": "1",
    }
    upstream = Process(broker_env(**common, BROKER_KEY_PREFIX=f"up{prefix}"), tmp_path / "up.log")
    processes.append(upstream)
    broker = Process(broker_env(**common, BROKER_KEY_PREFIX=f"down{prefix}"), tmp_path / "b.log")
    processes.append(broker)
    relay = Process(
        broker_env(
            **common,
            BROKER_KEY_PREFIX=f"down{prefix}",
            BROKER_RELAY_OS2MO_URL=f"{upstream.url}/graphql/v25",
            BROKER_RELAY_AUTH_SERVER=f"{upstream.url}/auth",
            BROKER_RELAY_CLIENT_ID="event-broker-relay",
            BROKER_RELAY_CLIENT_SECRET="dev",
            BROKER_RELAY_ROUTING_KEYS="person",
        ),
        tmp_path / "relay.log",
        command="relay",
    )
    processes.append(relay)
    subjects = [str(uuid4()) for _ in range(10)]
    failing = subjects[3]

    # Declared at every start-up: a restart finds the same listener.
    first = Example(broker, failing, tmp_path / "example-1.log")
    first.stop()
    example = Example(broker, failing, tmp_path / "example-2.log")
    try:
        listeners = broker.gql(LISTENERS)["event_listeners"]["objects"]
        ours = [item for item in listeners if item["user_key"] == "example-person"]
        assert len(ours) == 1 and ours[0]["owner"] == str(owner_of("example"))

        sent = {}
        for subject in subjects:
            sent[subject] = time.time()
            variables = {"input": {"namespace": "mo", "routing_key": "person", "subject": subject}}
            assert upstream.gql(clients.SEND, variables)["event_send"] is True
            time.sleep(0.3)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            seen = example.seen()
            handled = {item["subject"] for item in seen}
            retried = [item["at"] for item in seen if item["subject"] == failing]
            if handled >= set(subjects) and len(retried) >= 2:
                break
            time.sleep(0.2)
        assert handled >= set(subjects), example.log.read_text()
        # The failed delivery came back, after (at least most of) its 1 s back-off.
        assert len(retried) >= 2 and retried[1] - retried[0] > 0.5
        firsts = {}
        for item in seen:
            firsts.setdefault(item["subject"], item["at"])
        latencies = sorted(firsts[s] - sent[s] for s in subjects)
        print(f"upstream send -> example handler: median {statistics.median(latencies):.3f} s")
    finally:
        example.stop()
