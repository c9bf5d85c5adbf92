"""The broker agrees with a plain Python model of the delivery contract, step for step.

Hypothesis drives random sequences of send, fetch, acknowledge (current and stale tokens),
silence, unsilence, rerun, re-declare and delete against the domain operations (fan-out
stepped synchronously) and against `Model`. Back-off is one hour, so a fetched event stays
hidden until `rerun`/`unsilence`/re-send, or until `back_off_ends` moves Redis' retry
times into the past (a clock jump, without sleeping).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID, uuid4

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from broker import errors
from broker.models import Caller, EventSelection, ListenerFilter
from broker.tokens import EventToken
from tests.stepped import Stepped, check_listener, stepped_broker

T = TypeVar("T")

HOUR = 3600.0
SUBJECTS = st.sampled_from(["s1", "s2", "s3", "s4"])
PRIORITIES = st.integers(min_value=1, max_value=3)
# user_key -> routing key: two listeners share a topic, one listens elsewhere.
LISTENERS = {"a": "person", "b": "person", "c": "org_unit"}
USER_KEYS = st.sampled_from(sorted(LISTENERS))
ROUTING_KEYS = st.sampled_from(sorted(set(LISTENERS.values())))


@dataclass
class Expected:
    """What the contract says one pending event looks like."""

    priority: int
    silenced: bool = False
    deliveries: int = 0
    generation: str | None = None  # learnt from the first fetch after each (re-)send
    waiting: bool = False  # delivered and in back-off (in `retry`)
    due: bool = False  # waiting, but its back-off has ended

    @property
    def rank(self) -> tuple[bool, int, int]:
        return (self.silenced, self.priority, self.deliveries)


@dataclass
class ListenerModel:
    uuid: UUID
    routing_key: str
    events: dict[str, Expected] = field(default_factory=dict)
    generations_seen: dict[str, set[str]] = field(default_factory=dict)


class BrokerMatchesModel(RuleBasedStateMachine):
    redis_url: str | None = None  # None: fakeredis

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.stack = AsyncExitStack()
        self.caller = Caller(uuid4(), mo_emitter=True)
        self.listeners: dict[str, ListenerModel] = {}
        self.deleted: list[UUID] = []
        self.handed_out: list[EventToken] = []  # every token fetched, stale ones included
        self.system = self.run(self._start())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    async def _start(self) -> Stepped:
        if self.redis_url is None:
            client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
        else:
            client = Redis.from_url(self.redis_url, decode_responses=True)
            await client.flushall()
        self.stack.push_async_callback(client.aclose)
        return await self.stack.enter_async_context(
            stepped_broker(client, retry_min_seconds=HOUR, retry_max_seconds=HOUR)
        )

    def teardown(self) -> None:
        try:
            self.run(self.stack.aclose())
        finally:
            self.runner.close()

    # Rules ----------------------------------------------------------------------------------

    @initialize()
    def declare_everyone(self) -> None:
        for user_key in LISTENERS:
            self.declare(user_key)

    @rule(user_key=USER_KEYS)
    def declare(self, user_key: str) -> None:
        routing_key = LISTENERS[user_key]
        listener = self.run(
            self.system.broker.declare_listener(self.caller, "mo", user_key, routing_key)
        )
        known = self.listeners.get(user_key)
        if known is not None:
            assert listener.uuid == known.uuid, "re-declaring gives the same listener"
        else:
            assert listener.uuid not in self.deleted
            self.listeners[user_key] = ListenerModel(listener.uuid, routing_key)

    @rule(routing_key=ROUTING_KEYS, subject=SUBJECTS, priority=PRIORITIES)
    def send(self, routing_key: str, subject: str, priority: int) -> None:
        self.send_several([(routing_key, subject, priority)])

    @rule(events=st.lists(st.tuples(ROUTING_KEYS, SUBJECTS, PRIORITIES), min_size=2, max_size=6))
    def send_several(self, events: list[tuple[str, str, int]]) -> None:
        """Sends, then one fan-out: a batch may hold the same subject several times."""
        broker = self.system.broker
        for routing_key, subject, priority in events:
            assert self.run(broker.send(self.caller, "mo", routing_key, subject, priority))
        self.run(self.system.fan_out())
        for routing_key, subject, priority in events:
            for listener in self.listeners.values():
                if listener.routing_key == routing_key:
                    self._receive(listener, subject, priority)

    @staticmethod
    def _receive(listener: ListenerModel, subject: str, priority: int) -> None:
        event = listener.events.get(subject)
        if event is None:
            listener.events[subject] = Expected(priority)
        else:
            event.priority = min(event.priority, priority)
            event.deliveries = 0
            event.generation = None
            event.waiting = event.due = False

    @rule(user_key=USER_KEYS)
    def fetch(self, user_key: str) -> None:
        self._fetch_one(user_key)

    @rule(user_key=USER_KEYS)
    def fetch_until_nothing_is_eligible(self, user_key: str) -> None:
        while self._fetch_one(user_key):
            pass

    def _fetch_one(self, user_key: str) -> bool:
        """Fetch once and check the pick against the model; False when nothing came."""
        listener = self.listeners.get(user_key)
        if listener is None:
            return False
        fetched = self.run(self.system.broker.fetch(self.caller, listener.uuid))
        for event in listener.events.values():
            if event.due:  # the fetch moves back-offs that have ended into the lanes
                event.waiting = event.due = False
        ready = {s: e for s, e in listener.events.items() if not e.waiting}
        if not ready:
            assert fetched is None, f"{fetched} was fetched while nothing is eligible"
            return False
        best = min(event.rank for event in ready.values())
        assert fetched is not None, f"nothing fetched, expected one of rank {best}"
        # Same-rank order is not promised: follow whichever candidate the broker picked.
        candidates = {s for s, e in ready.items() if e.rank == best}
        assert fetched.subject in candidates, (fetched, ready)
        event = ready[fetched.subject]
        assert (fetched.priority, fetched.silenced) == (event.priority, event.silenced)
        event.deliveries += 1
        assert fetched.deliveries == event.deliveries
        seen = listener.generations_seen.setdefault(fetched.subject, set())
        if event.generation is None:
            assert fetched.generation not in seen, "a re-send must start a new generation"
            event.generation = fetched.generation
        else:
            assert fetched.generation == event.generation, "redelivery keeps the token"
        seen.add(fetched.generation)
        event.waiting = True
        self.handed_out.append(EventToken(listener.uuid, fetched.generation, fetched.subject))
        return True

    @rule(user_key=USER_KEYS)
    def fetch_and_acknowledge(self, user_key: str) -> None:
        """What an integration does: fetch, handle, acknowledge at once."""
        if self._fetch_one(user_key):
            self.acknowledge(self.handed_out[-1])

    @precondition(lambda self: self.handed_out)
    @rule(data=st.data())
    def acknowledge_any_token(self, data: st.DataObject) -> None:
        self.acknowledge(data.draw(st.sampled_from(self.handed_out)))

    def acknowledge(self, token: EventToken) -> None:
        assert self.run(self.system.broker.acknowledge(self.caller, token)) is True
        for listener in self.listeners.values():
            event = listener.events.get(token.subject)
            current = event is not None and event.generation == token.generation
            if listener.uuid == token.listener and current:
                del listener.events[token.subject]

    @rule(user_key=st.none() | USER_KEYS, subjects=st.lists(SUBJECTS, max_size=3))
    def silence(self, user_key: str | None, subjects: list[str]) -> None:
        targets = self._targets(user_key)
        listeners = self._filter(user_key)
        assert self.run(self.system.broker.silence(self.caller, listeners, subjects)) is True
        for listener in targets:
            for subject in subjects:
                if subject in listener.events:
                    listener.events[subject].silenced = True

    @rule(
        user_key=st.none() | USER_KEYS,
        subjects=st.none() | st.lists(SUBJECTS, max_size=3),
        priorities=st.none() | st.lists(PRIORITIES, max_size=2),
    )
    def unsilence(
        self, user_key: str | None, subjects: list[str] | None, priorities: list[int] | None
    ) -> None:
        broker = self.system.broker
        listeners = self._filter(user_key)
        assert self.run(broker.unsilence(self.caller, listeners, subjects, priorities)) is True
        for listener in self._targets(user_key):
            for subject, event in listener.events.items():
                if self._selected(subject, event, subjects, priorities, None):
                    event.silenced = False
                    event.waiting = event.due = False

    @rule(
        user_key=st.none() | USER_KEYS,
        subjects=st.none() | st.lists(SUBJECTS, max_size=3),
        priorities=st.none() | st.lists(PRIORITIES, max_size=2),
        silenced=st.none() | st.booleans(),
    )
    def rerun(
        self,
        user_key: str | None,
        subjects: list[str] | None,
        priorities: list[int] | None,
        silenced: bool | None,
    ) -> None:
        broker = self.system.broker
        listeners = self._filter(user_key)
        touched = self.run(broker.rerun(self.caller, listeners, subjects, priorities, silenced))
        expected = set()
        for listener in self._targets(user_key):
            for subject, event in listener.events.items():
                if self._selected(subject, event, subjects, priorities, silenced):
                    event.waiting = event.due = False
                    expected.add((listener.uuid, subject))
        assert {(event.listener, event.subject) for event in touched} == expected
        assert all(event.deliveries == self._expected(event).deliveries for event in touched)

    @precondition(lambda self: self._anything_waiting())
    @rule()
    def back_off_ends(self) -> None:
        """Every back-off ends now: set Redis' retry times to the past (a clock jump)."""
        for listener in self.listeners.values():
            retry = self.system.store.keys.listener(listener.uuid).retry
            for subject in self.run(self.system.redis.zrange(retry, 0, -1)):
                self.run(self.system.redis.zadd(retry, {subject: 0}))
            for event in listener.events.values():
                event.due = event.waiting
        # A broker process remembers listeners with nothing to fetch until their next
        # back-off ends by its own clock (at most BROKER_FETCH_EMPTY_CACHE_SECONDS): skip
        # that wait, as if it had passed.
        self.system.broker.notifier.empty.forget()

    @rule(user_key=USER_KEYS, delete_pending_events=st.booleans())
    def delete(self, user_key: str, delete_pending_events: bool) -> None:
        listener = self.listeners.get(user_key)
        uuid = listener.uuid if listener is not None else uuid4()
        deleting = self.system.broker.delete_listener(self.caller, uuid, delete_pending_events)
        if listener is not None and listener.events and not delete_pending_events:
            with pytest.raises(errors.ListenerHasPendingEvents):
                self.run(deleting)
            return
        assert self.run(deleting) is True
        if listener is not None:
            del self.listeners[user_key]
            self.deleted.append(listener.uuid)

    @precondition(lambda self: self.deleted)
    @rule(data=st.data())
    def fetch_from_a_deleted_listener(self, data: st.DataObject) -> None:
        uuid = data.draw(st.sampled_from(self.deleted))
        assert self.run(self.system.broker.fetch(self.caller, uuid)) is None

    # Invariants ---------------------------------------------------------------------------

    @invariant()
    def pending_events_agree(self) -> None:
        for listener in self.listeners.values():
            keys = self.system.store.keys.listener(listener.uuid)
            stored = self.run(check_listener(self.system.redis, keys))
            assert {
                subject: (r.priority, bool(r.silenced), r.deliveries)
                for subject, r in stored.items()
            } == {s: (e.priority, e.silenced, e.deliveries) for s, e in listener.events.items()}
            retry = set(self.run(self.system.redis.zrange(keys.retry, 0, -1)))
            assert retry == {s for s, e in listener.events.items() if e.waiting}
            listed = self.run(
                self.system.store.pending(listener.uuid, EventSelection(), None, None)
            )
            assert {event.subject for event in listed} == set(listener.events)

    # Helpers ------------------------------------------------------------------------------

    def _anything_waiting(self) -> bool:
        return any(e.waiting for lst in self.listeners.values() for e in lst.events.values())

    def _targets(self, user_key: str | None) -> list[ListenerModel]:
        if user_key is None:
            return list(self.listeners.values())
        listener = self.listeners.get(user_key)
        return [] if listener is None else [listener]

    def _filter(self, user_key: str | None) -> ListenerFilter | None:
        if user_key is None:
            return None
        listener = self.listeners.get(user_key)
        # A deleted listener's uuid: the filter then matches nothing.
        return ListenerFilter(uuids=frozenset({listener.uuid if listener else uuid4()}))

    @staticmethod
    def _selected(
        subject: str,
        event: Expected,
        subjects: list[str] | None,
        priorities: list[int] | None,
        silenced: bool | None,
    ) -> bool:
        return (
            (subjects is None or subject in subjects)
            and (priorities is None or event.priority in priorities)
            and (silenced is None or event.silenced == silenced)
        )

    def _expected(self, event: Any) -> Expected:
        for listener in self.listeners.values():
            if listener.uuid == event.listener:
                return listener.events[event.subject]
        raise AssertionError(f"{event} touched on an unknown listener")


MODEL_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("backend", ["fake", "real"])
@pytest.mark.slow
def test_broker_agrees_with_the_contract_model(
    backend: str, request: pytest.FixtureRequest
) -> None:
    class Machine(BrokerMatchesModel):
        redis_url = None if backend == "fake" else request.getfixturevalue("redis_server").url

    run_state_machine_as_test(Machine, settings=MODEL_SETTINGS)
