"""The registry: declares and deletes that an error cannot half-do, indexes, quotas.

A declare or delete spans three hash slots (registry, listener, ingest shard). These
tests break it between its steps and check, on a snapshot of every key, that Redis is
as it was; race the steps of two requests in the worst order; and check that listings
read the caller's own index instead of the whole registry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from broker import errors
from broker.models import Caller, EventSelection, ListenerFilter, NamespaceFilter
from broker.operations import Broker
from tests.snapshots import snapshot
from tests.stepped import Stepped, stepped_broker

A = Caller(uuid4())
B = Caller(uuid4())
ADMIN = Caller(uuid4(), admin=True, read_all=True)


class Outage(RedisConnectionError):
    """What a store call raises when the test pulls the plug."""


def fail(store: Any, name: str, after: bool = False) -> None:
    """Make the store's `name` raise: before doing anything, or after doing its work."""
    real = getattr(store, name)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        if after:
            await real(*args, **kwargs)
        raise Outage(f"{name} failed")

    setattr(store, name, broken)


def before(store: Any, name: str, step: Callable[[], Awaitable[Any]]) -> None:
    """Run `step` (another request's work) just before the store's `name`, once."""
    real = getattr(store, name)
    pending = [step]

    async def interleaved(*args: Any, **kwargs: Any) -> Any:
        if pending:
            await pending.pop()()
        return await real(*args, **kwargs)

    setattr(store, name, interleaved)


async def namespace(broker: Broker, caller: Caller = A, name: str = "ns") -> str:
    await broker.declare_namespace(caller, name, public=True)
    return name


async def orphans(system: Stepped) -> list[str]:
    """Listener state keys whose listener is not in the registry."""
    registered = set(await system.redis.hkeys(system.store.keys.listeners))
    found = []
    async for key in system.redis.scan_iter(match="*:meta"):
        uuid = key.split(":l:", 1)[1].split("}", 1)[0]
        if uuid not in registered:
            found.append(key)
    return found


# An error changes nothing ------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("step", "after"),
    [
        ("create_listener_state", False),
        ("create_listener_state", True),
        ("subscribe", False),
        ("subscribe", True),
        ("holds_identity", False),
    ],
)
async def test_a_new_declare_that_fails_after_its_claim_leaves_redis_as_it_was(
    redis: Any, step: str, after: bool
) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        before_state = await snapshot(redis)
        fail(system.store, step, after)

        with pytest.raises(Outage):
            await system.broker.declare_listener(A, "ns", "l", "person")

        assert await snapshot(redis) == before_state


@pytest.mark.cluster
@pytest.mark.parametrize("step", ["create_listener_state", "subscribe"])
async def test_a_re_declare_that_fails_leaves_the_listener_as_it_was(redis: Any, step: str) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        listener = await system.broker.declare_listener(A, "ns", "l", "person")
        await system.broker.send(A, "ns", "person", "s1", 5)
        await system.fan_out()
        before_state = await snapshot(redis)
        fail(system.store, step)

        with pytest.raises(Outage):
            await system.broker.declare_listener(A, "ns", "l", "person")

        assert await snapshot(redis) == before_state
        assert await system.store.count_pending(listener.uuid) == 1


@pytest.mark.cluster
async def test_a_delete_that_fails_before_the_state_is_gone_leaves_the_listener_as_it_was(
    redis: Any,
) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        listener = await system.broker.declare_listener(A, "ns", "l", "person")
        await system.broker.send(A, "ns", "person", "s1", 5)
        await system.fan_out()
        before_state = await snapshot(redis)
        fail(system.store, "delete_listener_state")

        with pytest.raises(Outage):
            await system.broker.delete_listener(A, listener.uuid, delete_pending_events=True)

        assert await snapshot(redis) == before_state


