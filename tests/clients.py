"""What real clients send, verbatim (../shared/reference/clients.md), and test helpers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: conftest itself imports this module's neighbours
    from tests.conftest import Api

# 1. The seed's form, at /graphql.
SEED_CREATE_LISTENER = """
mutation CreateListener {
  event_listener_create(
    input: { namespace: "MO", user_key: "engagement_listener_1", routing_key: "engagement" }
  ) { uuid }
}
"""
SEED_GET_EVENT = """
query GetEvent($listener_uuid: UUID!) {
  event_fetch(filter: { listener: $listener_uuid }) { uuid subject token }
}
"""
SEED_ACK = """
mutation Ack($token: EventToken!) {
  event_acknowledge(input: $token)
}
"""

# 2. The released form, as FastRAMQPI sends it, at /graphql/v25.
DECLARE_NAMESPACE = """
mutation DeclareEventNamespace($input: NamespaceCreateInput!) {
  event_namespace_declare(input: $input) { name }
}
"""
DECLARE_LISTENER = """
mutation DeclareEventListener($input: ListenerCreateInput!) {
  event_listener_declare(input: $input) { uuid }
}
"""
FETCH = """
query FetchEvent($listener: UUID!) {
  event_fetch(filter: {listener: $listener}) { subject priority token }
}
"""
ACK = """
mutation AcknowledgeEvent($token: EventToken!) {
  event_acknowledge(input: {token: $token})
}
"""
SEND = """
mutation SendEvent($input: EventSendInput!) {
  event_send(input: $input)
}
"""

# 3. Other shapes seen in real code.
DECLARE_LISTENER_VARS = """
mutation DeclareListener($namespace: String!, $user_key: String!, $routing_key: String!) {
  event_listener_declare(input: { namespace: $namespace, user_key: $user_key, routing_key: $routing_key }) { uuid owner }
}
"""
LIST_EVENTS = """
query ListEvents($listener: UUID!) {
  events(filter: {listeners: {uuids: [$listener]}}) { objects { subject } }
}
"""
GET_LISTENERS = """
query GetListeners($filter: ListenerFilter!, $event_filter: ListenersBoundFullEventFilter!) {
  event_listeners(filter: $filter) {
    objects { routing_key user_key uuid owner events(filter: $event_filter) { silenced priority subject } }
  }
}
"""
DELETE_LISTENER = """
mutation DeleteListener($listener_uuid: UUID!, $delete_pending_events: Boolean!) {
  event_listener_delete(input: {uuid: $listener_uuid, delete_pending_events: $delete_pending_events})
}
"""
SILENCE = "mutation Silence($input: EventSilenceInput!) { event_silence(input: $input) }"
UNSILENCE = "mutation Unsilence($input: EventUnsilenceInput!) { event_unsilence(input: $input) }"
RERUN = """
mutation Rerun($input: EventRerunInput!) { event_rerun(input: $input) { priority silenced subject } }
"""
ME = "query Me { me { actor { uuid event_namespaces { name } event_listeners { uuid } } } }"


async def declare(api: Api, routing_key: str, user_key: str, namespace: str = "mo") -> str:
    data = await api.data(
        DECLARE_LISTENER,
        {"input": {"namespace": namespace, "user_key": user_key, "routing_key": routing_key}},
    )
    uuid: str = data["event_listener_declare"]["uuid"]
    return uuid


async def send(
    api: Api, routing_key: str, subject: str, priority: int = 10000, namespace: str = "mo"
) -> None:
    variables = {
        "input": {
            "namespace": namespace,
            "routing_key": routing_key,
            "subject": subject,
            "priority": priority,
        }
    }
    assert (await api.data(SEND, variables))["event_send"] is True


async def settle(api: Api) -> None:
    """Wait until the fan-out writer has copied every accepted event to its listeners."""
    store = api.app.state.broker_state["store"]
    for _ in range(500):
        backlog = [await store.ingest_backlog(s) for s in range(store.keys.shards)]
        if not any(backlog):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fan-out did not finish: {backlog}")


async def fetch(api: Api, listener: str) -> dict[str, Any] | None:
    event: dict[str, Any] | None = (await api.data(FETCH, {"listener": listener}))["event_fetch"]
    return event


async def ack(api: Api, token: str) -> bool:
    acknowledged: bool = (await api.data(ACK, {"token": token}))["event_acknowledge"]
    return acknowledged


async def drain(api: Api, listener: str) -> list[dict[str, Any]]:
    """Fetch until nothing is eligible (without acknowledging)."""
    events = []
    while (event := await fetch(api, listener)) is not None:
        events.append(event)
    return events
