"""`GET /metrics`: OS2mo's event series with its labels, and the broker's own."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from broker.settings import DEV_OWNER, AuthMode, Settings
from broker.storage import gauges
from broker.storage import stats as storage_stats
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
    monkeypatch.setattr(storage_stats, "STATS_PER_CALL", 2)  # 5 listeners: calls of 2, 2, 1
    api = await make_api()
    for n in range(5):
        await clients.declare(api, f"key{n}", f"l{n}")
        for subject in range(n):
            await clients.send(api, f"key{n}", f"s{subject}")
    await clients.settle(api)

    _, samples = await scrape(api)

    for n in range(5):
        assert samples["os2mo_events", listener_labels(f"l{n}", f"key{n}", silenced="false")] == n


# Who may scrape (broker/http/metrics_access.py) -------------------------------------------------

TOKEN = "scrape-token-0123456789abcdef"
OIDC = {"auth": AuthMode.OIDC, "oidc_jwks_url": "http://127.0.0.1:9/certs"}


def assert_refused_plainly(response: httpx.Response, status: int) -> None:
    """Refused with one line of text that shows nothing of what /metrics holds."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert len(response.text.strip().splitlines()) == 1
    assert "os2mo_" not in response.text and "broker_" not in response.text


def assert_logged_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing above INFO, and no traceback, about a refused scrape."""
    assert [record for record in caplog.records if record.levelno > logging.INFO] == []
    assert all(record.exc_info is None for record in caplog.records)
    assert "Traceback" not in caplog.text


async def test_metrics_are_open_without_a_token_in_insecure_dev(api: Api) -> None:
    await clients.declare(api, "person", "open")

    _, samples = await scrape(api)

    assert samples["os2mo_events", listener_labels("open", "person", silenced="false")] == 0


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        "Bearer",
        f"Bearer {TOKEN} {TOKEN}",
        "Bearer " + "x" * 20_000,
        b"Bearer \xff\xfe not ascii",
    ],
)
async def test_with_a_token_a_scrape_without_it_gets_401(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture, authorization: str | bytes | None
) -> None:
    api = await make_api(metrics_token=TOKEN)
    await clients.declare(api, "person", "private-user-key")
    headers = {} if authorization is None else {"Authorization": authorization}
    caplog.clear()

    with caplog.at_level(logging.DEBUG):
        response = await api.http.get("/metrics", headers=headers)

    assert_refused_plainly(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert "private-user-key" not in response.text
    assert_logged_quietly(caplog)


async def test_with_a_token_a_scrape_that_sends_it_gets_the_metrics(make_api: MakeApi) -> None:
    # Whitespace around the configured token is dropped, as Prometheus trims its file.
    api = await make_api(metrics_token=f" {TOKEN}\n")
    await clients.declare(api, "person", "scraped")
    api.http.headers["Authorization"] = f"bearer {TOKEN}"  # the scheme is case-insensitive

    _, samples = await scrape(api)

    assert samples["os2mo_events", listener_labels("scraped", "person", silenced="false")] == 0


async def test_in_oidc_mode_without_a_token_metrics_answer_403_saying_how_to_open_them(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(**OIDC)
    caplog.clear()

    with caplog.at_level(logging.DEBUG):
        response = await api.http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert_refused_plainly(response, 403)
    assert (
        "set BROKER_METRICS_TOKEN, or BROKER_METRICS_PUBLIC=true to serve it to anyone"
        in response.text
    )
    assert_logged_quietly(caplog)


async def test_in_oidc_mode_metrics_made_public_are_served_to_anyone(make_api: MakeApi) -> None:
    api = await make_api(**OIDC, metrics_public=True)

    _, samples = await scrape(api)

    assert ("broker_redeliveries_total", frozenset()) in samples


async def test_in_oidc_mode_a_token_is_needed_even_when_metrics_are_public(
    make_api: MakeApi,
) -> None:
    api = await make_api(**OIDC, metrics_public=True, metrics_token=TOKEN)

    assert_refused_plainly(await api.http.get("/metrics"), 401)
    api.http.headers["Authorization"] = f"Bearer {TOKEN}"
    await scrape(api)


def test_a_short_metrics_token_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="BROKER_METRICS_TOKEN must be at least 16"):
        Settings(metrics_token=" " + "x" * 15 + " ")