async def test_a_delete_whose_last_step_fails_is_done_and_leaves_nothing_visible(
    redis: Any,
) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        listener = await system.broker.declare_listener(A, "ns", "l", "person")
        fail(system.store, "unsubscribe")

        assert await system.broker.delete_listener(A, listener.uuid, False)

        assert await system.broker.listener(listener.uuid) is None
        assert await orphans(system) == []
        # The topic entry left behind is dropped by the fan-out's next event.
        await system.broker.send(A, "ns", "person", "s1", 5)
        await system.fan_out()
        topic = system.store.keys.topic("ns", "person")
        assert await redis.hlen(topic) == 0


@pytest.mark.parametrize("public", [True, False])
async def test_a_refused_namespace_declare_writes_nothing(redis: Any, public: bool) -> None:
    async with stepped_broker(redis, max_namespaces_per_owner=1) as system:
        await namespace(system.broker)
        before_state = await snapshot(redis)

        with pytest.raises(errors.NamespaceQuota):
            await system.broker.declare_namespace(A, "other", public)
        with pytest.raises(errors.NamespaceClaimed):
            await system.broker.declare_namespace(B, "ns", public)

        assert await snapshot(redis) == before_state


# Races -------------------------------------------------------------------------------------


@pytest.mark.cluster
async def test_a_delete_racing_a_re_declare_leaves_no_orphaned_state(redis: Any) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        old = await system.broker.declare_listener(A, "ns", "l", "person")
        # The re-declare found `old` registered; the delete runs before it writes the state.
        before(
            system.store,
            "create_listener_state",
            lambda: system.broker.delete_listener(A, old.uuid, False),
        )

        new = await system.broker.declare_listener(A, "ns", "l", "person")

        assert new.uuid != old.uuid
        assert await orphans(system) == []
        assert await system.broker.listener(new.uuid) == new
        assert await system.store.count_pending(new.uuid) == 0
        await system.broker.send(A, "ns", "person", "s1", 5)
        await system.fan_out()
        assert await system.store.count_pending(new.uuid) == 1


async def test_a_delete_racing_a_fresh_declare_leaves_no_orphaned_state(redis: Any) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        declared: list[UUID] = []
        real_claim = system.store.claim_listener

        async def claim_then_delete(*args: Any, **kwargs: Any) -> Any:
            held = await real_claim(*args, **kwargs)
            if not declared:
                declared.append(held[0].uuid)
                # Someone lists it and deletes it before its state exists.
                await system.broker.delete_listener(A, held[0].uuid, False)
            return held

        system.store.claim_listener = claim_then_delete  # type: ignore[method-assign]

        listener = await system.broker.declare_listener(A, "ns", "l", "person")

        assert listener.uuid != declared[0]
        assert await orphans(system) == []
        assert await system.broker.listener(listener.uuid) == listener


@pytest.mark.cluster
async def test_a_namespace_delete_racing_a_declare_leaves_no_listener_without_namespace(
    redis: Any,
) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        before(system.store, "claim_listener", lambda: system.broker.delete_namespace(A, "ns"))
        before_state = await snapshot(redis)

        with pytest.raises(errors.ListenerNamespaceNotFound):
            await system.broker.declare_listener(A, "ns", "l", "person")

        after_state = await snapshot(redis)
        assert (
            system.store.keys.namespaces not in after_state
            or "ns" not in (after_state[system.store.keys.namespaces][1])
        )
        assert await system.redis.hlen(system.store.keys.listeners) == 0
        assert {key for key in after_state if ":l:" in key} == set()
        assert len(after_state) < len(before_state)


async def test_a_declare_racing_a_namespace_delete_makes_the_delete_refuse(redis: Any) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        before(
            system.store,
            "delete_namespace",
            lambda: system.broker.declare_listener(A, "ns", "l", "person"),
        )

        with pytest.raises(errors.NamespaceHasListeners):
            await system.broker.delete_namespace(A, "ns")

        assert await system.broker.namespace("ns") is not None


# Quotas ------------------------------------------------------------------------------------


