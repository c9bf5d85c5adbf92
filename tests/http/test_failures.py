"""Refusals are answers, not faults: only a bug logs a traceback (or anything above INFO)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from broker.errors import StorageUnavailable
from tests import clients
from tests.conftest import Api
from tests.jwks_server import unsigned

UNKNOWN = "c0000000-0000-4000-8000-00000000000c"
NO_ROLES = {"uuid": UNKNOWN, "realm_access": {"roles": []}}
NOWHERE = {"namespace": "nowhere", "routing_key": "r", "subject": "s", "priority": 1}


@pytest.mark.parametrize(
    ("payload", "headers"),
    [
        ({"query": "{ nope }"}, {}),  # does not validate
        ({"query": "{ __typename"}, {}),  # does not parse
        ({"query": "{ " + "me { actor { uuid } } " * 4 + "}"}, {}),  # past a document limit
        ({"query": clients.FETCH, "variables": {"listener": "not a uuid"}}, {}),
        ({"query": clients.SEND, "variables": {"input": NOWHERE}}, {}),  # a BrokerError
        ({"query": "{ __typename }"}, {"authorization": "Bearer garbage"}),
        (  # a role missing
            {"query": "{ event_listeners { objects { uuid } } }"},
            {"authorization": "Bearer " + unsigned({"alg": "none"}, NO_ROLES)},
        ),
    ],
    ids=["invalid", "unparsable", "limit", "bad uuid", "broker error", "no auth", "no role"],
)
async def test_a_refusal_logs_nothing_above_info_and_no_traceback(
    api: Api, caplog: pytest.LogCaptureFixture, payload: Any, headers: dict[str, str]
) -> None:
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):  # first sights through Ariadne, then the document cache
            response = await api.http.post("/graphql/v25", json=payload, headers=headers)
            assert response.status_code < 500
            assert response.json()["errors"]
    assert [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info] == []


async def test_a_bug_logs_one_traceback_and_answers_a_generic_error(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fetch(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("secret detail of a bug")

    monkeypatch.setattr(api.app.state.broker_state["broker"], "fetch", fetch)
    payload = {"query": clients.FETCH, "variables": {"listener": UNKNOWN}}
    for _ in range(2):  # through Ariadne, then the fast path
        caplog.clear()
        response = await api.http.post("/graphql/v25", json=payload)
        assert response.status_code == 200
        assert response.json() == {
            "data": {"event_fetch": None},
            "errors": [{"message": "Internal server error", "path": ["event_fetch"]}],
        }
        faults = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(faults) == 1
        assert faults[0].levelno == logging.ERROR
        assert faults[0].exc_info is not None
        assert isinstance(faults[0].exc_info[1], ZeroDivisionError)


@pytest.mark.parametrize(
    "failure",
    [
        SlotNotCoveredError("Slot 42 is not covered by the cluster."),
        RedisClusterException("Redis Cluster cannot be connected."),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        MasterDownError("MASTERDOWN Link with MASTER is down"),
        TryAgainError("TRYAGAIN"),
        ConnectionResetError("Connection reset by peer"),
    ],
    ids=lambda failure: type(failure).__name__,
)
async def test_a_store_in_failover_answers_the_retryable_error(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    async def fetch(*args: Any, **kwargs: Any) -> None:
        raise failure

    monkeypatch.setattr(api.app.state.broker_state["broker"], "fetch", fetch)
    payload = {"query": clients.FETCH, "variables": {"listener": UNKNOWN}}
    for _ in range(2):  # through Ariadne, then the fast path
        caplog.clear()
        response = await api.http.post("/graphql/v25", json=payload)
        assert response.status_code == 200
        assert response.json()["errors"][0]["message"] == str(StorageUnavailable())
        assert [r for r in caplog.records if r.levelno > logging.WARNING or r.exc_info] == []
