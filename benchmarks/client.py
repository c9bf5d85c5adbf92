"""The load generator's HTTP/1.1 client and the documents it posts (FastRAMQPI's, verbatim)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

# FastRAMQPI's documents, verbatim (shared/reference/clients.md), posted to /graphql/v25.
FETCH_DOC = """query FetchEvent($listener: UUID!) {
  event_fetch(filter: {listener: $listener}) { subject priority token }
}"""
ACK_DOC = """mutation AcknowledgeEvent($token: EventToken!) {
  event_acknowledge(input: {token: $token})
}"""
SEND_DOC = """mutation SendEvent($input: EventSendInput!) {
  event_send(input: $input)
}"""
NS_DOC = """mutation DeclareEventNamespace($input: NamespaceCreateInput!) {
  event_namespace_declare(input: $input) { name }
}"""
LISTENER_DOC = """mutation DeclareEventListener($input: ListenerCreateInput!) {
  event_listener_declare(input: $input) { uuid }
}"""
DELETE_DOC = """mutation DeleteListener($listener_uuid: UUID!, $delete_pending_events: Boolean!) {
  event_listener_delete(
    input: {uuid: $listener_uuid, delete_pending_events: $delete_pending_events}
  )
}"""
TYPENAME_DOC = "{ __typename }"


def fetch_doc() -> tuple[str, str]:
    """The fetch document; a long-poll variant if the schema grows `EventFilter.wait`."""
    schema = (ROOT / "schema.graphql").read_text()
    found = re.search(r"input EventFilter\s*{([^}]*)}", schema)
    if found and re.search(r"^\s*wait\s*:", found.group(1), re.M):
        doc = FETCH_DOC.replace("{listener: $listener}", "{listener: $listener, wait: 2}")
        return doc, "long-poll (`EventFilter.wait: 2`)"
    return FETCH_DOC, "tight polling loop (schema has no `EventFilter.wait`)"


class Http:
    def __init__(self, host: str, port: int, path: str = "/graphql/v25") -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> Http:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, body: bytes) -> Any:
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        if at < 0:
            raise RuntimeError(f"unexpected response head: {head[:200]!r}")
        length = int(head[at + 15 : head.index(b"\r\n", at)])
        content = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:200]!r} {content[:500]!r}")
        reply = orjson.loads(content)
        if reply.get("errors"):
            raise RuntimeError(f"GraphQL errors: {reply['errors']}")
        return reply["data"]

    def close(self) -> None:
        self.writer.close()


def body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"query": query}
    if variables is not None:
        doc["variables"] = variables
    return json.dumps(doc).encode()


def ack_body_parts() -> tuple[bytes, bytes]:
    marker = "\x00TOKEN\x00"
    raw = json.dumps({"query": ACK_DOC, "variables": {"token": marker}})
    pre, post = raw.split(json.dumps(marker))
    return pre.encode() + b'"', b'"' + post.encode()


ACK_PRE, ACK_POST = ack_body_parts()