async def test_the_listener_quota_refuses_a_new_listener_but_not_a_re_declare(
    redis: Any,
) -> None:
    async with stepped_broker(redis, max_listeners_per_owner=2) as system:
        await namespace(system.broker)
        first = await system.broker.declare_listener(A, "ns", "l1", "person")
        await system.broker.declare_listener(A, "ns", "l2", "person")
        before_state = await snapshot(redis)

        with pytest.raises(errors.ListenerQuota, match="2 listeners"):
            await system.broker.declare_listener(A, "ns", "l3", "person")

        assert await snapshot(redis) == before_state
        assert await system.broker.declare_listener(A, "ns", "l1", "person") == first
        # Another owner has a quota of its own; a delete frees a place.
        await system.broker.declare_listener(B, "ns", "l3", "person")
        await system.broker.delete_listener(A, first.uuid, False)
        await system.broker.declare_listener(A, "ns", "l3", "person")


async def test_the_namespace_quota_refuses_a_new_namespace_but_not_a_re_declare(
    redis: Any,
) -> None:
    async with stepped_broker(redis, max_namespaces_per_owner=2) as system:
        await namespace(system.broker, A, "n1")
        await namespace(system.broker, A, "n2")

        with pytest.raises(errors.NamespaceQuota, match="2 namespaces"):
            await system.broker.declare_namespace(A, "n3", True)

        assert (await system.broker.declare_namespace(A, "n1", True)).name == "n1"
        await system.broker.delete_namespace(A, "n2")
        await system.broker.declare_namespace(A, "n3", True)


@pytest.mark.cluster
async def test_concurrent_declares_never_pass_the_last_place_of_a_quota(redis: Any) -> None:
    async with stepped_broker(redis, max_listeners_per_owner=3) as system:
        await namespace(system.broker)
        results = await asyncio.gather(
            *(system.broker.declare_listener(A, "ns", f"l{n}", "person") for n in range(12)),
            return_exceptions=True,
        )

        declared = [item for item in results if not isinstance(item, BaseException)]
        refused = [item for item in results if isinstance(item, errors.ListenerQuota)]
        assert (len(declared), len(refused)) == (3, 9)
        assert await orphans(system) == []


async def test_quotas_are_clear_graphql_errors(make_api: Any) -> None:
    api = await make_api(max_namespaces_per_owner=1, max_listeners_per_owner=1)
    declare_ns = "mutation($n: String!) { event_namespace_declare(input: {name: $n}) { name } }"
    declare = """mutation($k: String!) { event_listener_declare(input:
      {namespace: "mo", user_key: $k, routing_key: "person"}) { uuid } }"""
    await api.data(declare_ns, {"n": "one"})
    await api.data(declare, {"k": "one"})

    assert "BROKER_MAX_NAMESPACES_PER_OWNER" in await api.error(declare_ns, {"n": "two"})
    assert "BROKER_MAX_LISTENERS_PER_OWNER" in await api.error(declare, {"k": "two"})
    await api.data(declare, {"k": "one"})


# Indexes -----------------------------------------------------------------------------------


class CountedReads:
    """Counts the listener and namespace records a listing loads."""

    def __init__(self, system: Stepped) -> None:
        self.records = 0
        store: Any = system.store
        listeners, namespaces = store.get_listeners, store.get_namespaces

        async def get_listeners(uuids: Any) -> Any:
            self.records += len(uuids)
            return await listeners(uuids)

        async def get_namespaces(names: Any) -> Any:
            self.records += len(names)
            return await namespaces(names)

        store.get_listeners, store.get_namespaces = get_listeners, get_namespaces


async def crowded(system: Stepped, own: int = 3, others: int = 300) -> list[UUID]:
    """`own` listeners of A beside `others` of B; A's uuids in order."""
    await namespace(system.broker, B, "busy")
    for n in range(others):
        await system.broker.declare_listener(B, "busy", f"b{n}", "person")
    await namespace(system.broker, A, "quiet")
    mine = [await system.broker.declare_listener(A, "quiet", f"a{n}", "x") for n in range(own)]
    return sorted(listener.uuid for listener in mine)


