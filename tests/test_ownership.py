"""Ownership end to end: owner B, with every role, tries every operation on owner A's things.

Real signed tokens from a loopback identity provider (`BROKER_AUTH=oidc`). Each refusal is
checked for its exact message, and for writing nothing: the whole Redis database is the same
before and after. Listings never show B a subject of A's events.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from ariadne import make_executable_schema
from graphql import TypeInfo, TypeInfoVisitor, Visitor, parse, visit
from joserfc.jwk import ECKey
from redis.asyncio import Redis

from broker import cursors
from broker.auth import ROLES
from broker.http.gates import FIELD_ROLES
from broker.http.resolvers import BINDABLES
from broker.http.schema import schema_text
from tests import clients
from tests.conftest import Api, MakeApi
from tests.jwks_server import IdentityProvider, b64url, sign, unsigned
from tests.snapshots import nothing_written

AUDIENCE = "event-broker"
OWNER_A = UUID("a0000000-0000-4000-8000-00000000000a")
OWNER_B = UUID("b0000000-0000-4000-8000-00000000000b")
ADMIN = UUID("c0000000-0000-4000-8000-00000000000c")
READER = UUID("d0000000-0000-4000-8000-00000000000d")
EMITTER = UUID("e0000000-0000-4000-8000-00000000000e")

# What an ordinary integration holds: every role but `read_event_all`.
EVERY_ROLE = sorted(ROLES - {"read_event_all"})

A_PRIVATE, A_PUBLIC, B_NAMESPACE = "a-private", "a-public", "b-own"
A_SUBJECT = "a-secret-subject"
A_SILENCED = "a-secret-silenced"
B_SUBJECT = "b-subject"

NOT_AUTHENTICATED = "User is not authenticated"
NO_POLICY = "No policy approved the access"
NOT_OWNER = "You are not the owner of that namespace."
CLAIMED = "Namespace already claimed by another owner."
NOT_PUBLIC = "Namespace already exists, but is non-public and you are not the owner."


# Identity provider and tokens ---------------------------------------------------------------


@dataclass
class Tokens:
    idp: IdentityProvider
    key: ECKey

    def claims(
        self, owner: UUID | None, roles: list[str] | None, **overrides: Any
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.idp.issuer,
            "aud": AUDIENCE,
            "exp": now + 300,
            "iat": now,
            "uuid": None if owner is None else str(owner),
            "realm_access": None if roles is None else {"roles": roles},
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, owner: UUID | None, roles: list[str] | None = None, **overrides: Any) -> str:
        roles = EVERY_ROLE if roles is None else roles
        return sign(self.key, self.claims(owner, roles, **overrides))

    def headers(self, owner: UUID, roles: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(owner, roles)}"}


@pytest.fixture
def tokens(provider: IdentityProvider, signing_key: ECKey) -> Tokens:
    return Tokens(provider, signing_key)


@dataclass
class As:
    """One caller of the API: every request carries their token."""

    api: Api
    headers: dict[str, str]

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.api.post(query, variables, headers=self.headers)

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self.post(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def error(self, query: str, variables: dict[str, Any] | None = None) -> str:
        body = await self.post(query, variables)
        assert body.get("errors"), body
        assert len(body["errors"]) == 1, body["errors"]
        message: str = body["errors"][0]["message"]
        return message


# The two owners' worlds ---------------------------------------------------------------------


@dataclass
class World:
    api: Api
    redis: Redis
    tokens: Tokens
    a: As
    b: As
    a_private: str  # A's listener in A's private namespace; holds A_SUBJECT and A_SILENCED
    a_public: str  # A's listener in A's public namespace; holds A_SUBJECT
    b_own: str  # B's listener in B's namespace; holds B_SUBJECT
    b_in_a_public: str  # B's listener in A's public namespace, with A's user_key
    a_token: str  # A has fetched A_SUBJECT from a_private with this token

    def caller(self, owner: UUID, roles: list[str] | None = None) -> As:
        return As(self.api, self.tokens.headers(owner, roles))


async def declare(caller: As, namespace: str, routing_key: str, user_key: str) -> str:
    data = await caller.data(
        clients.DECLARE_LISTENER,
        {"input": {"namespace": namespace, "routing_key": routing_key, "user_key": user_key}},
    )
    uuid: str = data["event_listener_declare"]["uuid"]
    return uuid


async def send(caller: As, namespace: str, subject: str, priority: int = 5) -> None:
    variables = {
        "input": {
            "namespace": namespace,
            "routing_key": "rk",
            "subject": subject,
            "priority": priority,
        }
    }
    assert (await caller.data(clients.SEND, variables))["event_send"] is True


@pytest.fixture
async def world(make_api: MakeApi, redis: Redis, tokens: Tokens) -> World:
    api = await make_api(
        auth="oidc",
        oidc_jwks_url=tokens.idp.jwks_url,
        oidc_issuer=tokens.idp.issuer,
        oidc_audience=AUDIENCE,
        mo_emitters=[EMITTER],
    )
    a = As(api, tokens.headers(OWNER_A))
    b = As(api, tokens.headers(OWNER_B))
    for caller, name, public in [
        (a, A_PRIVATE, False),
        (a, A_PUBLIC, True),
        (b, B_NAMESPACE, False),
    ]:
        await caller.data(clients.DECLARE_NAMESPACE, {"input": {"name": name, "public": public}})
    a_private = await declare(a, A_PRIVATE, "rk", "a-listener")
    a_public = await declare(a, A_PUBLIC, "rk", "a-listener")
    b_own = await declare(b, B_NAMESPACE, "rk", "b-listener")
    b_in_a_public = await declare(b, A_PUBLIC, "other", "a-listener")
    await send(a, A_PRIVATE, A_SUBJECT)
    await send(a, A_PRIVATE, A_SILENCED)
    await send(a, A_PUBLIC, A_SUBJECT)
    await send(b, B_NAMESPACE, B_SUBJECT)
    await clients.settle(api)
    silence = {"input": {"listeners": {"uuids": [a_private]}, "subjects": [A_SILENCED]}}
    assert (await a.data(clients.SILENCE, silence))["event_silence"] is True
    fetched = (await a.data(clients.FETCH, {"listener": a_private}))["event_fetch"]
    assert fetched["subject"] == A_SUBJECT
    return World(
        api, redis, tokens, a, b, a_private, a_public, b_own, b_in_a_public, fetched["token"]
    )


EVENTS_OF_EVERY_LISTENER = """
query { event_listeners { objects { uuid owner events { subject silenced } } } }
"""


async def a_view(world: World) -> Any:
    """Everything A sees of A's own events."""
    return await world.a.data(
        """query Own($owner: UUID!) {
          events(filter: {listeners: {owners: [$owner]}}) {
            objects { subject priority silenced listener { uuid } }
          }
        }""",
        {"owner": str(OWNER_A)},
    )


