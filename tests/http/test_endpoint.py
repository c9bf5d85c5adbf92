"""The GraphQL endpoint's fast path answers exactly as Ariadne does, and only when it may.

A document's first request goes through Ariadne's app (parse, validate, execute); once
it has validated cleanly, later requests with it run on the fast path. So each request
below is sent twice and both answers must be the same, byte for byte.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query, graphql_sync
from starlette.routing import Route

from broker.http import checker
from broker.http.endpoint import GraphQLEndpoint, read_body
from tests import clients
from tests.clients import declare, send, settle
from tests.conftest import Api

LIMIT = 1024
UNKNOWN = "c0000000-0000-4000-8000-00000000000c"
TWO_OPERATIONS = """
query One { event_namespaces { objects { name } } }
query Two { event_listeners { objects { user_key } } }
"""


def graphql_routes(api: Api) -> dict[str, Route]:
    return {
        route.path: route
        for route in api.app.routes
        if isinstance(route, Route) and isinstance(route.endpoint, GraphQLEndpoint)
    }


def endpoint_of(api: Api, path: str = "/graphql/v{version:api_version}") -> GraphQLEndpoint:
    endpoint = graphql_routes(api)[path].endpoint
    assert isinstance(endpoint, GraphQLEndpoint)
    return endpoint


async def test_the_route_table_names_the_endpoint_of_every_graphql_request(api: Api) -> None:
    routes = graphql_routes(api)
    assert set(routes) == {"/graphql", "/graphql/v{version:api_version}"}
    for route in routes.values():
        assert {"GET", "POST"} <= (route.methods or set())
    # and nothing in front of the router answers GraphQL requests
    node: Any = api.app.build_middleware_stack()
    while hasattr(node, "app"):
        assert not isinstance(node, GraphQLEndpoint)
        node = node.app
    response = await api.http.put("/graphql/v25", json={"query": "{ __typename }"})
    assert response.status_code == 405


async def test_the_seed_path_runs_on_its_own_endpoint(api: Api) -> None:
    seed = endpoint_of(api, "/graphql")
    for _ in range(2):  # via Ariadne, then on the fast path
        response = await api.http.post("/graphql", json={"query": "{ __typename }"})
        assert response.json() == {"data": {"__typename": "Query"}}
    assert seed.fast_requests == 1


async def post_twice(api: Api, payload: Any, **kw: Any) -> tuple[httpx.Response, ...]:
    """The answer via Ariadne (a new document) and then via the fast path, if it took it."""
    endpoint = endpoint_of(api)
    answers = []
    for _ in range(2):
        before = endpoint.fast_requests
        response = await api.http.post("/graphql/v25", json=payload, **kw)
        answers.append((response, endpoint.fast_requests - before))
    (first, first_fast), (second, second_fast) = answers
    assert first_fast == 0
    return first, second, second_fast


@pytest.mark.parametrize(
    "payload",
    [
        {"query": "{ __typename }"},
        {"query": clients.FETCH, "variables": {"listener": UNKNOWN}},
        {"query": clients.FETCH, "variables": {"listener": 5}},
        {"query": clients.FETCH, "variables": {"listener": "not a uuid"}},
        {"query": clients.FETCH},
        {"query": clients.FETCH, "variables": None},
        {"query": clients.ACK, "variables": {"token": "forged"}},
        {"query": TWO_OPERATIONS},
        {"query": TWO_OPERATIONS, "operationName": "Two"},
        {"query": TWO_OPERATIONS, "operationName": "Three"},
        {"query": "{ event_namespaces { objects { name } } }", "extensions": {"x": 1}},
        # The root resolver refuses: the plan hands its error to graphql-core.
        {
            "query": clients.SEND,
            "variables": {
                "input": {"namespace": "nowhere", "routing_key": "r", "subject": "s", "priority": 1}
            },
        },
        {
            "query": clients.SEND,
            "variables": {
                "input": {"namespace": "mo", "routing_key": "r", "subject": "s", "priority": 0}
            },
        },
        # An integer beyond 64 bits: an error that quotes it, as Python's json reads it.
        {
            "query": "query($l: Int) { event_namespaces(limit: $l) { objects { name } } }",
            "variables": {"l": 2**64},
        },
    ],
    ids=lambda payload: repr(payload)[:60],
)
async def test_the_fast_path_answers_as_ariadne_does(api: Api, payload: Any) -> None:
    await declare(api, "org_unit", "reader")
    first, second, fast = await post_twice(api, payload)
    assert fast == 1
    assert second.status_code == first.status_code
    assert second.json() == first.json()
    assert second.headers["content-type"] == first.headers["content-type"]


async def test_a_fetch_and_acknowledge_on_the_fast_path_behave_as_the_first(api: Api) -> None:
    listener = await declare(api, "person", "fast")
    await send(api, "person", "s1")
    await send(api, "person", "s2")
    await settle(api)
    endpoint = endpoint_of(api)
    for subject in ("s1", "s2"):  # the first cycle via Ariadne, the second on the fast path
        event = await clients.fetch(api, listener)
        assert event is not None and event["subject"] == subject
        assert await clients.ack(api, event["token"]) is True
    assert endpoint.fast_requests >= 2
    assert await clients.fetch(api, listener) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"query": "{ nope }"},  # fails validation: never prepared
        {"query": "{ __typename }", "variables": []},
        {"query": "{ __typename }", "operationName": 5},
        ["{ __typename }"],
    ],
)
async def test_requests_the_fast_path_must_not_take_go_to_ariadne(api: Api, payload: Any) -> None:
    await api.http.post("/graphql/v25", json={"query": "{ __typename }"})  # prepared
    first, second, fast = await post_twice(api, payload)
    assert fast == 0
    assert first.status_code == second.status_code == 400
    assert first.text == second.text


async def test_a_body_that_is_not_json_goes_to_ariadne(api: Api) -> None:
    await api.http.post("/graphql/v25", json={"query": "{ __typename }"})
    endpoint = endpoint_of(api)
    before = endpoint.fast_requests
    for content_type in ("text/plain", "application/json"):
        response = await api.http.post(
            "/graphql/v25", content=b'{"query": "{ __typename }"', headers={
                "content-type": content_type})  # fmt: skip
        assert response.status_code == 400
    assert endpoint.fast_requests == before


async def test_the_seed_path_has_its_own_documents(api: Api) -> None:
    """A document valid on /graphql/v25 is not taken as valid on the seed's /graphql."""
    token_input = {"token": "forged"}
    await api.http.post("/graphql/v25", json={"query": clients.ACK, "variables": token_input})
    response = await api.http.post(
        "/graphql", json={"query": clients.ACK, "variables": token_input}
    )
    assert response.status_code == 400
    assert "errors" in response.json()


