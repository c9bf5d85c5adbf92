"""`GET /metrics`: OS2mo's event series with its labels, and the broker's own."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.settings import DEV_OWNER
from broker.storage import gauges
from broker.storage import store as store_module
from tests import clients
from tests.conftest import Api, MakeApi

# The metrics table lives with the rest of the operators' documentation.
OPERATIONS = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api) -> tuple[str, Samples]:
    response = await api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, samples


def listener_labels(user_key: str, routing_key: str, **extra: str) -> frozenset[tuple[str, str]]:
    labels = {"owner": str(DEV_OWNER), "user_key": user_key, "ns": "mo"}
    return frozenset({**labels, "routing_key": routing_key, **extra}.items())


@pytest.mark.cluster
async def test_pending_events_per_listener_split_by_silenced(api: Api) -> None:
    busy = await clients.declare(api, "person", "busy")
    await clients.declare(api, "org", "idle")
    before = time.time()
    for subject in ("secret-subject-1", "secret-subject-2", "secret-subject-3"):
        await clients.send(api, "person", subject)
    await clients.settle(api)
    await api.data(
        clients.SILENCE,
        {"input": {"listeners": {"uuids": [busy]}, "subjects": ["secret-subject-2"]}},
    )

    text, samples = await scrape(api)

    loud = listener_labels("busy", "person", silenced="false")
    quiet = listener_labels("busy", "person", silenced="true")
    assert samples["os2mo_events", loud] == 2
    assert samples["os2mo_events", quiet] == 1
    assert before - 1 <= samples["os2mo_event_oldest", loud] <= time.time()
    assert samples["os2mo_event_oldest", quiet] >= samples["os2mo_event_oldest", loud]
    for silenced in ("false", "true"):
        idle = listener_labels("idle", "org", silenced=silenced)
        assert samples["os2mo_events", idle] == 0
        assert ("os2mo_event_oldest", idle) not in samples  # nothing pending: no age
    sent = frozenset({"ns": "mo", "routing_key": "person"}.items())
    assert samples["os2mo_event_sent_total", sent] == 3
    assert "secret-subject" not in text


async def test_acknowledgements_redeliveries_and_request_counts(make_api: MakeApi) -> None:
    api = await make_api(retry_min_seconds=0.3, retry_max_seconds=0.3)
    listener = await clients.declare(api, "person", "worker")
    await clients.send(api, "person", "s1")
    await clients.settle(api)
    first = await clients.fetch(api, listener)
    assert first is not None
    await asyncio.sleep(0.4)  # the test back-off (0.3 s) ends
    again = await clients.fetch(api, listener)
    assert again is not None
    assert await clients.ack(api, again["token"])
    assert await clients.ack(api, again["token"])  # stale now: not counted

    _, samples = await scrape(api)

    assert samples["os2mo_event_acknowledged_total", listener_labels("worker", "person")] == 1
    assert samples["broker_redeliveries_total", frozenset()] == 1
    count = "broker_request_duration_seconds_count"
    assert samples[count, frozenset({"operation": "fetch", "outcome": "ok"}.items())] == 2
    assert samples[count, frozenset({"operation": "acknowledge", "outcome": "ok"}.items())] == 2
    assert samples[count, frozenset({"operation": "send", "outcome": "ok"}.items())] == 1
    loud = listener_labels("worker", "person", silenced="false")
    assert samples["os2mo_events", loud] == 0


async def test_fan_out_lag_per_shard_is_zero_once_settled(api: Api) -> None:
    await clients.declare(api, "person", "l")
    await clients.send(api, "person", "s")
    await clients.settle(api)

    _, samples = await scrape(api)

    shards = api.app.state.broker_state["store"].keys.shards
    for shard in range(shards):
        assert samples["broker_fanout_backlog", frozenset({("shard", str(shard))})] == 0
        assert samples["broker_fanout_oldest_seconds", frozenset({("shard", str(shard))})] == 0


async def test_operations_guide_documents_every_metric(api: Api) -> None:
    response = await api.http.get("/metrics")
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(response.text)
        if not family.name.endswith("_created")  # prometheus-client's creation times
    }
    documented = set(re.findall(r"^\| `((?:os2mo|broker)_[a-z_]+)` \|", OPERATIONS, re.M))
    assert exposed == documented


async def test_listener_labels_with_quotes_and_backslashes_parse_back_exactly(
    api: Api,
) -> None:
    awkward = 'a "quoted" \\ back\\slash'
    await clients.declare(api, "person", awkward)
    await clients.send(api, "person", "s")
    await clients.settle(api)

    _, samples = await scrape(api)

    assert samples["os2mo_events", listener_labels(awkward, "person", silenced="false")] == 1


async def test_a_scrape_reads_the_listeners_page_by_page_and_misses_none(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gauges, "SNAPSHOT_PAGE", 2)
    for n in range(5):
        await clients.declare(api, "person", f"l{n}")
    await clients.send(api, "person", "s")
    await clients.settle(api)

    _, samples = await scrape(api)

    for n in range(5):
        assert samples["os2mo_events", listener_labels(f"l{n}", "person", silenced="false")] == 1


@pytest.mark.cluster
async def test_each_listener_gets_its_own_figures_when_one_call_reads_several(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "STATS_PER_CALL", 2)  # 5 listeners: calls of 2, 2, 1
    api = await make_api()
    for n in range(5):
        await clients.declare(api, f"key{n}", f"l{n}")
        for subject in range(n):
            await clients.send(api, f"key{n}", f"s{subject}")
    await clients.settle(api)

    _, samples = await scrape(api)

    for n in range(5):
        assert samples["os2mo_events", listener_labels(f"l{n}", f"key{n}", silenced="false")] == n
