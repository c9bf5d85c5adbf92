"""`broker relay` refuses to start, with one clear line, when it lacks what it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import broker_env


def relay(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "relay"],
        env=broker_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_the_brokers_redis_url_the_relay_does_not_start() -> None:
    result = relay()
    assert result.returncode != 0
    assert "BROKER_REDIS_URL" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ("graphql", "BROKER_RELAY_OS2MO_URL, BROKER_RELAY_AUTH_SERVER"),
        ("amqp", "BROKER_RELAY_AMQP_URL"),
    ],
)
def test_a_source_without_its_settings_is_refused_naming_them(source: str, missing: str) -> None:
    result = relay(BROKER_REDIS_URL="redis://127.0.0.1:1/0", BROKER_RELAY_SOURCE=source)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if "invalid setting" in line]
    assert len(lines) == 1 and missing in lines[0]