async def test_graphql_under_a_root_path(api: Api) -> None:
    """Behind a proxy that mounts the broker under a prefix (uvicorn --root-path)."""
    transport = httpx.ASGITransport(app=api.app, root_path="/broker")
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
        for _ in range(2):  # via Ariadne, then on the fast path
            response = await http.post("/broker/graphql/v25", json={"query": "{ __typename }"})
            assert response.status_code == 200
            assert response.json() == {"data": {"__typename": "Query"}}


def receiver(body: bytes, chunk: int) -> tuple[Any, list[int]]:
    """An ASGI `receive` handing over `body` in chunks; the list records what was taken."""
    taken: list[int] = []

    async def receive() -> dict[str, Any]:
        start = sum(taken)
        part = body[start : start + chunk]
        taken.append(len(part))
        return {"type": "http.request", "body": part, "more_body": start + chunk < len(body)}

    return receive, taken


@pytest.mark.parametrize("chunk", [LIMIT, 100])
async def test_a_body_at_the_limit_is_read_whole(chunk: int) -> None:
    receive, _ = receiver(b"x" * LIMIT, chunk)
    assert await read_body(receive, LIMIT) == b"x" * LIMIT


async def test_reading_stops_at_the_chunk_that_passes_the_limit() -> None:
    receive, taken = receiver(b"x" * 10 * LIMIT, 100)
    assert await read_body(receive, LIMIT) is None
    assert sum(taken) <= LIMIT + 100


