"""Hostile requests through the whole app: each refusal is clear, and writes nothing.

The refused mutations here would each write if they ran; a snapshot of every Redis key
before and after shows that they did not.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from broker import operations
from broker.auth import ROLES
from broker.operations import MAX_LIST_LENGTH, MAX_PAGE_SIZE
from tests import clients
from tests.clients import declare, send, settle
from tests.conftest import Api, MakeApi
from tests.jwks_server import IdentityProvider, b64url, sign, unsigned
from tests.snapshots import nothing_written, snapshot

OWNER = "a0000000-0000-4000-8000-00000000000a"
DECLARE_NAMESPACE = {"input": {"name": "hostile", "public": True}}


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    """insecure-dev without a token: the development owner with every role."""
    return await make_api()


# Body, document shape, batches --------------------------------------------------------------


async def test_oversized_body_is_413_and_writes_nothing(api: Api, redis: Redis) -> None:
    body = {"query": clients.DECLARE_NAMESPACE, "variables": DECLARE_NAMESPACE}
    padded = json.dumps({**body, "padding": "x" * 300_000})
    async with nothing_written(redis):
        response = await api.http.post(
            "/graphql/v25", content=padded, headers={"content-type": "application/json"}
        )

        async def chunks() -> Any:  # no Content-Length: counted as it streams in
            for start in range(0, len(padded), 16_384):
                yield padded[start : start + 16_384].encode()

        streamed = await api.http.post(
            "/graphql/v25", content=chunks(), headers={"content-type": "application/json"}
        )
    for refused in (response, streamed):
        assert refused.status_code == 413
        assert refused.json() == {
            "errors": [{"message": "Request body is larger than 262144 bytes"}]
        }


def _nested(depth: int) -> str:
    """`namespace { listeners { namespace { ... uuid } } }`, `depth` levels under a Listener."""
    selection = "uuid"
    for level in range(depth):
        field = "namespace" if level % 2 else "listeners"
        selection = f"{field} {{ {selection} }}"
    return selection


SHAPES: list[Any] = [
    pytest.param(
        'mutation { event_listener_declare(input: {user_key: "k", routing_key: "person"}) '
        f"{{ {_nested(12)} }} }}",
        "Query is 14 levels deep; the limit is 10.",
        id="deep",
    ),
    pytest.param(
        "mutation { "
        + " ".join(
            f'a{i}: event_namespace_declare(input: {{name: "n{i}"}}) {{ name }}' for i in range(31)
        )
        + " }",
        "Query has 31 aliases; the limit is 30.",
        id="alias-bomb",
    ),
    pytest.param(
        'mutation { event_namespace_declare(input: {name: "n"}) { ...F ...F ...F } }'
        " fragment F on Namespace { "
        + " ".join(["name owner public"] * 25)
        + " listeners { uuid owner user_key routing_key } }",
        "A selection set has 76 selections; the limit is 50.",
        id="field-bomb",
    ),
    pytest.param(
        # The issue's 7 KB document: seconds of validation CPU before any limit refused it.
        "{ " + " ".join(["me{actor{uuid}}"] * 420) + " } # 0.8147236863931789",
        "Syntax Error: Document contains more than 500 tokens. Parsing aborted.",
        id="overlapping-fields-bomb",
    ),
    pytest.param(
        "{ " + " ".join(["me{actor{uuid}}"] * 4) + " }",
        "Query selects `me` more than 3 times, fragments expanded; the limit is 3.",
        id="repeated-fields",
    ),
]


@pytest.mark.parametrize(("document", "message"), SHAPES)
async def test_hostile_document_is_refused_before_anything_runs(
    api: Api, redis: Redis, document: str, message: str
) -> None:
    async with nothing_written(redis):
        body = await api.post(document)
    assert [error["message"] for error in body["errors"]] == [message]
    assert body.get("data") is None


async def test_batched_requests_are_refused_and_run_nothing(api: Api, redis: Redis) -> None:
    one = {"query": clients.DECLARE_NAMESPACE, "variables": DECLARE_NAMESPACE}
    async with nothing_written(redis):
        for batch in ([one], [one, one], [one] * 50):
            response = await api.http.post("/graphql/v25", json=batch)
            assert response.status_code == 400
            assert response.json()["errors"][0]["message"] == (
                "Operation data should be a JSON object"
            )


# Input lengths ------------------------------------------------------------------------------

NAME_ERROR = "{} must be 1 to 255 characters"
LONG_NAME, LONG_SUBJECT = "n" * 256, "s" * 221
TOO_MANY = [str(i) for i in range(MAX_LIST_LENGTH + 1)]
UUIDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(MAX_LIST_LENGTH + 1)]

SEND = {"namespace": "mo", "routing_key": "person", "subject": "s"}
EVENTS = "query($f: FullEventFilter) { events(filter: $f) { objects { subject } } }"
LISTENERS = "query($f: ListenerFilter) { event_listeners(filter: $f) { objects { uuid } } }"
NAMESPACES = "query($f: NamespaceFilter) { event_namespaces(filter: $f) { objects { name } } }"
NESTED = """query($f: ListenersBoundFullEventFilter) {
  event_listeners { objects { events(filter: $f) { subject } } } }"""
DELETE_NAMESPACE = "mutation($name: String!) { event_namespace_delete(input: {name: $name}) }"


def _each(what: str, length: int) -> str:
    return f"each of {what} must be at most {length} characters"


def _count(what: str) -> str:
    return f"{what} may hold at most {MAX_LIST_LENGTH} values"


# (document, variables, message): every string and list input of schema.graphql.
OVERLONG: list[tuple[str, dict[str, Any], str]] = [
    (
        clients.SEND,
        {"input": {**SEND, "subject": LONG_SUBJECT}},
        "Too large subject. Only send identifiers as the subject, not data",
    ),
    (clients.SEND, {"input": {**SEND, "routing_key": LONG_NAME}}, NAME_ERROR.format("routing_key")),
    (clients.SEND, {"input": {**SEND, "namespace": LONG_NAME}}, "Namespace does not exist."),
    (clients.DECLARE_NAMESPACE, {"input": {"name": LONG_NAME}}, NAME_ERROR.format("name")),
    (clients.DECLARE_NAMESPACE, {"input": {"name": ""}}, NAME_ERROR.format("name")),
    (DELETE_NAMESPACE, {"name": LONG_NAME}, NAME_ERROR.format("name")),
    *[
        (
            clients.DECLARE_LISTENER,
            {
                "input": {
                    "namespace": "mo",
                    "user_key": "k",
                    "routing_key": "person",
                    field: LONG_NAME,
                }
            },
            NAME_ERROR.format(field),
        )
        for field in ("namespace", "user_key", "routing_key")
    ],
    (LISTENERS, {"f": {"user_keys": [LONG_NAME]}}, _each("user_keys", 255)),
    (LISTENERS, {"f": {"routing_keys": ["ok", LONG_NAME]}}, _each("routing_keys", 255)),
    (LISTENERS, {"f": {"namespaces": {"names": [LONG_NAME]}}}, _each("names", 255)),
    (NAMESPACES, {"f": {"names": [LONG_NAME]}}, _each("names", 255)),
    (EVENTS, {"f": {"subjects": [LONG_SUBJECT]}}, _each("subjects", 220)),
    (EVENTS, {"f": {"listeners": {"user_keys": [LONG_NAME]}}}, _each("user_keys", 255)),
    (NESTED, {"f": {"subjects": [LONG_SUBJECT]}}, _each("subjects", 220)),
    (
        clients.SILENCE,
        {"input": {"listeners": {}, "subjects": [LONG_SUBJECT]}},
        _each("subjects", 220),
    ),
    (
        clients.SILENCE,
        {"input": {"listeners": {"routing_keys": [LONG_NAME]}, "subjects": []}},
        _each("routing_keys", 255),
    ),
    (clients.UNSILENCE, {"input": {"subjects": [LONG_SUBJECT]}}, _each("subjects", 220)),
    (clients.RERUN, {"input": {"subjects": [LONG_SUBJECT]}}, _each("subjects", 220)),
    # Lists
    (clients.SILENCE, {"input": {"listeners": {}, "subjects": TOO_MANY}}, _count("subjects")),
    (clients.UNSILENCE, {"input": {"subjects": TOO_MANY}}, _count("subjects")),
    (
        clients.UNSILENCE,
        {"input": {"priorities": list(range(1, MAX_LIST_LENGTH + 2))}},
        _count("priorities"),
    ),
    (clients.RERUN, {"input": {"subjects": TOO_MANY}}, _count("subjects")),
    (clients.RERUN, {"input": {"listeners": {"uuids": UUIDS}}}, _count("uuids")),
    (EVENTS, {"f": {"subjects": TOO_MANY}}, _count("subjects")),
    (EVENTS, {"f": {"priorities": list(range(MAX_LIST_LENGTH + 1))}}, _count("priorities")),
    (LISTENERS, {"f": {"owners": UUIDS}}, _count("owners")),
    (LISTENERS, {"f": {"user_keys": TOO_MANY}}, _count("user_keys")),
    (NAMESPACES, {"f": {"names": TOO_MANY}}, _count("names")),
    (NAMESPACES, {"f": {"owners": UUIDS}}, _count("owners")),
]


async def test_every_overlong_input_is_refused_and_writes_nothing(api: Api, redis: Redis) -> None:
    await clients.declare(api, "person", "listener")
    await clients.send(api, "person", "pending")
    await clients.settle(api)
    async with nothing_written(redis):
        for document, variables, message in OVERLONG:
            body = await api.post(document, variables)
            assert [error["message"] for error in body.get("errors", [])] == [message], (
                document,
                message,
            )


async def test_inputs_at_their_limits_are_accepted(api: Api) -> None:
    name, subject = "n" * 255, "s" * 220
    await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": name, "public": True}})
    listener = await clients.declare(api, "r" * 255, "u" * 255, namespace=name)
    await clients.send(api, "r" * 255, subject, namespace=name)
    await clients.settle(api)
    many = [*TOO_MANY[:-2], subject]
    assert len(many) == MAX_LIST_LENGTH
    await api.data(
        clients.SILENCE, {"input": {"listeners": {"uuids": [listener]}, "subjects": many}}
    )
    found = await api.data(
        EVENTS, {"f": {"subjects": many, "listeners": {"user_keys": ["u" * 255]}}}
    )
    assert found == {"events": {"objects": [{"subject": subject}]}}


async def test_overlong_token_and_cursor_are_parse_errors(api: Api) -> None:
    token = base64.urlsafe_b64encode(f"{OWNER}.1.{'s' * 100_000}".encode()).decode()
    assert await api.data(clients.ACK, {"token": token}) == {"event_acknowledge": True}
    deep = base64.urlsafe_b64encode(b"[" * 50_000).decode()
    for cursor in (deep, "x" * 100_000, base64.urlsafe_b64encode(b'{"a": 1}').decode()):
        message = await api.error(
            EVENTS.replace("(filter: $f)", "(cursor: $c)").replace(
                "$f: FullEventFilter", "$c: Cursor"
            ),
            {"c": cursor},
        )
        assert "Could not parse Cursor" in message


async def test_absurd_wait_is_refused_or_capped(make_api: MakeApi) -> None:
    api = await make_api(fetch_max_wait_seconds=0.2)
    listener = await clients.declare(api, "person", "listener")
    query = (
        "query($l: UUID!, $w: Float) { event_fetch(filter: {listener: $l, wait: $w}) { subject } }"
    )
    outcomes = {}
    for wait in ("NaN", "Infinity", "-Infinity", "-1", "1e308"):
        payload = {"query": query, "variables": {"l": listener, "w": "WAIT"}}
        raw = json.dumps(payload).replace('"WAIT"', wait)  # NaN and Infinity are not JSON
        started = time.monotonic()
        response = await api.http.post(
            "/graphql/v25", content=raw, headers={"content-type": "application/json"}
        )
        assert time.monotonic() - started < 2, wait
        body = response.json()
        outcomes[wait] = [e["message"] for e in body["errors"]] if "errors" in body else body
    not_a_number = "Variable '$w' has invalid value: Float cannot represent non numeric value: "
    assert outcomes == {
        "NaN": [not_a_number + "nan"],
        "Infinity": [not_a_number + "inf"],
        "-Infinity": [not_a_number + "-inf"],
        "-1": ["wait must not be negative"],
        "1e308": {"data": {"event_fetch": None}},  # capped at fetch_max_wait_seconds
    }


# Page sizes ---------------------------------------------------------------------------------

LIMITED: list[str] = [
    "query($n: Int) { events(limit: $n) { objects { subject } } }",
    "query($n: Int) { event_listeners(limit: $n) { objects { uuid } } }",
    "query($n: Int) { event_namespaces(limit: $n) { objects { name } } }",
    "query($n: Int) { event_listeners { objects { events(limit: $n) { subject } } } }",
    "query($n: Int) { event_namespaces { objects { listeners(limit: $n) { uuid } } } }",
    "query($n: Int) { me { actor { event_listeners(limit: $n) { uuid } } } }",
    "query($n: Int) { me { actor { event_namespaces(limit: $n) { name } } } }",
]


async def test_limit_outside_one_to_the_maximum_is_refused(api: Api) -> None:
    await clients.declare(api, "person", "listener")
    await clients.send(api, "person", "pending")
    await clients.settle(api)
    for document in LIMITED:
        for limit in (0, -1, MAX_PAGE_SIZE + 1, 2**31 - 1):
            body = await api.post(document, {"n": limit})
            assert [error["message"] for error in body["errors"]] == [
                f"limit must be 1 to {MAX_PAGE_SIZE}"
            ], (document, limit)
        assert "errors" not in await api.post(document, {"n": MAX_PAGE_SIZE})


async def test_event_lists_without_limit_stop_at_the_page_size(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "MAX_PAGE_SIZE", 3)
    await clients.declare(api, "person", "listener")
    for number in range(7):
        await clients.send(api, "person", f"s{number}")
    await clients.settle(api)

    nested = await api.data("{ event_listeners { objects { events { subject } } } }")
    assert len(nested["event_listeners"]["objects"][0]["events"]) == 3

    # At the root, the page has a cursor to the rest.
    seen: list[str] = []
    cursor = None
    while True:
        page = (
            await api.data(
                "query($c: Cursor) { events(cursor: $c) { objects { subject } "
                "page_info { next_cursor } } }",
                {"c": cursor},
            )
        )["events"]
        assert len(page["objects"]) <= 3
        seen += [item["subject"] for item in page["objects"]]
        cursor = page["page_info"]["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"s{number}" for number in range(7)]


# Introspection and the explorer -------------------------------------------------------------

INTROSPECT = "{ __schema { queryType { name } } }"


async def test_introspection_and_explorer_are_on_by_default(api: Api) -> None:
    assert await api.data(INTROSPECT) == {"__schema": {"queryType": {"name": "Query"}}}
    page = await api.http.get("/graphql/v25", headers={"accept": "text/html"})
    assert page.status_code == 200 and "<html" in page.text.lower()


async def test_introspection_and_explorer_can_be_switched_off(make_api: MakeApi) -> None:
    api = await make_api(introspection=False, explorer=False)
    for path in ("/graphql", "/graphql/v25"):
        for document in (INTROSPECT, '{ __type(name: "Query") { name } }'):
            message = await api.error(document, path=path)
            assert "introspection" in message.lower(), message
        page = await api.http.get(path, headers={"accept": "text/html"})
        assert "<html" not in page.text.lower()
        assert page.status_code >= 400


# Fuzzing ------------------------------------------------------------------------------------

FIELDS = [
    "event_fetch", "events", "event_listeners", "event_namespaces", "me", "actor", "uuid",
    "event_namespace_declare", "event_namespace_delete", "event_listener_declare",
    "event_listener_create", "event_listener_delete", "event_send", "event_acknowledge",
    "event_silence", "event_unsilence", "event_rerun", "objects", "page_info", "next_cursor",
    "subject", "priority", "token", "silenced", "listener", "listeners", "namespace", "name",
    "owner", "public", "user_key", "routing_key", "namespaces", "subjects", "priorities",
    "owners", "uuids", "user_keys", "routing_keys", "wait", "limit", "cursor", "filter", "input",
    "delete_pending_events", "__typename", "__schema", "types",
]  # fmt: skip
PUNCTUATION = [*"{}()[]:$!.,=@", "...", "query", "mutation", "fragment F on Listener", '"mo"']
PUNCTUATION += ['"x"', "1", "-1", "0", "99999999999", "1.5", "true", "null", "$v", "on"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
# Values that often fit the schema's inputs, so that many requests reach the resolvers.
scalars = (
    st.sampled_from(["mo", "MO", "ns", "rk", "k", "pending", "person", OWNER, "", "x" * 256])
    | st.integers(min_value=-2, max_value=2**31)
    | st.booleans()
    | st.none()
)
INPUT_FIELDS = ["namespace", "routing_key", "user_key", "subject", "priority", "name", "public"]
INPUT_FIELDS += ["uuid", "delete_pending_events", "token", "listeners", "subjects", "priorities"]
INPUT_FIELDS += ["silenced", "uuids", "owners", "user_keys", "routing_keys", "names"]
inputs = st.dictionaries(
    st.sampled_from(INPUT_FIELDS),
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.sampled_from(INPUT_FIELDS), st.lists(scalars, max_size=2), max_size=2),
    max_size=5,
)
variables = st.fixed_dictionaries(
    {},
    optional={
        name: inputs if name in ("input", "filter") else scalars | json_values
        for name in ("v", "input", "listener", "token", "filter", "name", "listener_uuid")
    },
)
token_garbage = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=", max_size=80
)


def _documents() -> st.SearchStrategy[str]:
    words = st.lists(st.sampled_from(FIELDS + PUNCTUATION), max_size=40).map(" ".join)
    # Mostly well-bracketed operations, so that many reach validation and execution.
    return (
        words
        | words.map(lambda body: f"mutation {{ {body} }}")
        | words.map(lambda body: f"query($v: String) {{ {body} }}")
        | st.text(max_size=100)
    )


# Valid documents with random arguments: these reach the resolvers.
VALID = [
    clients.SEND, clients.DECLARE_NAMESPACE, clients.DECLARE_LISTENER, clients.ACK,
    clients.SILENCE, clients.UNSILENCE, clients.RERUN, clients.FETCH, clients.DELETE_LISTENER,
    clients.GET_LISTENERS, clients.LIST_EVENTS, clients.ME, DELETE_NAMESPACE, EVENTS,
]  # fmt: skip


def _claims(idp: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": idp.issuer,
        "aud": "event-broker",
        "exp": now + 300,
        "uuid": OWNER,
        "realm_access": {"roles": sorted(ROLES - {"read_event_all"})},
    }
    return {**claims, **overrides}


@st.composite
def authorizations(
    draw: st.DrawFn, key: ECKey, intruder: ECKey, idp: IdentityProvider
) -> str | None:
    """No header, a valid token, or a forged one."""
    forged = ["none", "garbage", "tampered", "intruder", "alg-none", "claims"]
    kind = draw(st.sampled_from(["valid"] * len(forged) + forged))  # half of them valid
    if kind == "none":
        return None
    if kind == "valid":
        return f"Bearer {sign(key, _claims(idp))}"
    if kind == "garbage":
        return draw(st.sampled_from(["Bearer ", "Basic ", "", "bearer "])) + draw(token_garbage)
    if kind == "tampered":
        header, payload, signature = sign(key, _claims(idp)).split(".")
        forged = b64url(json.dumps(_claims(idp, uuid=str(draw(st.uuids())))).encode())
        position = draw(st.sampled_from(["payload", "signature"]))
        if position == "signature":
            flipped = "A" if signature[5] != "A" else "B"
            return f"Bearer {header}.{payload}.{signature[:5]}{flipped}{signature[6:]}"
        return f"Bearer {header}.{forged}.{signature}"
    if kind == "intruder":
        return f"Bearer {sign(intruder, _claims(idp))}"
    if kind == "alg-none":
        return f"Bearer {unsigned({'alg': 'none'}, _claims(idp))}"
    overrides = draw(
        st.dictionaries(
            st.sampled_from(["iss", "aud", "exp", "uuid", "realm_access", "nbf"]),
            json_values,
            min_size=1,
            max_size=2,
        )
    )
    return f"Bearer {sign(key, _claims(idp, **overrides))}"  # often invalid, sometimes not


@pytest.fixture(scope="module")
def intruder(signing_key: ECKey) -> ECKey:
    return ECKey.generate_key("P-256", {"kid": signing_key.kid})  # the published kid, another key


@pytest.fixture
async def fuzz_api(make_api: MakeApi, provider: IdentityProvider, signing_key: ECKey) -> Api:
    """An oidc app with something to hit: a namespace, a listener and a pending event."""
    api = await make_api(
        auth="oidc",
        oidc_jwks_url=provider.jwks_url,
        oidc_issuer=provider.issuer,
        oidc_audience="event-broker",
    )
    headers = {"Authorization": f"Bearer {sign(signing_key, _claims(provider))}"}
    await api.data(
        clients.DECLARE_NAMESPACE, {"input": {"name": "ns", "public": True}}, headers=headers
    )
    declare = {"input": {"namespace": "ns", "routing_key": "rk", "user_key": "k"}}
    await api.data(clients.DECLARE_LISTENER, declare, headers=headers)
    send = {"input": {"namespace": "ns", "routing_key": "rk", "subject": "pending"}}
    await api.data(clients.SEND, send, headers=headers)
    await clients.settle(api)
    return api


@pytest.mark.slow
@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_fuzzed_requests_never_give_a_server_error_nor_write_on_error(
    fuzz_api: Api,
    redis: Redis,
    provider: IdentityProvider,
    signing_key: ECKey,
    intruder: ECKey,
    data: st.DataObject,
) -> None:
    authorization = data.draw(authorizations(signing_key, intruder, provider))
    document = data.draw(st.sampled_from(VALID) | _documents())
    variables_ = data.draw(variables | json_values)
    headers = {} if authorization is None else {"Authorization": authorization}

    before = await snapshot(redis)
    response = await fuzz_api.http.post(
        "/graphql/v25", json={"query": document, "variables": variables_}, headers=headers
    )
    await clients.settle(fuzz_api)
    assert response.status_code < 500, response.text
    body = response.json()
    messages = [error.get("message") for error in body.get("errors") or []]
    assert "Internal server error" not in messages, body
    # An error with no root field answered means nothing ran to completion: nothing written.
    answered = [value for value in (body.get("data") or {}).values() if value is not None]
    if messages and not answered:
        assert await snapshot(redis) == before, (document, variables_, body)


async def test_nested_event_lists_share_one_budget_per_request(make_api: MakeApi) -> None:
    api = await make_api(max_objects_per_request=18)  # 3 listeners + 3 x 5 events
    tight = await make_api(max_objects_per_request=17)
    for user_key in ("a", "b", "c"):
        await declare(api, "person", user_key)
    for n in range(5):
        await send(api, "person", f"s{n}")
    await settle(api)
    query = "{ event_listeners { objects { events(limit: 5) { subject } } } }"
    assert len((await api.data(query))["event_listeners"]["objects"]) == 3
    assert (await tight.error(query)).startswith("The query lists more than 17 objects")


# Text and names: the input boundary ---------------------------------------------------------

LISTENERS_BY_KEY = (
    "{ event_listeners { objects { uuid user_key routing_key namespace { name } } } }"
)


async def _post_json(
    api: Api, document: str, variables: dict[str, Any], operation_name: str | None = None
) -> dict[str, Any]:
    """Post with JSON's own escapes (`\\udfff`), which an encoder of real UTF-8 cannot write."""
    payload = {"query": document, "variables": variables, "operationName": operation_name}
    response = await api.http.post(
        "/graphql/v25", content=json.dumps(payload), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    return body


def _declare_listener(**fields: str) -> dict[str, Any]:
    return {"input": {"namespace": "mo", "user_key": "k", "routing_key": "person", **fields}}


async def test_a_lone_surrogate_routing_key_is_refused_and_leaves_no_record(
    api: Api, redis: Redis
) -> None:
    """The issue's first attack: the registry record used to stay, and broke everything."""
    async with nothing_written(redis):
        body = await _post_json(
            api, clients.DECLARE_LISTENER, _declare_listener(routing_key="\udfff")
        )
    assert [error["message"] for error in body["errors"]] == [
        "Variable '$input.routing_key' holds a lone surrogate (U+DFFF): not text"
    ]
    assert await api.data(LISTENERS_BY_KEY) == {"event_listeners": {"objects": []}}
    assert (await api.http.get("/metrics")).status_code == 200


INVISIBLE = "must not hold invisible or formatting characters ({})"
ZWSP_ERROR = INVISIBLE.format("U+200B ZERO WIDTH SPACE")
OUTER_SPACE = "name must not start or end with white space"
SURROGATE = "holds a lone surrogate (U+{}): not text"
CONTROL = "holds the control character U+{}"


def _var(field: str) -> str:
    return f"Variable '$input.{field}'"


LITERAL_SEND = (
    'mutation { event_send(input: {namespace: "mo", routing_key: "person", subject: """a\nb"""}) }'
)
# (document, variables, operationName, message): each would write if it ran.
NOT_TEXT: list[Any] = [
    pytest.param(
        clients.DECLARE_LISTENER,
        _declare_listener(user_key="k\udfff"),
        None,
        f"{_var('user_key')} {SURROGATE.format('DFFF')}",
        id="surrogate-user-key",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        {"input": {"name": "\ud800x"}},
        None,
        f"{_var('name')} {SURROGATE.format('D800')}",
        id="surrogate-name",
    ),
    pytest.param(
        clients.SEND,
        {"input": {**SEND, "subject": "s\udfff"}},
        None,
        f"{_var('subject')} {SURROGATE.format('DFFF')}",
        id="surrogate-subject",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        {"input": {"name": "ok"}},
        "DeclareEventNamespace\udfff",
        f"operationName {SURROGATE.format('DFFF')}",
        id="surrogate-operation-name",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        {"input": {"name": "ok", "x\udfff": 1}},
        None,
        f"A key in variable '$input' {SURROGATE.format('DFFF')}",
        id="surrogate-key",
    ),
    pytest.param(
        clients.DECLARE_LISTENER,
        _declare_listener(routing_key="per\x00son"),
        None,
        f"{_var('routing_key')} {CONTROL.format('0000')}",
        id="nul-routing-key",
    ),
    pytest.param(
        clients.SEND,
        {"input": {**SEND, "subject": "s\x00"}},
        None,
        f"{_var('subject')} {CONTROL.format('0000')}",
        id="nul-subject",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        {"input": {"name": "a\x1b[31m"}},
        None,
        f"{_var('name')} {CONTROL.format('001B')}",
        id="escape-name",
    ),
    pytest.param(
        clients.DECLARE_LISTENER,
        _declare_listener(user_key="k\x85"),
        None,
        f"{_var('user_key')} {CONTROL.format('0085')}",
        id="c1-user-key",
    ),
    pytest.param(
        'mutation { event_namespace_declare(input: {name: "a\\u0000b"}) { name } }',
        {},
        None,
        f"A string in the document {CONTROL.format('0000')}",
        id="literal-nul",
    ),
    pytest.param(
        LITERAL_SEND,
        {},
        None,
        f"A string in the document {CONTROL.format('000A')}",
        id="literal-block-newline",
    ),
    pytest.param(
        'mutation { event_namespace_declare(input: {name: "x"}) { name } } # \x00',
        {},
        None,
        f"The document {CONTROL.format('0000')}",
        id="document-nul",
    ),
]
NOT_A_NAME: list[Any] = [
    pytest.param({"name": "Mo"}, "mo", id="case"),
    pytest.param({"name": "\uff4d\uff4f"}, "mo", id="full-width"),
    pytest.param({"name": "\u043c\u043e"}, "mo", id="cyrillic"),
    pytest.param({"name": "m\u043e"}, "mo", id="mixed-script"),
    pytest.param({"name": "mo\u200b"}, f"name {ZWSP_ERROR}", id="zero-width-space"),
    pytest.param(
        {"name": "\ufeffmo"},
        "name " + INVISIBLE.format("U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        id="bom",
    ),
    pytest.param(
        {"name": "mo\u202e"}, "name " + INVISIBLE.format("U+202E RIGHT-TO-LEFT OVERRIDE"), id="bidi"
    ),
    pytest.param({"name": " ns"}, OUTER_SPACE, id="leading-space"),
    pytest.param({"name": "ns "}, OUTER_SPACE, id="trailing-space"),
    pytest.param({"name": "\u3000ns"}, OUTER_SPACE, id="ideographic-space"),
]


def _lookalike(existing: str) -> str:
    return (
        f"Namespace name is too much like the existing namespace '{existing}' "
        "(they differ only in case, width, invisible characters or lookalike letters)."
    )


@pytest.mark.parametrize(("document", "variables", "operation_name", "message"), NOT_TEXT)
async def test_a_string_that_is_no_valid_text_is_refused_before_anything_runs(
    api: Api,
    redis: Redis,
    document: str,
    variables: dict[str, Any],
    operation_name: str | None,
    message: str,
) -> None:
    async with nothing_written(redis):
        body = await _post_json(api, document, variables, operation_name)
    assert [error["message"] for error in body["errors"]] == [message]


@pytest.mark.parametrize(("fields", "message"), NOT_A_NAME)
async def test_a_namespace_name_that_is_no_name_or_a_lookalike_is_refused(
    api: Api, redis: Redis, fields: dict[str, str], message: str
) -> None:
    expected = _lookalike(message) if message == "mo" else message
    async with nothing_written(redis):
        body = await _post_json(
            api, clients.DECLARE_NAMESPACE, {"input": {**fields, "public": True}}
        )
    assert [error["message"] for error in body["errors"]] == [expected]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("routing_key", "person\u200b", f"routing_key {ZWSP_ERROR}"),
        ("user_key", "\u200bk", f"user_key {ZWSP_ERROR}"),
        ("user_key", "k ", "user_key must not start or end with white space"),
        ("namespace", "mo\u200b", f"namespace {ZWSP_ERROR}"),
    ],
)
async def test_a_listener_name_that_is_no_name_is_refused(
    api: Api, redis: Redis, field: str, value: str, message: str
) -> None:
    async with nothing_written(redis):
        message_seen = await api.error(
            clients.DECLARE_LISTENER, _declare_listener(**{field: value})
        )
    assert message_seen == message


