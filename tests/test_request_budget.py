"""No request takes the pool: nested per-object fields are capped per caller and per request.

`Listener.events` under `event_listeners` runs one Redis read per listener. A caller
runs at most `NESTED_CONCURRENCY` of them at once over all its requests, and a request at
most BROKER_MAX_NESTED_PER_REQUEST in all; past that it answers an error naming the root
field and the filters to narrow it with, and stops reading Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from broker import errors
from broker.http import context
from broker.models import Caller
from broker.storage.embedded import EmbeddedRedis
from tests import clients
from tests.conftest import Api, MakeApi
from tests.jwks_server import unsigned
from tests.processes import Process, broker_env

NESTED = """
query Heavy { event_listeners { objects { uuid events { subject } } } }
"""
LIMITED = """
query Bounded { event_listeners(limit: 5) { objects { uuid events { subject } } } }
"""


async def declare_many(api: Api, count: int) -> list[str]:
    return [await clients.declare(api, "person", f"l{n}") for n in range(count)]


async def test_a_nested_query_over_more_listeners_than_the_budget_is_refused_by_name(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_nested_per_request=5)
    await declare_many(api, 6)
    broker = api.app.state.broker_state["broker"]
    calls = 0
    real = broker.listener_events

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    broker.listener_events = counted

    body = await api.post(NESTED)

    # One error, before any listener's events were read: the page's size said it all.
    assert len(body["errors"]) == 1
    message = body["errors"][0]["message"]
    assert "`event_listeners` selects `Listener.events` for more than 5 objects" in message
    assert "filter" in message and "limit" in message
    assert calls == 0
    assert (await api.data(LIMITED))["event_listeners"]["objects"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            "{ event_namespaces { objects { listeners { uuid events { subject } } } } }",
            "Listener.events",
        ),
        (
            "{ me { actor { event_listeners { ...Events } } } } "
            "fragment Events on Listener { uuid pending: events { subject } }",
            "Listener.events",
        ),
        (
            "query($all: Boolean!) { event_listeners { objects { uuid "
            "... @include(if: $all) { events { subject } } } } }",
            "Listener.events",
        ),
    ],
    ids=["namespaces' listeners' events", "through a fragment", "through an included fragment"],
)
async def test_a_list_whose_nested_fields_would_pass_the_budget_is_refused_before_any_runs(
    make_api: MakeApi, document: str, field: str
) -> None:
    api = await make_api(max_nested_per_request=5)
    await declare_many(api, 6)
    broker = api.app.state.broker_state["broker"]
    calls = 0
    real = broker.listener_events

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    broker.listener_events = counted

    body = await api.post(document, {"all": True})

    assert len(body["errors"]) == 1, body["errors"]
    assert f"selects `{field}` for more than 5 objects" in body["errors"][0]["message"]
    assert calls == 0


async def test_a_nested_field_left_out_by_include_costs_nothing_of_the_budget(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_nested_per_request=5)
    await declare_many(api, 6)
    document = (
        "query($all: Boolean!) { event_listeners { objects { uuid "
        "... @include(if: $all) { events { subject } } } } }"
    )

    data = await api.data(document, {"all": False})

    assert len(data["event_listeners"]["objects"]) == 6


async def test_nested_fields_of_one_callers_requests_run_a_few_at_a_time_in_all(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    await declare_many(api, 3 * context.NESTED_CONCURRENCY)
    someone_else = uuid4()
    other = {"Authorization": "Bearer " + unsigned({"alg": "none"}, {"uuid": str(someone_else)})}
    declare = {"input": {"namespace": "mo", "user_key": "other", "routing_key": "person"}}
    await api.data(clients.DECLARE_LISTENER, declare, headers=other)
    broker = api.app.state.broker_state["broker"]
    running = most = 0
    real = broker.listener_events

    async def tracked(caller: Caller, *args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        mine = caller.owner != someone_else
        running += mine
        most = max(most, running)
        try:
            await asyncio.sleep(0.01)
            return await real(caller, *args, **kwargs)
        finally:
            running -= mine

    broker.listener_events = tracked
    # Three requests of one caller at once, and another caller's beside them.
    answers = await asyncio.gather(
        *(api.data(NESTED) for _ in range(3)), api.data(NESTED, headers=other)
    )

    for data in answers:  # listings show every listener (events only to their owner)
        assert len(data["event_listeners"]["objects"]) == 3 * context.NESTED_CONCURRENCY + 1
    assert most == context.NESTED_CONCURRENCY  # for the caller in all, not per request


@pytest.mark.real_redis
@pytest.mark.slow
async def test_fetch_and_ack_keep_working_while_another_caller_runs_heavy_nested_queries(
    tmp_path: Path, processes: list[Process]
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        env = broker_env(
            BROKER_REDIS_URL=server.url,
            BROKER_REDIS_MAX_CONNECTIONS="32",
            BROKER_MAX_NESTED_PER_REQUEST="100",
            BROKER_LOG_LEVEL="WARNING",
        )
        broker = Process(env, tmp_path / "broker.log")
        processes.append(broker)
        async with httpx.AsyncClient(base_url=broker.url, timeout=60) as http:

            async def gql(query: str, variables: dict[str, Any] | None = None) -> Any:
                response = await http.post(
                    "/graphql/v25", json={"query": query, "variables": variables or {}}
                )
                return response.json()

            async def declare(user_key: str, routing_key: str) -> str:
                variables = {
                    "input": {"namespace": "mo", "user_key": user_key, "routing_key": routing_key}
                }
                body = await gql(clients.DECLARE_LISTENER, variables)
                return str(body["data"]["event_listener_declare"]["uuid"])

            gate = asyncio.Semaphore(16)

            async def crowd(n: int) -> None:
                async with gate:
                    await declare(f"crowd-{n}", "crowd")

            await asyncio.gather(*(crowd(n) for n in range(150)))
            worker = await declare("worker", "work")
            cycles = 20
            for n in range(cycles):
                variables = {
                    "input": {"namespace": "mo", "routing_key": "work", "subject": f"s{n}"}
                }
                assert (await gql(clients.SEND, variables))["data"]["event_send"]

            heavy_answers: list[Any] = []
            stop = asyncio.Event()

            async def heavy() -> None:
                while not stop.is_set():
                    heavy_answers.append(await gql(NESTED))

            async def fetch_and_ack() -> list[str]:
                done: list[str] = []
                for _ in range(cycles * 50):  # bounded: the fan-out may lag a little
                    if len(done) == cycles:
                        break
                    event = (await gql(clients.FETCH, {"listener": worker}))["data"]["event_fetch"]
                    if event is None:
                        await asyncio.sleep(0.05)
                        continue
                    acked = await gql(clients.ACK, {"token": event["token"]})
                    assert acked["data"]["event_acknowledge"] is True
                    done.append(event["subject"])
                return done

            async with asyncio.timeout(240):  # a sanity bound, not a latency assertion
                hammers = [asyncio.create_task(heavy()) for _ in range(4)]
                try:
                    handled = await fetch_and_ack()
                finally:
                    stop.set()
                    await asyncio.gather(*hammers)

    assert sorted(handled) == sorted(f"s{n}" for n in range(cycles))
    assert heavy_answers
    for answer in heavy_answers:
        assert answer["data"] is None
        assert (
            "`event_listeners` selects `Listener.events` for more than 100"
            in (answer["errors"][0]["message"])
        )


async def test_a_mutation_whose_answer_is_over_the_budget_says_its_change_is_made(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_nested_per_request=2)
    await declare_many(api, 3)
    for n in range(3):
        send = {"input": {"namespace": "mo", "routing_key": "person", "subject": f"s{n}"}}
        await api.data(clients.SEND, send)
    listed = "{ events { objects { subject } } }"
    for _ in range(200):  # until the fan-out has stored the three events
        if len((await api.data(listed))["events"]["objects"]) == 3:
            break
        await asyncio.sleep(0.05)

    found = await api.post("mutation { event_rerun(input: {}) { subject listener { uuid } } }")

    messages = {error["message"] for error in found["errors"]}
    assert len(messages) == 1
    assert messages.pop().startswith("`event_rerun` made its change, but its answer is too large")


async def test_large_answers_of_one_caller_are_completed_one_at_a_time_over_all_its_requests(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    await declare_many(api, context.LARGE_ANSWER + 1)
    someone_else = uuid4()
    other = {"Authorization": "Bearer " + unsigned({"alg": "none"}, {"uuid": str(someone_else)})}
    large = api.app.state.broker_state["shares"].large
    real = large.hold
    holding: dict[Any, int] = {}
    most: dict[Any, int] = {}
    overlapped = False

    @asynccontextmanager
    async def tracked(caller: Any) -> AsyncIterator[None]:
        nonlocal overlapped
        async with real(caller):
            holding[caller] = holding.get(caller, 0) + 1
            most[caller] = max(most.get(caller, 0), holding[caller])
            overlapped |= len([n for n in holding.values() if n]) > 1
            try:
                await asyncio.sleep(0.05)  # hold it while the others arrive
                yield
            finally:
                holding[caller] -= 1

    large.hold = tracked
    listing = "{ event_listeners { objects { uuid user_key } } }"
    # Two large lists in one request take the caller's share once (no wait on itself).
    twice = (
        "{ a: event_listeners { objects { uuid } } b: me { actor { event_listeners { uuid } } } }"
    )
    answers = await asyncio.gather(
        *(api.data(listing) for _ in range(3)), api.data(twice), api.data(listing, headers=other)
    )

    for data in answers[:3] + answers[4:]:
        assert len(data["event_listeners"]["objects"]) == context.LARGE_ANSWER + 1
    assert len(answers[3]["b"]["actor"]["event_listeners"]) == context.LARGE_ANSWER + 1
    owner = next(caller for caller in most if caller != someone_else)
    assert most == {owner: 1, someone_else: 1}  # one at a time per caller
    assert overlapped  # but not one at a time for everyone
    assert holding == {owner: 0, someone_else: 0}  # every request gave it back


async def test_a_small_answer_never_waits_for_the_callers_large_one(make_api: MakeApi) -> None:
    api = await make_api()
    await declare_many(api, context.LARGE_ANSWER + 1)
    large = api.app.state.broker_state["shares"].large
    real = large.hold
    held = asyncio.Event()
    go_on = asyncio.Event()

    @asynccontextmanager
    async def stalled(caller: Any) -> AsyncIterator[None]:
        async with real(caller):
            held.set()
            await go_on.wait()
            yield

    large.hold = stalled
    listing = asyncio.ensure_future(api.data("{ event_listeners { objects { uuid } } }"))
    async with asyncio.timeout(30):  # a bound, not a latency assertion
        await held.wait()
    small = await api.data("{ event_listeners(limit: 5) { objects { uuid } } }")
    assert len(small["event_listeners"]["objects"]) == 5
    assert not listing.done()
    go_on.set()
    assert len((await listing)["event_listeners"]["objects"]) == context.LARGE_ANSWER + 1


async def test_objects_sharing_a_namespace_read_it_once_for_all_of_them(make_api: MakeApi) -> None:
    api = await make_api(max_nested_per_request=3)
    await declare_many(api, 10)
    broker = api.app.state.broker_state["broker"]
    reads = 0
    real = broker.namespace

    async def counted(name: str) -> Any:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)  # every listener asks before the first read is back
        return await real(name)

    broker.namespace = counted
    data = await api.data("{ me { actor { event_listeners { uuid namespace { name } } } } }")

    listeners = data["me"]["actor"]["event_listeners"]
    assert len(listeners) == 10
    assert {listener["namespace"]["name"] for listener in listeners} == {"mo"}
    assert reads == 1


async def test_a_request_lists_at_most_its_budget_of_objects_over_all_its_lists(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_objects_per_request=5)
    await declare_many(api, 6)
    broker = api.app.state.broker_state["broker"]
    read: list[int] = []
    real = broker.listeners

    async def counted(*args: Any, **kwargs: Any) -> Any:
        page = await real(*args, **kwargs)
        read.append(len(page.objects))
        return page

    broker.listeners = counted
    two = """{ a: event_listeners(limit: 2) { objects { uuid } }
               b: event_listeners(limit: 3) { objects { uuid } } }"""
    assert len((await api.data(two))["b"]["objects"]) == 3

    message = await api.error("{ event_listeners { objects { uuid } } }")
    assert message == (
        "The query lists more than 5 objects in one request; give `event_listeners` a "
        "`limit` and page with `cursor`"
    )
    assert read[-1] == 6  # without a limit it read one more than it may list, no more
    aliases = " ".join(
        f"a{n}: event_listeners(limit: 2) {{ objects {{ uuid }} }}" for n in range(3)
    )
    assert "lists more than 5 objects" in await api.error("{ " + aliases + " }")
    nested = "{ event_namespaces { objects { listeners { uuid } } } }"
    assert "lists more than 5 objects" in await api.error(nested)


async def test_a_request_that_is_answered_takes_no_share_any_more() -> None:
    shares = context.Shares()
    ctx = context.Context(broker=None, caller=Caller(uuid4()), shares=shares)  # type: ignore[arg-type]
    await ctx.admit(context.LARGE_ANSWER + 1, root="event_listeners")
    assert shares.large.callers == 1
    await ctx.release()
    assert shares.large.callers == 0
    # What graphql-core leaves running after an error ends here, holding nothing.
    with pytest.raises(errors.InvalidInput):
        await ctx.admit(context.LARGE_ANSWER + 1, root="event_listeners")
    assert shares.large.callers == 0
