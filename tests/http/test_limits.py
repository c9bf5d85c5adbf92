"""Hostile requests are refused with a clear message before any resolver runs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from ariadne import MutationType, ObjectType, QueryType, make_executable_schema
from ariadne.asgi import GraphQL
from graphql import get_introspection_query, parse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from broker.http.limits import (
    MAX_DEFINITIONS,
    MAX_DOCUMENT_CHARS,
    MAX_FIELDS,
    MAX_TOKENS,
    DocumentLimits,
    JSONOnlyHTTPHandler,
    check_cost,
    query_parser,
    validation_rules,
)
from broker.settings import Settings
from tests import clients

TYPE_DEFS = """
type Query { hello: String!  node: Node! }
type Node { name: String!  child: Node!  children(limit: Int): [Node!]! }
type Mutation { record(note: String): Boolean! }
"""

WRITE = 'mutation Write { record(note: "x") }'

Post = Callable[..., Awaitable[httpx.Response]]


def make_app(calls: list[str], **overrides: Any) -> ASGIApp:
    """A tiny broker-shaped app: every resolver appends its field name to `calls`."""
    settings = Settings(**overrides)
    query, mutation, node = QueryType(), MutationType(), ObjectType("Node")

    def recording(field: str, value: Callable[..., Any]) -> Callable[..., Any]:
        def resolve(*_: Any, **kwargs: Any) -> Any:
            calls.append(field)
            return value(**kwargs)

        return resolve

    query.set_field("hello", recording("hello", lambda: "hi"))
    query.set_field("node", recording("node", dict))
    node.set_field("name", recording("name", lambda: "n"))
    node.set_field("child", recording("child", dict))
    node.set_field("children", recording("children", lambda limit=1: [{}] * limit))
    mutation.set_field("record", recording("record", lambda note=None: True))
    graphql = GraphQL(
        make_executable_schema(TYPE_DEFS, query, mutation, node),
        http_handler=JSONOnlyHTTPHandler(),
        query_parser=query_parser(limits=DocumentLimits.of(settings)),
        validation_rules=validation_rules(settings),
        introspection=settings.introspection,
    )
    routes = [Route("/graphql", graphql, methods=["GET", "POST"])]
    return Starlette(routes=routes)


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def make_post(calls: list[str]) -> Callable[..., Post]:
    def make(**overrides: Any) -> Post:
        transport = httpx.ASGITransport(make_app(calls, **overrides))

        async def post(**request: Any) -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.post("/graphql", **request)

        return post

    return make


@pytest.fixture
def post(make_post: Callable[..., Post]) -> Post:
    return make_post()


def errors(response: httpx.Response) -> list[str]:
    return [error["message"] for error in response.json()["errors"]]


# Malformed requests: Ariadne's answers, and the ones JSONOnlyHTTPHandler adds

JSON = {"content-type": "application/json"}
BAD_REQUESTS = {
    "malformed JSON": (b'{"query": ', JSON, "Request body is not a valid JSON"),
    "invalid UTF-8": (b'\xff{"query": 1}', JSON, "Request body is not a valid JSON"),
    "JSON nested too deeply": (b"[" * 100_000, JSON, "Request body is nested too deeply"),
    "text/plain": (b'{"query": "{hello}"}', {"content-type": "text/plain"}, "application/json"),
    "no content type": (b'{"query": "{hello}"}', {}, "application/json"),
    "multipart": (
        b"--x--",
        {"content-type": "multipart/form-data; boundary=x"},
        "application/json",
    ),
    "a batch (JSON array)": (
        b'[{"query": "{hello}"}]',
        JSON,
        "Operation data should be a JSON object",
    ),
    "JSON null": (b"null", JSON, "Operation data should be a JSON object"),
    "no query": (b"{}", JSON, "The query must be a string."),
    "query not a string": (b'{"query": ["{hello}"]}', JSON, "The query must be a string."),
    "variables not an object": (
        b'{"query": "{hello}", "variables": [1]}',
        JSON,
        "Query variables must be a null or an object.",
    ),
    "operationName not a string": (
        b'{"query": "{hello}", "operationName": 5}',
        JSON,
        "is not a valid operation name.",
    ),
}


@pytest.mark.parametrize(("body", "headers", "message"), BAD_REQUESTS.values(), ids=BAD_REQUESTS)
async def test_malformed_request_is_refused_with_400(
    post: Post, calls: list[str], body: bytes, headers: dict[str, str], message: str
) -> None:
    response = await post(content=body, headers=headers)

    assert response.status_code == 400
    assert message in response.text
    assert calls == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"[" * 100_000, "application/json"), (b"--x--", "multipart/form-data; boundary=x")],
    ids=["deep JSON", "multipart"],
)
async def test_plain_ariadne_answers_500_where_json_only_handler_answers_400(
    body: bytes, content_type: str
) -> None:
    schema = make_executable_schema(TYPE_DEFS)
    transport = httpx.ASGITransport(Starlette(routes=[Route("/", GraphQL(schema))]), False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/", content=body, headers={"content-type": content_type})

    assert response.status_code == 500


# Document limits: the whole document is refused, so the mutation beside the bomb never runs


async def post_with_write(post: Post, bomb: str) -> httpx.Response:
    return await post(json={"query": f"{WRITE}\n{bomb}", "operationName": "Write"})


# Settings under which only the validation rules' limits apply, not `check_cost`'s.
LOOSE = {"max_selections": 10**6, "max_selections_per_set": 10**6, "max_repeated_fields": 10**6}


def nested(depth: int, leaf: str = "name") -> str:
    return "node { " + "child { " * (depth - 2) + leaf + " }" * (depth - 1)


async def test_ordinary_write_runs(post: Post, calls: list[str]) -> None:
    response = await post_with_write(post, f"query Fine {{ {nested(10)} }}")

    assert response.status_code == 200
    assert response.json() == {"data": {"record": True}}
    assert calls == ["record"]


async def test_query_at_the_depth_limit_runs(post: Post, calls: list[str]) -> None:
    response = await post(json={"query": "{ " + nested(10) + " }"})

    assert response.status_code == 200
    assert calls.count("child") == 8


async def test_deep_query_is_refused(post: Post, calls: list[str]) -> None:
    response = await post_with_write(post, f"query Deep {{ {nested(11)} }}")

    assert response.status_code == 400
    assert errors(response) == ["Query is 11 levels deep; the limit is 10."]
    assert calls == []


async def test_depth_follows_fragments(post: Post, calls: list[str]) -> None:
    bomb = """
        query Deep { node { ...A } }
        fragment A on Node { child { child { ...B } } }
        fragment B on Node { child { child { child { child { ...C } } } } }
        fragment C on Node { child { child { child { name } } } }
    """
    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == ["Query is 11 levels deep; the limit is 10."]
    assert calls == []


async def test_depth_limit_comes_from_settings(
    make_post: Callable[..., Post], calls: list[str]
) -> None:
    post = make_post(max_query_depth=3)

    response = await post_with_write(post, f"query Deep {{ {nested(4)} }}")

    assert errors(response) == ["Query is 4 levels deep; the limit is 3."]
    assert calls == []


async def test_alias_bomb_is_refused(post: Post, calls: list[str]) -> None:
    bomb = "mutation Bomb { " + " ".join(f"a{i}: record" for i in range(31)) + " }"

    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == ["Query has 31 aliases; the limit is 30."]
    assert calls == []


async def test_field_bomb_is_refused(make_post: Callable[..., Post], calls: list[str]) -> None:
    post = make_post(**LOOSE)
    bomb = "query Bomb { node { " + "name " * MAX_FIELDS + "} }"

    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == [f"Query selects {MAX_FIELDS + 2} fields; the limit is 200."]
    assert calls == []


async def test_fields_are_counted_with_fragments_expanded(
    make_post: Callable[..., Post], calls: list[str]
) -> None:
    post = make_post(**LOOSE)
    # Each fragment spreads the previous one twice: 2**8 leaves from a short document.
    fragments = ["fragment F0 on Node { name }"] + [
        f"fragment F{i} on Node {{ child {{ ...F{i - 1} }} children {{ ...F{i - 1} }} }}"
        for i in range(1, 9)
    ]
    bomb = "query Bomb { node { ...F8 } }\n" + "\n".join(fragments)

    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == ["Query selects 768 fields; the limit is 200."]
    assert calls == []


async def test_fragment_cycle_is_refused(post: Post, calls: list[str]) -> None:
    bomb = """
        query Cycle { node { ...A } }
        fragment A on Node { child { ...B } }
        fragment B on Node { children { ...A } }
    """
    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == ["Cannot spread fragment 'A' within itself via 'B'."]
    assert calls == []


async def test_many_operations_are_refused(post: Post, calls: list[str]) -> None:
    bomb = "\n".join(f"query Q{i} {{ hello }}" for i in range(MAX_DEFINITIONS))

    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == ["Query has 21 operations and fragments; the limit is 20."]
    assert calls == []


async def test_document_with_too_many_tokens_is_refused(post: Post, calls: list[str]) -> None:
    bomb = "query Long { " + "hello " * MAX_TOKENS + "}"

    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == [
        f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted."
    ]
    assert calls == []


async def test_deeply_nested_document_is_refused_not_crashed(post: Post, calls: list[str]) -> None:
    levels = MAX_TOKENS // 2 - 10

    response = await post_with_write(
        post, "query Deep { node " + "{ child " * levels + "}" * levels + " }"
    )

    assert response.status_code == 400
    assert calls == []


# Validation's cost: bounded before validation runs (check_cost)


async def test_repeated_field_bomb_is_refused_before_validation(
    post: Post, calls: list[str]
) -> None:
    # The shape that cost seconds in the overlapping-fields rule, at any size.
    bomb = "query Bomb { " + "node { child { name } } " * 4 + "}"

    response = await post_with_write(post, bomb)

    assert response.status_code == 400
    assert errors(response) == [
        "Query selects `node` more than 3 times, fragments expanded; the limit is 3."
    ]
    assert calls == []


async def test_repeats_are_counted_through_fragments_and_nesting(
    post: Post, calls: list[str]
) -> None:
    bomb = """
        query Bomb { node { ...A ...B } }
        fragment A on Node { child { name name } }
        fragment B on Node { child { ... on Node { name } name } }
    """
    response = await post_with_write(post, bomb)

    assert errors(response) == [
        "Query selects `node.child.name` more than 3 times, fragments expanded; the limit is 3."
    ]
    assert calls == []


async def test_wide_selection_set_is_refused(post: Post, calls: list[str]) -> None:
    fields = " ".join(f"a{i}: name" for i in range(25)) + " " + "... on Node { name } " * 26

    response = await post_with_write(post, f"query Wide {{ node {{ {fields} }} }}")

    assert errors(response) == ["A selection set has 51 selections; the limit is 50."]
    assert calls == []


async def test_fragment_bomb_is_counted_without_expanding_it(post: Post, calls: list[str]) -> None:
    # 2**18 expanded selections from 19 short fragments; counted fragment by fragment.
    fragments = ["fragment F0 on Node { name }"] + [
        f"fragment F{i} on Node {{ a: child {{ ...F{i - 1} }} b: child {{ ...F{i - 1} }} }}"
        for i in range(1, 19)
    ]
    bomb = "query Bomb { node { ...F18 } }\n" + "\n".join(fragments)

    response = await post(json={"query": bomb})

    assert response.status_code == 400
    [message] = errors(response)
    assert message.startswith("Query has ") and message.endswith(
        " selections, fragments expanded; the limit is 1000."
    )
    assert calls == []


async def test_many_arguments_are_refused(post: Post, calls: list[str]) -> None:
    arguments = ", ".join(["limit: 1"] * 21)

    response = await post_with_write(
        post, f"query Q {{ node {{ children({arguments}) {{ name }} }} }}"
    )

    assert errors(response) == ["Field 'children' has 21 arguments; the limit is 20."]
    assert calls == []


async def test_long_document_is_refused_before_parsing(post: Post, calls: list[str]) -> None:
    document = f"{WRITE}\n#{'x' * MAX_DOCUMENT_CHARS}\nquery Q {{ hello }}"

    response = await post(json={"query": document, "operationName": "Write"})

    assert errors(response) == [
        f"Query is {len(document)} characters long; the limit is {MAX_DOCUMENT_CHARS}."
    ]
    assert calls == []


async def test_cost_limits_come_from_settings(
    make_post: Callable[..., Post], calls: list[str]
) -> None:
    tight = make_post(max_selections=3, max_selections_per_set=2, max_repeated_fields=1)

    assert errors(await tight(json={"query": "{ hello hello }"})) == [
        "Query selects `hello` more than 1 times, fragments expanded; the limit is 1."
    ]
    assert errors(await tight(json={"query": "{ hello node { name } __typename }"})) == [
        "A selection set has 3 selections; the limit is 2."
    ]
    assert errors(await tight(json={"query": "{ node { child { child { name } } } }"})) == [
        "Query has 4 selections, fragments expanded; the limit is 3."
    ]
    assert calls == []


async def test_a_fragment_cycle_is_refused_by_the_spec_rule_before_counting(
    post: Post, calls: list[str]
) -> None:
    # Spreads in a cycle cannot be sized; the spec's own rule refuses them first.
    bomb = """
        query Cycle { node { ...A } }
        fragment A on Node { a: child { ...B } b: child { ...B } }
        fragment B on Node { a: child { ...A } b: child { ...A } }
    """
    response = await post(json={"query": bomb})

    assert errors(response) == ["Cannot spread fragment 'A' within itself via 'B'."]
    assert calls == []


def _client_documents() -> list[str]:
    return [
        value
        for name, value in vars(clients).items()
        if name.isupper() and isinstance(value, str) and "{" in value
    ]


@pytest.mark.parametrize(
    "document", [*_client_documents(), get_introspection_query(True, True, True, True, True)]
)
def test_real_documents_pass_the_cost_limits_by_far(document: str) -> None:
    tenth = DocumentLimits(selections=100, selections_per_set=5, repeated_fields=1)
    introspection = "__schema" in document
    limits = DocumentLimits(selections=500, selections_per_set=15) if introspection else tenth

    check_cost(parse(document), limits)  # raises when over


# Introspection


async def test_standard_introspection_query_runs(post: Post) -> None:
    query = get_introspection_query(True, True, True, True, True)

    response = await post(json={"query": query})

    assert response.status_code == 200
    assert response.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_deep_introspection_is_refused(post: Post, calls: list[str]) -> None:
    chain = "types { " + "fields { type { " * 3 + "name" + " } }" * 3 + " }"

    response = await post_with_write(post, f"query Deep {{ __schema {{ {chain} }} }}")

    assert response.status_code == 400
    assert errors(response) == ["Maximum introspection depth exceeded"]
    assert calls == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("query Q { __schema { queryType { name } } }", "__schema"),
        ('query Q { ...F } fragment F on Query { __type(name: "Node") { name } }', "__type"),
    ],
)
async def test_introspection_off_refuses_schema_and_type(
    make_post: Callable[..., Post], calls: list[str], query: str, field: str
) -> None:
    post = make_post(introspection=False)

    response = await post_with_write(post, query)

    assert response.status_code == 400
    assert errors(response) == [f"Cannot query '{field}': introspection is disabled."]
    assert calls == []


async def test_introspection_off_still_answers_typename(
    make_post: Callable[..., Post],
) -> None:
    response = await make_post(introspection=False)(json={"query": "{ __typename }"})

    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(("introspection", "status"), [(True, 200), (False, 405)])
async def test_explorer_is_served_only_with_introspection(
    calls: list[str], introspection: bool, status: int
) -> None:
    transport = httpx.ASGITransport(make_app(calls, introspection=introspection))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/graphql")

    assert response.status_code == status


# Garbage never crashes the server

TOKENS = [*'{}()[]:$@!.,="', "...", "query", "mutation", "fragment F on Node", "node", "child"]
TOKENS += ["children(limit: 2)", "name", "hello", "record", "__schema", "__type", "types", "a:"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
documents = st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join) | st.text()
payloads = st.fixed_dictionaries(
    {},
    optional={
        "query": documents | json_values,
        "variables": json_values,
        "operationName": json_values,
    },
).map(lambda payload: json.dumps(payload).encode()) | st.binary(max_size=300)


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain"]
CONTENT_TYPES += ["multipart/form-data; boundary=x", ""]


@pytest.fixture(scope="module")
def garbage_transport() -> httpx.ASGITransport:
    return httpx.ASGITransport(make_app([]))


@pytest.mark.slow
@hypothesis_settings(max_examples=300, deadline=None)
@given(body=payloads, content_type=st.sampled_from(CONTENT_TYPES))
async def test_garbage_never_gives_a_server_error(
    garbage_transport: httpx.ASGITransport, body: bytes, content_type: str
) -> None:
    async with httpx.AsyncClient(transport=garbage_transport, base_url="http://test") as client:
        response = await client.post(
            "/graphql", content=body, headers={"content-type": content_type}
        )

    assert response.status_code < 500