# Every operation, by B, on A's things -------------------------------------------------------

Variables = Callable[[World], dict[str, Any]]

LISTENER_FILTERS: list[Any] = [
    pytest.param(lambda w: {}, id="any-listener"),
    pytest.param(lambda w: {"uuids": [w.a_private, w.a_public]}, id="a-uuids"),
    pytest.param(lambda w: {"owners": [str(OWNER_A)]}, id="a-owner"),
    pytest.param(lambda w: {"namespaces": {"names": [A_PRIVATE, A_PUBLIC]}}, id="a-namespaces"),
]

REFUSED: list[Any] = [
    pytest.param(
        clients.DELETE_LISTENER,
        lambda w: {"listener_uuid": w.a_private, "delete_pending_events": True},
        NO_POLICY,
        id="delete-listener-with-pending",
    ),
    pytest.param(
        clients.DELETE_LISTENER,
        lambda w: {"listener_uuid": w.a_public, "delete_pending_events": False},
        NO_POLICY,
        id="delete-listener",
    ),
    pytest.param(
        "mutation($name: String!) { event_namespace_delete(input: {name: $name}) }",
        lambda w: {"name": A_PRIVATE},
        NOT_OWNER,
        id="delete-private-namespace",
    ),
    pytest.param(
        "mutation($name: String!) { event_namespace_delete(input: {name: $name}) }",
        lambda w: {"name": A_PUBLIC},
        NOT_OWNER,
        id="delete-public-namespace",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        lambda w: {"input": {"name": A_PRIVATE, "public": False}},
        CLAIMED,
        id="declare-a-private-name",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        lambda w: {"input": {"name": A_PRIVATE, "public": True}},
        CLAIMED,  # not "exists with public=false": that would tell B about A's namespace
        id="declare-a-private-name-as-public",
    ),
    pytest.param(
        clients.DECLARE_NAMESPACE,
        lambda w: {"input": {"name": A_PUBLIC, "public": True}},
        CLAIMED,
        id="declare-a-public-name",
    ),
    pytest.param(
        clients.DECLARE_LISTENER,
        lambda w: {"input": {"namespace": A_PRIVATE, "routing_key": "rk", "user_key": "b"}},
        NOT_PUBLIC,
        id="declare-listener-in-a-private",
    ),
    pytest.param(
        """mutation($input: ListenerCreateInput!) {
          event_listener_create(input: $input) { uuid }
        }""",
        lambda w: {"input": {"namespace": A_PRIVATE, "routing_key": "rk", "user_key": "b"}},
        NOT_PUBLIC,
        id="create-listener-in-a-private",
    ),
    pytest.param(
        clients.SEND,
        lambda w: {"input": {"namespace": A_PRIVATE, "routing_key": "rk", "subject": "forged"}},
        NOT_OWNER,
        id="send-into-a-private",
    ),
    pytest.param(
        clients.SEND,
        lambda w: {"input": {"namespace": A_PUBLIC, "routing_key": "rk", "subject": "forged"}},
        NOT_OWNER,
        id="send-into-a-public",
    ),
    pytest.param(
        clients.SEND,
        lambda w: {"input": {"namespace": "mo", "routing_key": "person", "subject": "forged"}},
        NOT_OWNER,
        id="send-into-mo-without-emitter-role",
    ),
    pytest.param(
        clients.SEND,
        lambda w: {"input": {"namespace": "MO", "routing_key": "person", "subject": "forged"}},
        NOT_OWNER,
        id="send-into-MO-without-emitter-role",
    ),
]


