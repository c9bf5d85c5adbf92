"""The API as clients use it: both documented forms, verbatim, and the refusals."""

from __future__ import annotations

import pytest

from tests import clients
from tests.clients import ack, declare, fetch, send, settle
from tests.conftest import Api, MakeApi

# Also on a real 3-node Redis Cluster: every script must stay inside one hash slot.
pytestmark = pytest.mark.cluster

PERSON = "5b9a0c4e-5f7e-4b8e-9d0c-2f1e6a3b4c5d"


async def test_seed_operations_work_verbatim_at_graphql(api: Api) -> None:
    created = await api.data(clients.SEED_CREATE_LISTENER, path="/graphql")
    listener = created["event_listener_create"]["uuid"]
    await send(api, "engagement", PERSON)
    await settle(api)

    event = (await api.data(clients.SEED_GET_EVENT, {"listener_uuid": listener}, path="/graphql"))[
        "event_fetch"
    ]
    assert event["subject"] == PERSON
    assert event["uuid"]
    acked = await api.data(clients.SEED_ACK, {"token": event["token"]}, path="/graphql")
    assert acked == {"event_acknowledge": True}
    assert (await api.data(clients.LIST_EVENTS, {"listener": listener}))["events"]["objects"] == []


async def test_released_operations_work_verbatim_at_v25(api: Api) -> None:
    declared = await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": "sd", "public": False}})
    assert declared == {"event_namespace_declare": {"name": "sd"}}
    listener = await declare(api, "org", "org-listener", namespace="sd")
    subject = '{"uuid": "0b3c1f4e-9a2d-4c7b-8e6f-1d2c3b4a5e6f"}'
    await send(api, "org", subject, priority=10000, namespace="sd")
    await settle(api)

    event = await fetch(api, listener)
    assert event is not None
    assert (event["subject"], event["priority"]) == (subject, 10000)
    assert await ack(api, event["token"]) is True
    assert await fetch(api, listener) is None


@pytest.mark.parametrize("path", ["/graphql/v21", "/graphql/v25", "/graphql/v30", "/graphql/v7"])
async def test_every_version_path_serves_the_released_api(api: Api, path: str) -> None:
    response = await api.http.post(path, json={"query": "{ me { actor { uuid } } }"})
    assert response.status_code == 200
    assert response.json()["data"]["me"]["actor"]["uuid"]


@pytest.mark.parametrize("version", ["9" * 10, "9" * 4301, "-1", "1.5", "x"])
async def test_a_version_that_is_no_short_number_is_not_found(api: Api, version: str) -> None:
    response = await api.http.post(f"/graphql/v{version}", json={"query": "{ __typename }"})
    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/graphql", "/graphql/v25"])
async def test_graphql_paths_answer_without_redirect(api: Api, path: str) -> None:
    response = await api.http.post(path, json={"query": "{ __typename }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_seed_endpoint_takes_a_bare_token_and_released_one_an_input_object(api: Api) -> None:
    bare = "mutation($t: EventToken!) { event_acknowledge(input: $t) }"
    assert "EventAcknowledgeInput" in await api.error(bare, {"t": "x"}, path="/graphql/v25")
    wrapped = "mutation($t: EventToken!) { event_acknowledge(input: {token: $t}) }"
    assert "EventToken" in await api.error(wrapped, {"t": "x"}, path="/graphql")


async def test_get_graphql_shows_the_explorer(api: Api) -> None:
    response = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "<html" in response.text.lower()


async def test_health_endpoints(api: Api) -> None:
    assert (await api.http.get("/health/live")).status_code == 200
    ready = await api.http.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


async def test_mo_namespace_exists_from_the_start_and_MO_names_it(api: Api) -> None:
    names = await api.data("{ event_namespaces { objects { name public } } }")
    assert names["event_namespaces"]["objects"] == [{"name": "mo", "public": True}]
    upper = await declare(api, "person", "same", namespace="MO")
    lower = await declare(api, "person", "same", namespace="mo")
    assert upper == lower


async def test_send_to_person_reaches_every_person_listener_and_no_other(api: Api) -> None:
    first = await declare(api, "person", "person-1")
    second = await declare(api, "person", "person-2")
    engagement = await declare(api, "engagement", "engagement-1")
    await send(api, "person", PERSON)
    await settle(api)

    for listener in (first, second):
        event = await fetch(api, listener)
        assert event is not None and event["subject"] == PERSON
    assert await fetch(api, engagement) is None


async def test_declare_is_idempotent_and_rejects_another_routing_key(api: Api) -> None:
    first = await declare(api, "person", "listener")
    assert await declare(api, "person", "listener") == first
    message = await api.error(
        clients.DECLARE_LISTENER_VARS,
        {"namespace": "mo", "user_key": "listener", "routing_key": "engagement"},
    )
    assert message == (
        "There already exists a listener with this user_key and a different routing_key"
    )


async def test_declare_listener_returns_its_owner(api: Api) -> None:
    data = await api.data(
        clients.DECLARE_LISTENER_VARS,
        {"namespace": "mo", "user_key": "k", "routing_key": "person"},
    )
    me = await api.data("{ me { actor { uuid } } }")
    assert data["event_listener_declare"]["owner"] == me["me"]["actor"]["uuid"]


# Refusals ----------------------------------------------------------------------------------

SEND_VARS = {"namespace": "mo", "routing_key": "person", "subject": PERSON, "priority": 10000}


async def _nothing_pending(api: Api) -> bool:
    return (await api.data("{ events { objects { subject } } }"))["events"]["objects"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"priority": 0}, "priority must be natural"),
        ({"priority": -5}, "priority must be natural"),
        (
            {"subject": "x" * 221},
            "Too large subject. Only send identifiers as the subject, not data",
        ),
        ({"namespace": "nope"}, "Namespace does not exist."),
    ],
)
async def test_bad_send_is_refused_and_changes_nothing(
    api: Api, change: dict[str, object], message: str
) -> None:
    await declare(api, "person", "listener")
    assert await api.error(clients.SEND, {"input": {**SEND_VARS, **change}}) == message
    await settle(api)
    assert await _nothing_pending(api)


