"""`broker serve` as operators run it: a real process, with and without a Redis URL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis
from tests import clients
from tests.processes import Process, broker_env

# Slow: own broker processes or large backlogs (`pytest -m "not slow"` leaves them out).
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_RETRY_MIN_SECONDS", "soon"),
        ("BROKER_RETRY_MAX_SECONDS", "inf"),  # not a number of seconds
        ("BROKER_FETCH_EMPTY_CACHE_SECONDS", "inf"),
        ("BROKER_FETCH_MAX_WAIT_SECONDS", "nan"),
    ],
)
def test_bad_setting_stops_start_up_with_one_clear_line(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env=broker_env(**{name: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert name in lines[0] and value in lines[0]


@pytest.mark.parametrize(
    ("settings", "secret"),
    [
        # A check across settings sees all of them: it names none of their values.
        (
            {
                "BROKER_RETRY_MIN_SECONDS": "100",
                "BROKER_RETRY_MAX_SECONDS": "10",
                "BROKER_REDIS_PASSWORD": "hunter2-password",
            },
            "hunter2-password",
        ),
        ({"BROKER_METRICS_TOKEN": "short-secret"}, "short-secret"),
        ({"BROKER_CONSOLE_SESSION_SECRET": "short-session-key"}, "short-session-key"),
    ],
)
def test_a_bad_setting_never_repeats_a_secret(settings: dict[str, str], secret: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env=broker_env(**settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("invalid setting")
    assert secret not in result.stderr + result.stdout


def test_settings_never_show_a_password_or_secret_when_printed() -> None:
    secrets = {
        "redis_password": "redis-password-1",
        "redis_sentinel_password": "sentinel-password-1",
        "console_client_secret": "console-client-secret-1",
        "console_session_secret": "console-session-secret-0123456789abcdef",
        "metrics_token": "metrics-token-0123456789",
    }
    settings = Settings(**secrets)  # type: ignore[arg-type]
    shown = repr(settings) + str(settings) + repr(settings.model_dump())
    for value in secrets.values():
        assert value not in shown


def test_oidc_without_a_metrics_token_warns_once_and_refuses_scrapes(
    redis_server: EmbeddedRedis, tmp_path: Path, processes: list[Process]
) -> None:
    env = broker_env(
        BROKER_REDIS_URL=redis_server.url,
        BROKER_AUTH="oidc",
        BROKER_OIDC_JWKS_URL="http://127.0.0.1:9/certs",
        BROKER_KEY_PREFIX="cli-metrics",
    )
    broker = Process(env, tmp_path / "broker.log")
    processes.append(broker)

    response = httpx.get(f"{broker.url}/metrics")

    assert response.status_code == 403
    assert broker.stop() == 0
    warnings = [line for line in broker.output().splitlines() if "BROKER_METRICS_TOKEN" in line]
    assert len(warnings) == 1 and "warning" in warnings[0].lower(), broker.output()
    assert "Traceback" not in broker.output()


def test_without_redis_url_it_runs_an_embedded_server_and_a_restart_loses_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    env = broker_env(BROKER_DATA_DIR=str(tmp_path / "data"))
    first = Process(env, tmp_path / "first.log")
    processes.append(first)
    listener = first.declare("l", "person")
    first.gql(
        clients.SEND,
        {"input": {"namespace": "mo", "routing_key": "person", "subject": "kept", "priority": 3}},
    )
    deadline = time.monotonic() + 10
    while not first.gql(clients.LIST_EVENTS, {"listener": listener})["events"]["objects"]:
        assert time.monotonic() < deadline, "fan-out did not deliver"
        time.sleep(0.05)
    assert first.stop() == 0
    assert (tmp_path / "data" / "appendonlydir").is_dir()
    assert not _processes_mentioning(str(tmp_path / "data")), "embedded server left running"

    second = Process(env, tmp_path / "second.log")
    processes.append(second)
    event = second.gql(clients.FETCH, {"listener": listener})["event_fetch"]
    assert (event["subject"], event["priority"]) == ("kept", 3)
    assert second.stop() == 0