async def test_b_is_refused_on_a_s_things_and_nothing_is_written(world: World) -> None:
    for case in REFUSED:
        query, variables, message = case.values
        async with nothing_written(world.redis):
            assert await world.b.error(query, variables(world)) == message, case.id


async def test_b_fetching_from_a_s_listeners_gets_null(world: World) -> None:
    async with nothing_written(world.redis):
        for listener in (world.a_private, world.a_public):
            assert await world.b.data(clients.FETCH, {"listener": listener}) == {
                "event_fetch": None
            }
            seed = await world.b.post(clients.SEED_GET_EVENT, {"listener_uuid": listener})
            assert seed == {"data": {"event_fetch": None}}


async def test_b_acknowledging_with_a_s_token_changes_nothing(world: World) -> None:
    async with nothing_written(world.redis):
        assert await world.b.data(clients.ACK, {"token": world.a_token}) == {
            "event_acknowledge": True
        }
        seed = await world.api.post(
            clients.SEED_ACK, {"token": world.a_token}, path="/graphql", headers=world.b.headers
        )
        assert seed == {"data": {"event_acknowledge": True}}
    # A's token still acknowledges A's event.
    assert await world.a.data(clients.ACK, {"token": world.a_token}) == {"event_acknowledge": True}
    subjects = [event["subject"] for event in (await a_view(world))["events"]["objects"]]
    assert sorted(subjects) == sorted([A_SUBJECT, A_SILENCED])  # a_private's A_SUBJECT went


async def test_b_silencing_unsilencing_and_rerunning_a_s_events_is_a_no_op(
    world: World,
) -> None:
    for case in LISTENER_FILTERS[1:]:  # (the first also matches B's own events)
        listeners = case.values[0](world)
        async with nothing_written(world.redis):
            for subjects in ([A_SUBJECT], [A_SUBJECT, A_SILENCED]):
                variables = {"input": {"listeners": listeners, "subjects": subjects}}
                assert await world.b.data(clients.SILENCE, variables) == {"event_silence": True}
            for selection in ({}, {"subjects": [A_SILENCED, A_SUBJECT]}, {"priorities": [5]}):
                variables = {"input": {"listeners": listeners, **selection}}
                unsilenced = await world.b.data(clients.UNSILENCE, variables)
                assert unsilenced == {"event_unsilence": True}, case.id
            for selection in ({}, {"subjects": [A_SUBJECT, A_SILENCED]}, {"silenced": True}):
                variables = {"input": {"listeners": listeners, **selection}}
                rerun = await world.b.data(clients.RERUN, variables)
                assert rerun == {"event_rerun": []}, case.id
    # A_SUBJECT is still in its back-off (a rerun would have made it fetchable at once),
    # and A_SILENCED is still silenced.
    events = (await a_view(world))["events"]["objects"]
    assert {(item["subject"], item["silenced"]) for item in events} == {
        (A_SUBJECT, False),
        (A_SILENCED, True),
    }
    fetched = (await world.a.data(clients.FETCH, {"listener": world.a_private}))["event_fetch"]
    assert fetched["subject"] == A_SILENCED