async def test_a_body_at_the_limit_is_served_and_one_byte_more_is_refused(
    make_api: Any,
) -> None:
    query = b'{"query": "{ __typename }"}'
    query += b" " * (LIMIT - len(query))  # exactly at the limit
    api = await make_api(max_body_bytes=LIMIT)
    for body, status in ((query, 200), (query + b" ", 413)):
        response = await api.http.post(
            "/graphql/v25", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == status


async def test_a_stray_value_error_shows_users_no_text(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only BrokerErrors (and GraphQL's own errors) speak to users; a bug's text does not."""

    async def fetch(*args: Any, **kwargs: Any) -> None:
        raise ValueError("secret detail of a bug")

    monkeypatch.setattr(api.app.state.broker_state["broker"], "fetch", fetch)
    payload = {"query": clients.FETCH, "variables": {"listener": UNKNOWN}}
    first, second, fast = await post_twice(api, payload)
    assert fast == 1
    for response in (first, second):
        assert response.json()["errors"][0]["message"] == "Internal server error"
        assert "secret" not in response.text


# The last: Arabic-Indic digits, which Python's UUID() reads as digits.
@pytest.mark.parametrize(
    "listener", ["not a uuid", "", 5, "\u0661" * 8 + "-1111-4111-8111-" + "1" * 12]
)
async def test_a_malformed_uuid_gets_the_fixed_message(api: Api, listener: Any) -> None:
    message = await api.error(clients.FETCH, {"listener": listener})
    # graphql-core words where; the reason is ours (not Python's "badly formed hexadecimal…").
    assert "error 'Could not parse UUID'" in message, message


async def test_a_first_sight_is_checked_in_another_process(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked_in: list[int] = []
    check = checker.CHECKER.check

    async def recording(checks: checker.Checks, text: str, caller: Any) -> checker.Outcome:
        outcome = await check(checks, text, caller)
        checked_in.append(await checker.CHECKER.pid())
        return outcome

    monkeypatch.setattr(checker.CHECKER, "check", recording)
    for query in ("{ __typename } # never seen", "{ nope } # never seen", "{ __typename"):
        answers = [await api.http.post("/graphql/v25", json={"query": query}) for _ in range(3)]
        assert answers[0].text == answers[1].text == answers[2].text
    # Checked until kept (from the second sight on), so the third sight is a cache hit;
    # a text that does not parse is never kept.
    assert len(checked_in) == 2 + 2 + 3
    assert os.getpid() not in checked_in


async def test_a_document_is_kept_from_its_second_sight_on(api: Api) -> None:
    endpoint = endpoint_of(api)
    query = "{ __typename } # seen once"
    await api.http.post("/graphql/v25", json={"query": query})
    assert not endpoint.documents.known(query)
    await api.http.post("/graphql/v25", json={"query": query})
    assert endpoint.documents.known(query)


@pytest.mark.parametrize("query", ["{ __typename", "{ nope }", "{ " + "a " * 600 + "}"])
async def test_a_refused_document_answers_the_same_on_every_sight(api: Api, query: str) -> None:
    answers = [await api.http.post("/graphql/v25", json={"query": query}) for _ in range(3)]
    assert {answer.status_code for answer in answers} == {400}
    assert answers[0].text == answers[1].text == answers[2].text
    assert "errors" in answers[0].json()


async def test_a_document_that_only_introspects_is_answered_as_graphql_core_would(
    api: Api,
) -> None:
    query = get_introspection_query(True, True, True, True, True) + "\n# only introspects"
    endpoint = endpoint_of(api)
    expected = graphql_sync(endpoint.schema, query)
    assert expected.errors is None
    for operation_name in (None, "IntrospectionQuery", None):  # first sights, then cached
        payload = {"query": query, "operationName": operation_name}
        response = await api.http.post("/graphql/v25", json=payload)
        assert response.status_code == 200
        assert response.json() == {"data": expected.data}
    assert endpoint.fast_requests == 3  # worked out in the checker process, first sight too
    other = [
        await api.http.post("/graphql/v25", json={"query": query, "operationName": "Other"})
        for _ in range(2)
    ]
    assert other[0].status_code == other[1].status_code == 400
    assert other[0].json() == other[1].json()
    assert "Unknown operation named 'Other'" in other[0].json()["errors"][0]["message"]
