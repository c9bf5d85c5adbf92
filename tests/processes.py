"""Real broker processes for tests that need a whole `broker serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from broker.storage.embedded import free_port
from tests.clients import DECLARE_LISTENER


def broker_env(**extra: str) -> dict[str, str]:
    """This environment without any BROKER_ setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    return {**env, **extra}


class Process:
    """`python -m broker serve` (or `command`) on a free port, started and ready; its output
    goes to `log`."""

    def __init__(self, env: dict[str, str], log: Path, command: str = "serve") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker", command, "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"broker {command} did not get ready:\n{self.output()}")

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = httpx.post(
            f"{self.url}/graphql/v25", json={"query": query, "variables": variables or {}}
        ).json()
        assert "errors" not in body, body
        return body["data"]

    def declare(self, user_key: str, routing_key: str) -> str:
        """Declare a listener in `mo`; its uuid."""
        variables = {"input": {"namespace": "mo", "user_key": user_key, "routing_key": routing_key}}
        uuid: str = self.gql(DECLARE_LISTENER, variables)["event_listener_declare"]["uuid"]
        return uuid

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text()