async def test_b_rerun_without_a_filter_touches_only_b_s_events(world: World) -> None:
    rerun = await world.b.data(
        "mutation { event_rerun(input: {}) { subject listener { uuid owner } } }"
    )
    assert rerun == {
        "event_rerun": [
            {"subject": B_SUBJECT, "listener": {"uuid": world.b_own, "owner": str(OWNER_B)}}
        ]
    }


LISTINGS: list[Any] = [
    pytest.param("query { events { objects { subject listener { uuid } } } }", {}, id="events"),
    pytest.param(
        """query($l: [UUID!]) {
          events(filter: {listeners: {uuids: $l}, subjects: ["a-secret-subject"]}) {
            objects { subject }
          }
        }""",
        {"l": None},
        id="events-by-a-subject",
    ),
    pytest.param(
        "query($o: UUID!) { events(filter: {listeners: {owners: [$o]}}) { objects { subject } } }",
        {"o": str(OWNER_A)},
        id="events-by-a-owner",
    ),
    pytest.param(EVENTS_OF_EVERY_LISTENER, {}, id="listener-events"),
    pytest.param(clients.GET_LISTENERS, {"filter": {}, "event_filter": {}}, id="get-listeners"),
    pytest.param(
        """query { event_namespaces { objects { name listeners {
          uuid events(limit: 5) { subject listener { events { subject } } }
        } } } }""",
        {},
        id="namespace-listeners-events",
    ),
    pytest.param(
        """query { events { objects { listener { namespace { listeners {
          events { subject } } } } } } }""",
        {},
        id="full-event-listener-namespace",
    ),
    pytest.param(clients.ME, {}, id="me"),
    pytest.param(
        "query { me { actor { event_listeners { events { subject } } "
        "event_namespaces { listeners { events { subject } } } } } }",
        {},
        id="me-deep",
    ),
]


async def test_listings_never_show_b_a_subject_of_a_s(world: World) -> None:
    async with nothing_written(world.redis):
        for case in LISTINGS:
            query, variables = case.values
            body = await world.b.post(query, variables)
            assert "errors" not in body, (case.id, body)
            assert "a-secret" not in json.dumps(body), case.id
        # A cursor B forges to point into A's listener opens nothing either (one that
        # holds no order key, like "0", is refused as a cursor).
        for key in ([world.a_private, ""], [world.a_private, "0"], ["", ""]):
            body = await world.b.post(
                "query($c: Cursor) { events(cursor: $c) { objects { subject } } }",
                {"c": cursors.encode(key)},
            )
            assert "a-secret" not in json.dumps(body)

    # B does see A's listeners (OS2mo lists every listener), never their events.
    objects = (await world.b.data(EVENTS_OF_EVERY_LISTENER))["event_listeners"]["objects"]
    seen = {item["uuid"]: item["events"] for item in objects}
    assert seen[world.a_private] == [] and seen[world.a_public] == []
    assert seen[world.b_own] == [{"subject": B_SUBJECT, "silenced": False}]

    me = (await world.b.data(clients.ME))["me"]["actor"]
    assert me["uuid"] == str(OWNER_B)
    assert me["event_namespaces"] == [{"name": B_NAMESPACE}]
    assert sorted(item["uuid"] for item in me["event_listeners"]) == sorted(
        [world.b_own, world.b_in_a_public]
    )


async def test_b_s_listener_with_a_s_user_key_is_b_s_own(world: World) -> None:
    listener = await world.b.data(
        clients.DECLARE_LISTENER_VARS,
        {"namespace": A_PUBLIC, "user_key": "a-listener", "routing_key": "other"},
    )
    assert listener["event_listener_declare"] == {
        "uuid": world.b_in_a_public,
        "owner": str(OWNER_B),
    }