async def test_the_seeds_mo_spelling_still_names_the_built_in_namespace(api: Api) -> None:
    created = await api.data(clients.SEED_CREATE_LISTENER, path="/graphql")
    assert created["event_listener_create"]["uuid"]
    listed = await api.data(LISTENERS_BY_KEY)
    assert listed["event_listeners"]["objects"][0]["namespace"] == {"name": "mo"}


async def test_names_are_compared_in_nfc(api: Api, redis: Redis) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    declared = await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": decomposed}})
    assert declared == {"event_namespace_declare": {"name": composed}}
    listener = await declare(api, decomposed, "k", namespace=composed)
    async with nothing_written(redis):  # the other spellings are the same things
        await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": composed}})
        assert await declare(api, composed, "k", namespace=decomposed) == listener
    await send(api, composed, "s", namespace=decomposed)
    await settle(api)
    assert (await clients.fetch(api, listener) or {}).get("subject") == "s"
    found = await api.data(LISTENERS, {"f": {"routing_keys": [decomposed]}})
    assert found == {"event_listeners": {"objects": [{"uuid": listener}]}}


async def test_of_two_racing_lookalike_declares_exactly_one_wins(api: Api, redis: Redis) -> None:
    owners = [str(uuid.UUID(int=n + 1)) for n in range(6)]
    names = ["Team", "team", "TEAM", "t\u0435am", "\uff54\uff45\uff41\uff4d", "teaM"]
    bodies = await asyncio.gather(
        *(
            api.post(
                clients.DECLARE_NAMESPACE,
                {"input": {"name": name}},
                headers={"Authorization": f"Bearer {unsigned({'alg': 'none'}, {'uuid': owner})}"},
            )
            for owner, name in zip(owners, names, strict=True)
        )
    )
    won = [body["data"]["event_namespace_declare"]["name"] for body in bodies if body.get("data")]
    assert len(won) == 1
    refused = [body["errors"][0]["message"] for body in bodies if body.get("errors")]
    assert refused == [_lookalike(won[0])] * 5
    stored = await redis.hkeys("broker:{broker:registry}:namespaces")
    assert sorted(stored) == sorted(["mo", won[0]])


