"""A mutation either completes or changes nothing: its answer's refusals come before it writes."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from tests.clients import declare, send, settle
from tests.conftest import Api
from tests.jwks_server import unsigned
from tests.snapshots import nothing_written

OWNER = str(uuid4())
LISTENER = {"namespace": "mo", "user_key": "preflight", "routing_key": "person"}


def token(*roles: str) -> dict[str, str]:
    claims = {"uuid": OWNER, "realm_access": {"roles": list(roles)}}
    return {"authorization": "Bearer " + unsigned({"alg": "none"}, claims)}


DECLARE = "mutation($input: ListenerCreateInput!) { event_listener_declare(input: $input) "
NAMESPACE = 'mutation { event_namespace_declare(input: {name: "preflight"}) '
CREATES = ("create_event_listener", "create_event_namespace")
READS = ("read_event", "read_event_listener", "read_event_namespace")


@pytest.mark.parametrize(
    ("query", "roles", "message"),
    [
        # a nested field the caller's roles do not reach
        (DECLARE + "{ uuid events { subject } } }", CREATES, "No policy approved the access"),
        (
            DECLARE + "{ namespace { name listeners { uuid } } } }",
            (*CREATES, "read_event_namespace"),
            "No policy approved the access",
        ),
        (NAMESPACE + "{ name listeners { uuid } } }", CREATES, "No policy approved the access"),
        # ... behind fragments
        (
            DECLARE + "{ ... on Listener { events { subject } } } }",
            CREATES,
            "No policy approved the access",
        ),
        (
            DECLARE + "{ ...L } } fragment L on Listener { namespace { name } }",
            CREATES,
            "No policy approved the access",
        ),
        # nested arguments that their resolvers refuse
        (DECLARE + "{ events(limit: 0) { subject } } }", (*CREATES, *READS), "limit must be 1"),
        (
            DECLARE + '{ events(filter: {subjects: ["' + "s" * 5000 + '"]}) { subject } } }',
            (*CREATES, *READS),
            "each of subjects must be at most",
        ),
        (
            NAMESPACE + "{ listeners(limit: 100000) { uuid } } }",
            (*CREATES, *READS),
            "limit must be 1",
        ),
    ],
)
async def test_a_mutation_whose_answer_is_refused_writes_nothing(
    api: Api, redis: Any, query: str, roles: tuple[str, ...], message: str
) -> None:
    async with nothing_written(redis):
        for _ in range(2):  # through Ariadne, then the document cache
            response = await api.http.post(
                "/graphql/v25",
                json={"query": query, "variables": {"input": LISTENER}},
                headers=token(*roles),
            )
            errors = response.json()["errors"]
            assert message in errors[0]["message"], errors


async def test_a_rerun_whose_answer_is_refused_writes_nothing(api: Api, redis: Any) -> None:
    await declare(api, "person", "rerun")
    await send(api, "person", "s1")
    await settle(api)
    query = "mutation { event_rerun(input: {}) { subject listener { uuid } } }"
    async with nothing_written(redis):
        response = await api.http.post(
            "/graphql/v25", json={"query": query}, headers=token("rerun_event", "read_event")
        )
        assert response.json()["errors"][0]["message"] == "No policy approved the access"


@pytest.mark.parametrize("directive", ["@skip(if: true)", "@include(if: $no)"])
async def test_a_field_left_out_of_the_answer_does_not_refuse_the_mutation(
    api: Api, directive: str
) -> None:
    no = ", $no: Boolean = false" if "$no" in directive else ""
    query = (
        f"mutation($input: ListenerCreateInput!{no}) {{ "
        f"event_listener_declare(input: $input) {{ uuid events {directive} {{ subject }} }} }}"
    )
    response = await api.http.post(
        "/graphql/v25",
        json={"query": query, "variables": {"input": LISTENER}},
        headers=token(*CREATES),
    )
    assert "errors" not in response.json()
    assert response.json()["data"]["event_listener_declare"]["uuid"]


async def test_a_mutation_whose_answer_is_allowed_answers_it(api: Api) -> None:
    response = await api.http.post(
        "/graphql/v25",
        json={
            "query": DECLARE + "{ uuid namespace { name } events(limit: 5) { subject } } }",
            "variables": {"input": LISTENER},
        },
        headers=token(*CREATES, *READS),
    )
    body = response.json()
    assert "errors" not in body, body
    assert body["data"]["event_listener_declare"]["namespace"] == {"name": "mo"}
    assert body["data"]["event_listener_declare"]["events"] == []


async def test_a_root_field_refused_after_others_wrote_names_those_that_did(api: Api) -> None:
    query = """mutation {
      a: event_namespace_declare(input: {name: "first"}) { name }
      b: event_namespace_declare(input: {name: "second"}) { name }
      c: event_namespace_declare(input: {name: "x\\u200b"}) { name }
    }"""
    for _ in range(2):  # through Ariadne, then the document cache
        body = (await api.http.post("/graphql/v25", json={"query": query})).json()
        assert (
            body["data"] is None
        )  # c's error nulls them all, so the message says what a and b did
        assert body["errors"][0]["message"] == (
            "name must not hold invisible or formatting characters (U+200B ZERO WIDTH SPACE)"
            " (`a`, `b` before it made their changes)"
        )
    names = await api.data("{ event_namespaces { objects { name } } }")
    assert {"first", "second"} <= {n["name"] for n in names["event_namespaces"]["objects"]}