async def test_a_s_state_survives_every_attack_and_the_token_still_works(world: World) -> None:
    before = await a_view(world)
    for param in REFUSED:
        query, variables, message = param.values
        assert await world.b.error(query, variables(world)) == message
    for listeners in LISTENER_FILTERS:
        chosen = listeners.values[0](world)
        silence = {"input": {"listeners": chosen, "subjects": [A_SUBJECT, A_SILENCED]}}
        await world.b.data(clients.SILENCE, silence)
        await world.b.data(clients.UNSILENCE, {"input": {"listeners": chosen}})
        await world.b.data(clients.RERUN, {"input": {"listeners": chosen}})
    await world.b.data(clients.ACK, {"token": world.a_token})
    assert await a_view(world) == before

    # A reruns its event (delivery count and generation kept), and fetches it again with
    # the same token.
    rerun = {"input": {"listeners": {"uuids": [world.a_private]}, "subjects": [A_SUBJECT]}}
    assert (await world.a.data(clients.RERUN, rerun))["event_rerun"] == [
        {"priority": 5, "silenced": False, "subject": A_SUBJECT}
    ]
    fetched = (await world.a.data(clients.FETCH, {"listener": world.a_private}))["event_fetch"]
    assert fetched == {"subject": A_SUBJECT, "priority": 5, "token": world.a_token}
    assert await world.a.data(clients.ACK, {"token": world.a_token}) == {"event_acknowledge": True}
    left = {
        (e["listener"]["uuid"], e["subject"]) for e in (await a_view(world))["events"]["objects"]
    }
    assert left == {(world.a_private, A_SILENCED), (world.a_public, A_SUBJECT)}
    public = (await world.a.data(clients.FETCH, {"listener": world.a_public}))["event_fetch"]
    assert public["subject"] == A_SUBJECT


# Admins and readers -------------------------------------------------------------------------


async def test_admin_manages_a_s_listeners_events_and_namespaces(world: World) -> None:
    admin = world.caller(ADMIN, [*EVERY_ROLE, "admin"])
    silence = {"input": {"listeners": {"uuids": [world.a_public]}, "subjects": [A_SUBJECT]}}
    assert await admin.data(clients.SILENCE, silence) == {"event_silence": True}
    rerun = await admin.data(
        "mutation($o: UUID!) { event_rerun(input: {listeners: {owners: [$o]}}) "
        "{ subject silenced listener { uuid } } }",
        {"o": str(OWNER_A)},
    )
    touched = {(item["listener"]["uuid"], item["subject"]) for item in rerun["event_rerun"]}
    assert touched == {
        (world.a_private, A_SUBJECT),
        (world.a_private, A_SILENCED),
        (world.a_public, A_SUBJECT),
    }
    unsilence = {"input": {"listeners": {"uuids": [world.a_private]}}}
    assert await admin.data(clients.UNSILENCE, unsilence) == {"event_unsilence": True}
    view = {
        (item["listener"]["uuid"], item["subject"]): item["silenced"]
        for item in (await a_view(world))["events"]["objects"]
    }
    assert view == {
        (world.a_private, A_SUBJECT): False,
        (world.a_private, A_SILENCED): False,
        (world.a_public, A_SUBJECT): True,
    }
    # The rerun made A's fetched event fetchable at once.
    assert (await world.a.data(clients.FETCH, {"listener": world.a_private}))["event_fetch"]

    # Fetch and acknowledge stay the owner's alone, even for an admin (as OS2mo).
    async with nothing_written(world.redis):
        assert await admin.data(clients.FETCH, {"listener": world.a_public}) == {
            "event_fetch": None
        }
        assert await admin.data(clients.ACK, {"token": world.a_token})

    delete = "mutation($name: String!) { event_namespace_delete(input: {name: $name}) }"
    for listener in (world.a_private, world.a_public, world.b_in_a_public):
        variables = {"listener_uuid": listener, "delete_pending_events": True}
        assert await admin.data(clients.DELETE_LISTENER, variables) == {
            "event_listener_delete": True
        }
    for name in (A_PRIVATE, A_PUBLIC):
        assert await admin.data(delete, {"name": name}) == {"event_namespace_delete": True}
    assert await admin.error(delete, {"name": "mo"}) == (
        "The built-in namespace cannot be changed or deleted."
    )
    names = await world.a.data("{ event_namespaces { objects { name } } }")
    assert names == {"event_namespaces": {"objects": [{"name": B_NAMESPACE}, {"name": "mo"}]}}


async def test_admin_role_name_is_configurable(world: World, make_api: MakeApi) -> None:
    api = await make_api(
        auth="oidc",
        oidc_jwks_url=world.tokens.idp.jwks_url,
        oidc_issuer=world.tokens.idp.issuer,
        oidc_audience=AUDIENCE,
        admin_role="broker-admin",
    )
    plain_admin = As(api, world.tokens.headers(ADMIN, [*EVERY_ROLE, "admin"]))
    broker_admin = As(api, world.tokens.headers(ADMIN, [*EVERY_ROLE, "broker-admin"]))
    variables = {"listener_uuid": world.a_public, "delete_pending_events": True}
    async with nothing_written(world.redis):
        assert await plain_admin.error(clients.DELETE_LISTENER, variables) == NO_POLICY
    assert await broker_admin.data(clients.DELETE_LISTENER, variables) == {
        "event_listener_delete": True
    }