async def test_a_namespace_stored_before_folds_keeps_its_name_from_lookalikes(
    make_api: MakeApi, redis: Redis
) -> None:
    api = await make_api()
    # As an older version stored it: the record, and no fold claimed.
    record = {"name": "legacy", "owner": "a0000000-0000-4000-8000-00000000000a", "public": True}
    await redis.hset("broker:{broker:registry}:namespaces", "legacy", json.dumps(record))
    restarted = await make_api()
    assert await restarted.error(clients.DECLARE_NAMESPACE, {"input": {"name": "Legacy"}}) == (
        _lookalike("legacy")
    )
    owner = {"Authorization": f"Bearer {unsigned({'alg': 'none'}, {'uuid': record['owner']})}"}
    again = await api.data(
        clients.DECLARE_NAMESPACE, {"input": {"name": "legacy", "public": True}}, headers=owner
    )
    assert again == {"event_namespace_declare": {"name": "legacy"}}


async def test_a_deleted_namespace_frees_its_fold(api: Api) -> None:
    await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": "Team"}})
    assert (await api.error(clients.DECLARE_NAMESPACE, {"input": {"name": "team"}})).startswith(
        "Namespace name is too much like"
    )
    assert await api.data(DELETE_NAMESPACE, {"name": "Team"}) == {"event_namespace_delete": True}
    assert await api.data(clients.DECLARE_NAMESPACE, {"input": {"name": "team"}})