async def test_listings_of_ones_own_things_read_only_those_records(redis: Any) -> None:
    async with stepped_broker(redis) as system:
        mine = await crowded(system)
        reads = CountedReads(system)
        own = ListenerFilter(owners=frozenset([A.owner]))

        page = await system.broker.listeners(A, own, None, None)
        assert [item.uuid for item in page.objects] == mine
        assert (await system.broker.events(A, None, EventSelection(), 10, None)).objects == []
        await system.broker.unsilence(A, None, None, None)
        await system.broker.rerun(A, own, None, None, None)
        mine_ns = await system.broker.namespaces(
            A, NamespaceFilter(owners=frozenset([A.owner])), None, None
        )
        assert [ns.name for ns in mine_ns.objects] == ["quiet"]

        assert reads.records <= 4 * 3 + 1


async def test_a_limited_listing_reads_about_one_page_whatever_the_registry_holds(
    redis: Any,
) -> None:
    async with stepped_broker(redis) as system:
        await crowded(system)
        reads = CountedReads(system)

        page = await system.broker.listeners(ADMIN, ListenerFilter(), 10, None)

        assert len(page.objects) == 10 and page.next_cursor is not None
        assert reads.records <= 16


@pytest.mark.cluster
async def test_keyset_pages_of_every_index_list_each_listener_once_in_uuid_order(
    redis: Any,
) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker, B, "busy")
        b = [await system.broker.declare_listener(B, "busy", f"b{n}", "r") for n in range(7)]
        await namespace(system.broker, A, "quiet")
        a = [await system.broker.declare_listener(A, "quiet", f"a{n}", "r") for n in range(5)]
        filters = {
            "all": (ListenerFilter(), a + b),
            "owners": (ListenerFilter(owners=frozenset([A.owner, B.owner])), a + b),
            "owner": (ListenerFilter(owners=frozenset([B.owner])), b),
            "namespace": (
                ListenerFilter(namespaces=NamespaceFilter(names=frozenset(["quiet"]))),
                a,
            ),
            "namespace owner": (
                ListenerFilter(namespaces=NamespaceFilter(owners=frozenset([A.owner]))),
                a,
            ),
            "uuids": (
                ListenerFilter(uuids=frozenset(x.uuid for x in a[:3] + b[:2])),
                a[:3] + b[:2],
            ),
        }
        for name, (selection, expected) in filters.items():
            listed, cursor = [], None
            while True:
                page = await system.broker.listeners(ADMIN, selection, 3, cursor)
                listed += page.objects
                if (cursor := page.next_cursor) is None:
                    break
            assert listed == sorted(expected, key=lambda x: str(x.uuid)), name


async def test_records_written_before_the_indexes_are_indexed_at_start_up(redis: Any) -> None:
    async with stepped_broker(redis) as system:
        await namespace(system.broker)
        listener = await system.broker.declare_listener(A, "ns", "l", "person")
        keys = system.store.keys
        # What an older version left: the records, no indexes, no migration mark.
        indexes = [key async for key in redis.scan_iter(match="*:ix:*")]
        await redis.delete(*indexes)
        await redis.hdel(keys.config, "listing_indexes")
        assert (await system.broker.listeners(A, ListenerFilter(), None, None)).objects == []

    async with stepped_broker(redis, max_listeners_per_owner=1) as system:
        assert (await system.broker.listeners(A, ListenerFilter(), None, None)).objects == [
            listener
        ]
        with pytest.raises(errors.NamespaceHasListeners):
            await system.broker.delete_namespace(A, "ns")
        with pytest.raises(errors.ListenerQuota):
            await system.broker.declare_listener(A, "ns", "other", "person")
        assert json.loads(await redis.hget(keys.namespaces, "ns"))["owner"] == str(A.owner)