async def test_read_event_all_sees_a_s_events(world: World) -> None:
    reader = world.caller(READER, ["read_event", "read_event_listener", "read_event_all"])
    events = await reader.data("query { events { objects { subject listener { uuid } } } }")
    seen = {(item["listener"]["uuid"], item["subject"]) for item in events["events"]["objects"]}
    assert seen == {
        (world.a_private, A_SUBJECT),
        (world.a_private, A_SILENCED),
        (world.a_public, A_SUBJECT),
        (world.b_own, B_SUBJECT),
    }
    nested = (await reader.data(EVENTS_OF_EVERY_LISTENER))["event_listeners"]["objects"]
    by_listener = {item["uuid"]: {e["subject"] for e in item["events"]} for item in nested}
    assert by_listener[world.a_private] == {A_SUBJECT, A_SILENCED}
    # Seeing is not managing: with every role, read_event_all still fetches nothing of A's.
    everything = world.caller(READER, sorted(ROLES))
    async with nothing_written(world.redis):
        assert await everything.data(clients.FETCH, {"listener": world.a_public}) == {
            "event_fetch": None
        }
        assert await everything.data(clients.RERUN, {"input": {}}) == {"event_rerun": []}


async def test_emitter_sends_into_mo_and_others_do_not(world: World) -> None:
    person = await declare(world.a, "mo", "person", "people")
    variables = {"input": {"namespace": "mo", "routing_key": "person", "subject": "p1"}}
    async with nothing_written(world.redis):
        assert await world.a.error(clients.SEND, variables) == NOT_OWNER
    emitter = world.caller(EMITTER, ["send_event"])
    assert await emitter.data(clients.SEND, variables) == {"event_send": True}
    by_role = world.caller(OWNER_B, ["send_event", "os2mo"])
    variables["input"]["subject"] = "p2"
    assert await by_role.data(clients.SEND, variables) == {"event_send": True}
    await clients.settle(world.api)
    listed = await world.a.data(
        "query($l: UUID!) { events(filter: {listeners: {uuids: [$l]}}) { objects { subject } } }",
        {"l": person},
    )
    assert listed == {"events": {"objects": [{"subject": "p1"}, {"subject": "p2"}]}}
    # The emitter role is for `mo` only: it gives no right to A's namespaces.
    into_a = {"input": {"namespace": A_PUBLIC, "routing_key": "rk", "subject": "x"}}
    assert await by_role.error(clients.SEND, into_a) == NOT_OWNER


# Every root field: unauthenticated, bad tokens, missing roles -------------------------------

FIELD_DOCUMENTS: dict[str, tuple[str, Variables]] = {
    "event_fetch": (clients.FETCH, lambda w: {"listener": w.a_private}),
    "event_acknowledge": (clients.ACK, lambda w: {"token": w.a_token}),
    "event_send": (
        clients.SEND,
        lambda w: {"input": {"namespace": A_PRIVATE, "routing_key": "rk", "subject": "new"}},
    ),
    "event_silence": (
        clients.SILENCE,
        lambda w: {"input": {"listeners": {}, "subjects": [A_SUBJECT]}},
    ),
    "event_unsilence": (clients.UNSILENCE, lambda w: {"input": {}}),
    "event_rerun": (clients.RERUN, lambda w: {"input": {}}),
    "events": ("query { events { objects { subject } } }", lambda w: {}),
    "event_listeners": ("query { event_listeners { objects { uuid } } }", lambda w: {}),
    "event_namespaces": ("query { event_namespaces { objects { name } } }", lambda w: {}),
    "event_listener_declare": (
        clients.DECLARE_LISTENER,
        lambda w: {"input": {"namespace": A_PUBLIC, "routing_key": "rk", "user_key": "new"}},
    ),
    "event_listener_create": (
        "mutation($input: ListenerCreateInput!) { event_listener_create(input: $input) { uuid } }",
        lambda w: {"input": {"namespace": A_PUBLIC, "routing_key": "rk", "user_key": "new"}},
    ),
    "event_listener_delete": (
        clients.DELETE_LISTENER,
        lambda w: {"listener_uuid": w.a_public, "delete_pending_events": True},
    ),
    "event_namespace_declare": (
        clients.DECLARE_NAMESPACE,
        lambda w: {"input": {"name": "brand-new", "public": True}},
    ),
    "event_namespace_delete": (
        'mutation { event_namespace_delete(input: {name: "b-own"}) }',
        lambda w: {},
    ),
    "me": (clients.ME, lambda w: {}),
}