# Errors in the API's words ------------------------------------------------------------------

KEEP_PENDING = {"delete_pending_events": False}
PYTHON_WORDS = ("codec", "badly formed", "hexadecimal", "Traceback", "attribute", "literal for")


async def test_bad_uuids_tokens_and_cursors_are_parse_errors_in_the_apis_words(api: Api) -> None:
    surrogate_cursor = base64.urlsafe_b64encode(b'["\\udfff", "x"]').decode()
    answers = [
        await api.post(clients.FETCH, {"listener": "nope"}),
        await api.post(clients.FETCH, {"listener": 5}),
        await api.post('{ event_fetch(filter: {listener: "nope"}) { subject } }'),
        await api.post(clients.DELETE_LISTENER, {"listener_uuid": "x", **KEEP_PENDING}),
        await api.post(clients.ACK, {"token": "!!!"}),
        await api.post(clients.ACK, {"token": base64.urlsafe_b64encode(b"\xff\xfe").decode()}),
        await api.post("query($c: Cursor) { events(cursor: $c) { objects { subject } } }",
                       {"c": surrogate_cursor}),
        await api.post("query($c: Cursor) { event_listeners(cursor: $c) { objects { uuid } } }",
                       {"c": base64.urlsafe_b64encode(b"\xff").decode()}),
    ]  # fmt: skip
    messages = [answer["errors"][0]["message"] for answer in answers]
    parsed = ["UUID"] * 4 + ["EventToken"] * 2 + ["Cursor"] * 2
    assert [
        f"encountered error 'Could not parse {kind}'" in m
        for kind, m in zip(parsed, messages, strict=True)
    ] == [True] * 8, messages
    assert not [word for message in messages for word in PYTHON_WORDS if word in message]