async def test_subject_of_220_characters_is_accepted(api: Api) -> None:
    listener = await declare(api, "person", "listener")
    await send(api, "person", "x" * 220)
    await settle(api)
    event = await fetch(api, listener)
    assert event is not None and event["subject"] == "x" * 220


@pytest.mark.parametrize("token", ["", "not-a-token", "Zm9v", "!!!", "bm90LmEudG9rZW4="])
async def test_unparsable_token_is_a_graphql_error(api: Api, token: str) -> None:
    assert "Could not parse EventToken" in await api.error(clients.ACK, {"token": token})
    literal = f'mutation {{ event_acknowledge(input: {{token: "{token}"}}) }}'
    assert "Could not parse EventToken" in await api.error(literal)


async def test_wrong_types_are_refused(api: Api) -> None:
    bad_priority = {"input": {**SEND_VARS, "priority": "high"}}
    assert "Int" in await api.error(clients.SEND, bad_priority)
    assert "UUID" in await api.error(clients.FETCH, {"listener": "not-a-uuid"})
    assert await _nothing_pending(api)


async def test_fetch_on_unknown_listener_is_null(api: Api) -> None:
    assert await fetch(api, "7f1d1a52-8d3a-4e0b-9c61-0f4b9b3c2d1e") is None


async def test_declare_listener_in_unknown_namespace(api: Api) -> None:
    message = await api.error(
        clients.DECLARE_LISTENER,
        {"input": {"namespace": "ghost", "user_key": "k", "routing_key": "r"}},
    )
    assert message == "Namespace does not exist"
    assert (await api.data("{ event_listeners { objects { uuid } } }"))["event_listeners"][
        "objects"
    ] == []


async def test_redeclare_namespace_with_other_public_value(api: Api) -> None:
    await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": "sd", "public": False}})
    message = await api.error(clients.DECLARE_NAMESPACE, {"input": {"name": "sd", "public": True}})
    assert message == "Namespace already exists with public=false."


async def test_overlong_names_are_refused(api: Api) -> None:
    message = await api.error(
        clients.DECLARE_LISTENER,
        {"input": {"namespace": "mo", "user_key": "k" * 256, "routing_key": "person"}},
    )
    assert "user_key" in message
    assert "256" not in message


async def test_malformed_graphql_is_a_clear_error(api: Api) -> None:
    response = await api.http.post("/graphql/v25", json={"query": "mutation { event_send("})
    assert response.status_code == 400
    assert "Syntax Error" in response.json()["errors"][0]["message"]


async def test_restart_keeps_listeners_namespaces_and_pending_events(make_api: MakeApi) -> None:
    first = await make_api()
    await first.data(clients.DECLARE_NAMESPACE, {"input": {"name": "sd", "public": True}})
    listener = await declare(first, "person", "listener")
    await send(first, "person", PERSON)
    await settle(first)

    second = await make_api()
    event = await fetch(second, listener)
    assert event is not None and event["subject"] == PERSON
    names = await second.data("{ event_namespaces { objects { name } } }")
    assert {"name": "sd"} in names["event_namespaces"]["objects"]