# The role of each Query and Mutation field, by its name.
ROOT_ROLES = {
    name.split(".")[1]: role
    for name, role in FIELD_ROLES.items()
    if name.split(".")[0] in ("Query", "Mutation")
}
SCHEMA = make_executable_schema(schema_text(), *BINDABLES)


def roles_needed(query: str) -> list[str]:
    """Every role FIELD_ROLES asks for some field of `query`, nested ones included."""
    type_info = TypeInfo(SCHEMA)
    needed: set[str] = set()

    class Fields(Visitor):
        def enter_field(self, node: Any, *_: Any) -> None:
            parent = type_info.get_parent_type()
            role = FIELD_ROLES.get(f"{parent.name}.{node.name.value}") if parent else None
            if role is not None:
                needed.add(role)

    visit(parse(query), TypeInfoVisitor(type_info, Fields()))
    return sorted(needed)


def test_every_root_field_has_a_document() -> None:
    assert set(FIELD_DOCUMENTS) == set(ROOT_ROLES)


async def test_every_field_works_for_its_owner_with_just_its_roles(world: World) -> None:
    await world.b.data(
        clients.DELETE_LISTENER, {"listener_uuid": world.b_own, "delete_pending_events": True}
    )
    for field_name, (query, variables) in FIELD_DOCUMENTS.items():
        owner = OWNER_B if field_name == "event_namespace_delete" else OWNER_A
        caller = world.caller(owner, roles_needed(query))
        body = await caller.post(query, variables(world))
        assert "errors" not in body, (field_name, body)


# Documents that reach every nested field of FIELD_ROLES, and the path to it.
NESTED: dict[str, tuple[str, list[str | int]]] = {
    "FullEvent.listener": (
        "query { events { objects { listener { uuid } } } }",
        ["events", "objects", 0, "listener"],
    ),
    "Listener.namespace": (
        "query { event_listeners { objects { namespace { name } } } }",
        ["event_listeners", "objects", 0, "namespace"],
    ),
    "Listener.events": (
        "query { event_listeners { objects { events { subject } } } }",
        ["event_listeners", "objects", 0, "events"],
    ),
    "Namespace.listeners": (
        "query { event_namespaces { objects { listeners { uuid } } } }",
        ["event_namespaces", "objects", 0, "listeners"],
    ),
    "Actor.event_namespaces": (
        "query { me { actor { event_namespaces { name } } } }",
        ["me", "actor", "event_namespaces"],
    ),
    "Actor.event_listeners": (
        "query { me { actor { event_listeners { uuid } } } }",
        ["me", "actor", "event_listeners"],
    ),
    # A page's objects need the role of the root field that pages them: the root refuses first.
    "FullEventPaged.objects": ("query { events { objects { subject } } }", ["events"]),
    "ListenerPaged.objects": (
        "query { event_listeners { objects { uuid } } }",
        ["event_listeners"],
    ),
    "NamespacePaged.objects": (
        "query { event_namespaces { objects { name } } }",
        ["event_namespaces"],
    ),
}


def test_every_nested_field_has_a_document() -> None:
    nested = {name for name in FIELD_ROLES if name.split(".")[0] not in ("Query", "Mutation")}
    assert set(NESTED) == nested


@pytest.mark.parametrize("field", sorted(NESTED))
async def test_nested_field_needs_its_role_and_writes_nothing(world: World, field: str) -> None:
    query, path = NESTED[field]
    role = FIELD_ROLES[field]
    assert role is not None
    needed = roles_needed(query)
    assert role in needed
    async with nothing_written(world.redis):
        allowed = await world.caller(OWNER_A, needed).post(query)
        assert "errors" not in allowed, allowed
        without = sorted(set(needed) - {role} | {"read_event_all", "admin", "os2mo"})
        refused = await world.caller(OWNER_A, without).post(query)
    assert [(error["message"], error["path"]) for error in refused["errors"]] == [(NO_POLICY, path)]
    assert "a-secret" not in json.dumps(refused)