# Records that cannot be read ----------------------------------------------------------------

REGISTRY = "broker:{broker:registry}"
BAD_LISTENERS = {
    "b0000000-0000-4000-8000-000000000001": b"not json",
    "b0000000-0000-4000-8000-000000000002": b'{"uuid": "b0000000-0000-4000-8000-000000000002"}',
    "b0000000-0000-4000-8000-000000000003": b"\xff\xfe{}",
    "b0000000-0000-4000-8000-000000000004": json.dumps(
        {"uuid": "b0000000-0000-4000-8000-000000000004", "owner": 5, "namespace": "mo",
         "routing_key": "person", "user_key": "old"}
    ).encode(),
}  # fmt: skip
BAD_NAMESPACES = {"old-layout": b'["old-layout", "owner"]', "not-utf8": b"\xc3\x28"}
EVERYTHING = """{
  event_listeners { objects { uuid user_key routing_key events { subject } } }
  event_namespaces { objects { name owner listeners { uuid } } }
  events { objects { subject } }
  me { actor { event_namespaces { name } event_listeners { user_key } } }
}"""
ADMIN_DELETES = (
    "mutation($u: UUID!) { event_listener_delete(input: {uuid: $u, delete_pending_events: true}) }"
)


async def _plant_unreadable_records(redis: Redis, listener: str) -> None:
    """What an older version (or damage) could leave behind, written straight into Redis."""
    await redis.hset(f"{REGISTRY}:listeners", mapping=BAD_LISTENERS)  # type: ignore[arg-type]
    await redis.hset(f"{REGISTRY}:namespaces", mapping=BAD_NAMESPACES)  # type: ignore[arg-type]
    # Indexed as their records once were, so that listings come across them.
    await redis.zadd(f"{REGISTRY}:ix:listeners", dict.fromkeys(BAD_LISTENERS, 0))
    await redis.zadd(f"{REGISTRY}:ix:namespaces", dict.fromkeys(BAD_NAMESPACES, 0))
    # A pending event of a good listener in another record layout, and bad listener state.
    tag = f"broker:{{broker:l:{listener}}}"
    await redis.hset(f"{tag}:events", "old", "x|y")
    await redis.zadd(f"{tag}:index", {"old": 1, "indexed-without-record": 2})
    await redis.hset(f"broker:{{broker:l:{next(iter(BAD_LISTENERS))}}}:meta", "silenced", "many")


