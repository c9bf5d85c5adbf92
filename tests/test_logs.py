"""Logs as operators read them: JSON lines, one per request, with a request id, no subjects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.storage.embedded import EmbeddedRedis
from tests import clients
from tests.processes import Process, broker_env

# Slow: own broker processes or large backlogs (`pytest -m "not slow"` leaves them out).
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


def _lines(process: Process) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]


def test_json_logs_have_one_line_per_request_with_its_id_and_no_subjects(
    tmp_path: Path, redis_server: EmbeddedRedis, processes: list[Process]
) -> None:
    env = broker_env(
        BROKER_REDIS_URL=redis_server.url, BROKER_KEY_PREFIX="logs", BROKER_LOG_FORMAT="json"
    )
    broker = Process(env, tmp_path / "broker.log")
    processes.append(broker)
    listener = broker.declare("l", "person")
    send = {"namespace": "mo", "routing_key": "person", "subject": "private-subject", "priority": 1}
    response = httpx.post(
        f"{broker.url}/graphql/v25",
        json={"query": clients.SEND, "variables": {"input": send}},
        headers={"X-Request-ID": "trace-42"},
    )
    assert response.json() == {"data": {"event_send": True}}
    assert response.headers["x-request-id"] == "trace-42"
    generated = httpx.post(
        f"{broker.url}/graphql/v25",
        json={"query": clients.FETCH, "variables": {"listener": listener}},
    ).headers["x-request-id"]
    assert len(generated) == 32
    assert broker.stop() == 0

    lines = _lines(broker)
    requests = [line for line in lines if line["event"] == "request"]
    assert [(r["request_id"], r["status"]) for r in requests][-2:] == [
        ("trace-42", 200),
        (generated, 200),
    ]
    assert {"method", "path", "duration_ms", "level", "timestamp"} <= requests[-1].keys()
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's too
    assert "private-subject" not in broker.output()