async def test_a_token_without_roles_reads_nothing_through_me(world: World) -> None:
    nobody = world.caller(OWNER_A, [])
    for query in (
        "query { me { actor { event_listeners { events { subject } } } } }",
        "query { me { actor { event_namespaces { listeners { uuid owner } } } } }",
        clients.ME,
    ):
        body = await nobody.post(query)
        assert body["data"] is None and {e["message"] for e in body["errors"]} == {NO_POLICY}
        assert "a-secret" not in json.dumps(body) and world.a_private not in json.dumps(body)
    assert (await nobody.data("query { me { actor { uuid } } }"))["me"]["actor"] == {
        "uuid": str(OWNER_A)
    }


async def test_unauthenticated_caller_gets_401_and_writes_nothing(world: World) -> None:
    async with nothing_written(world.redis):
        for (query, variables), path in itertools.product(
            FIELD_DOCUMENTS.values(), ("/graphql/v25", "/graphql")
        ):
            response = await world.api.http.post(
                path, json={"query": query, "variables": variables(world)}
            )
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"data": None, "errors": [{"message": NOT_AUTHENTICATED}]}


def _bad_tokens(tokens: Tokens, intruder: ECKey) -> dict[str, str]:
    now = int(time.time())
    good = tokens.claims(OWNER_A, EVERY_ROLE)
    header, _, signature = tokens.token(OWNER_A).split(".")
    forged_payload = b64url(json.dumps(tokens.claims(OWNER_B, [*EVERY_ROLE, "admin"])).encode())
    return {
        "expired": sign(tokens.key, {**good, "exp": now - 120}),
        "wrong-issuer": sign(tokens.key, {**good, "iss": "http://127.0.0.1:1/realms/evil"}),
        "wrong-audience": sign(tokens.key, {**good, "aud": "another-service"}),
        "no-audience": sign(tokens.key, tokens.claims(OWNER_A, EVERY_ROLE, aud=None)),
        "wrong-key": sign(intruder, good),
        "wrong-key-with-the-published-kid": sign(
            ECKey.import_key(intruder.as_dict(private=True) | {"kid": tokens.key.kid}), good
        ),
        "alg-none": unsigned({"alg": "none", "kid": tokens.key.kid}, good),
        "alg-none-with-signature": unsigned({"alg": "none"}, good, signature),
        "tampered-payload": f"{header}.{forged_payload}.{signature}",
        "missing-owner": sign(tokens.key, tokens.claims(None, EVERY_ROLE)),
        "owner-not-a-uuid": sign(tokens.key, {**good, "uuid": "alice"}),
        "not-a-jwt": "not-a-jwt",
    }


@pytest.fixture(scope="module")
def intruder() -> ECKey:
    return ECKey.generate_key("P-256", {"kid": "intruder"})


BAD_TOKEN_NAMES = [
    "expired",
    "wrong-issuer",
    "wrong-audience",
    "no-audience",
    "wrong-key",
    "wrong-key-with-the-published-kid",
    "alg-none",
    "alg-none-with-signature",
    "tampered-payload",
    "missing-owner",
    "owner-not-a-uuid",
    "not-a-jwt",
]


async def test_bad_tokens_get_401_and_write_nothing(world: World, intruder: ECKey) -> None:
    bad = _bad_tokens(world.tokens, intruder)
    assert set(bad) == set(BAD_TOKEN_NAMES)
    fields = ("event_namespace_declare", "event_acknowledge", "event_listener_delete", "me")
    async with nothing_written(world.redis):
        for name, field_name in itertools.product(BAD_TOKEN_NAMES, fields):
            query, variables = FIELD_DOCUMENTS[field_name]
            response = await world.api.http.post(
                "/graphql/v25",
                json={"query": query, "variables": variables(world)},
                headers={"Authorization": f"Bearer {bad[name]}"},
            )
            assert response.status_code == 401, (name, response.text)
            assert response.json()["errors"] == [{"message": NOT_AUTHENTICATED}], name


async def test_each_missing_role_is_refused_and_writes_nothing(world: World) -> None:
    async with nothing_written(world.redis):
        for field_name, role in ROOT_ROLES.items():
            if role is None:
                continue
            query, variables = FIELD_DOCUMENTS[field_name]
            everything_else = sorted(ROLES - {role} | {"admin", "os2mo"})
            body = await world.caller(OWNER_A, everything_else).post(query, variables(world))
            assert [error["message"] for error in body["errors"]] == [NO_POLICY], body
            assert body["errors"][0]["path"] == [field_name]