async def test_unreadable_records_are_skipped_counted_and_logged_once(
    api: Api, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    listener = await declare(api, "person", "good")
    await send(api, "person", "pending")
    await settle(api)
    await _plant_unreadable_records(redis, listener)

    for _ in range(2):
        listed = await api.data(EVERYTHING)
        scraped = await api.http.get("/metrics")
    assert [item["user_key"] for item in listed["event_listeners"]["objects"]] == ["good"]
    assert listed["event_listeners"]["objects"][0]["events"] == [{"subject": "pending"}]
    assert sorted(item["name"] for item in listed["event_namespaces"]["objects"]) == ["mo"]
    assert listed["events"] == {"objects": [{"subject": "pending"}]}
    assert listed["me"]["actor"]["event_listeners"] == [{"user_key": "good"}]
    assert scraped.status_code == 200
    gauges = [
        sample.labels
        for family in text_string_to_metric_families(scraped.text)
        if family.name == "os2mo_events"
        for sample in family.samples
    ]
    assert {labels["user_key"] for labels in gauges} == {"good"}
    for kind in ("listener", "namespace", "event"):
        assert f'broker_unreadable_records_total{{kind="{kind}"}}' in scraped.text
    for document, variables in [
        (clients.SILENCE, {"input": {"listeners": {"user_keys": ["good"]}, "subjects": ["s"]}}),
        (clients.UNSILENCE, {"input": {"listeners": {"routing_keys": ["person"]}}}),
        (clients.RERUN, {"input": {"listeners": {"namespaces": {"names": ["mo"]}}}}),
    ]:
        assert "errors" not in await api.post(document, variables)

    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    keys = [r.getMessage().split(" at ", 1)[1].split(" (")[0] for r in warnings]
    assert len(keys) == len(set(keys)), "each unreadable record is logged once"
    assert f"{REGISTRY}:listeners[b0000000-0000-4000-8000-000000000003]" in keys
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in warnings)


