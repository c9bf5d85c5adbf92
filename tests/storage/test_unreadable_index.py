"""A listener's index damaged from outside (not UTF-8, infinite scores): its events go
unlisted, counted and logged, and every listing, rerun and unsilence answers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from tests import clients
from tests.conftest import Api

LISTINGS = [
    "{ events { objects { subject } } }",
    "{ me { actor { event_listeners { events { subject } } } } }",
    "mutation { event_rerun(input: {}) { subject } }",
    "mutation { event_unsilence(input: {}) }",
    'mutation { event_silence(input: {listeners: {}, subjects: ["s1"]}) }',
]


@pytest.mark.parametrize("damage", ["infinite score", "not utf-8"])
async def test_a_damaged_index_hides_that_listeners_events_and_breaks_nothing(
    api: Api, redis: Any, damage: str
) -> None:
    damaged = await clients.declare(api, "person", "damaged")
    await clients.declare(api, "person", "intact")
    await clients.send(api, "person", "s1")
    await clients.settle(api)
    index = api.app.state.broker_state["store"].keys.listener(UUID(damaged)).index
    if damage == "infinite score":
        await redis.zadd(index, {"ghost": float("inf")})
    else:
        await redis.zadd(index, {b"\xff\xfe": 1})

    for query in LISTINGS:
        response = await api.http.post("/graphql/v25", json={"query": query})
        assert response.status_code == 200, (query, response.text)
        assert "errors" not in response.json(), (query, response.text)
    events = await api.data("{ events { objects { subject listener { user_key } } } }")
    shown = {event["listener"]["user_key"] for event in events["events"]["objects"]}
    assert shown == {"intact"}
    metrics = (await api.http.get("/metrics")).text
    assert 'broker_unreadable_records_total{kind="event index"}' in metrics