async def test_an_admin_deletes_unreadable_listeners_and_namespaces(api: Api, redis: Redis) -> None:
    listener = await declare(api, "person", "good")
    await _plant_unreadable_records(redis, listener)
    other = {"Authorization": "Bearer " + unsigned(
        {"alg": "none"}, {"uuid": OWNER, "realm_access": {"roles": sorted(ROLES)}}
    )}  # fmt: skip
    for uuid_ in BAD_LISTENERS:
        assert await api.error(ADMIN_DELETES, {"u": uuid_}, headers=other) == (
            "No policy approved the access"
        )
        assert await api.data(ADMIN_DELETES, {"u": uuid_}) == {"event_listener_delete": True}
    for name in BAD_NAMESPACES:
        assert await api.error(DELETE_NAMESPACE, {"name": name}, headers=other) == (
            "You are not the owner of that namespace."
        )
        assert await api.data(DELETE_NAMESPACE, {"name": name}) == {"event_namespace_delete": True}
    assert await redis.hkeys(f"{REGISTRY}:listeners") == [listener]
    assert sorted(await redis.hkeys(f"{REGISTRY}:namespaces")) == ["mo"]
    first = next(iter(BAD_LISTENERS))
    assert not await redis.exists(f"broker:{{broker:l:{first}}}:meta")
    # And an unreadable record in the way of a declare is named, not a crash.
    await redis.hset(f"{REGISTRY}:namespaces", "in-the-way", "{}")
    assert await api.error(clients.DECLARE_NAMESPACE, {"input": {"name": "in-the-way"}}) == (
        "The stored record of this namespace cannot be read; an admin can delete it."
    )


async def test_a_broker_starts_and_lists_beside_a_namespace_named_in_no_utf_8(
    make_api: MakeApi, redis: Redis
) -> None:
    await redis.hset(f"{REGISTRY}:namespaces", b"\xff\xfe", b"{}")  # type: ignore[arg-type]
    api = await make_api()  # start-up folds every stored name
    listed = await api.data(NAMESPACES)
    assert listed == {"event_namespaces": {"objects": [{"name": "mo"}]}}
