"""POST /graphql: read, authenticate and answer GraphQL requests with little overhead.

Clients post the same few documents over and over (FastRAMQPI polls `event_fetch` and
acknowledges each event), so most requests carry a document this endpoint has already
seen parse and validate cleanly. Those run at once, as a compiled plan (broker/plans.py)
or on graphql-core's executor, with the Ariadne-built schema, and are answered exactly
as Ariadne would answer them (same body, same status). Everything else (a document's
first sight, malformed bodies, validation errors) goes to Ariadne's own ASGI app with
the buffered body, so Ariadne stays the reference for every edge of GraphQL over HTTP.
Skipping Starlette's routing, its request objects and Ariadne's per-request set-up
roughly halves the CPU of a fetch or an acknowledgement (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

import orjson
from ariadne.graphql import handle_graphql_errors, handle_query_result
from ariadne.types import ErrorFormatter
from graphql import ExecutionResult, GraphQLError, GraphQLSchema, execute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import errors
from broker.documents import DocumentCache

JSON = b"application/json"
# The released API's paths; "/graphql" itself is the seed's.
VERSIONED_PATH = re.compile(r"/graphql/v[0-9]+")


@dataclass
class Schema:
    """One GraphQL endpoint: its schema, its documents, and Ariadne's app for the rest."""

    schema: GraphQLSchema
    documents: DocumentCache
    ariadne: ASGIApp


class GraphQLEndpoint:
    """ASGI middleware: answers POSTs to the GraphQL paths, passes everything else on.

    `authenticate` maps the Authorization header to a principal (raising
    `NotAuthenticated`); the principal goes into `scope["state"]` for Ariadne's context
    builder, and through `context` into the executor's context on the fast path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        seed: Schema,
        released: Schema,
        authenticate: Callable[[str | None], Awaitable[Any]],
        context: Callable[[Any], Any],
        error_formatter: ErrorFormatter,
        max_bytes: int,
    ) -> None:
        self.app = app
        self.seed, self.released = seed, released
        self.authenticate = authenticate
        self.context = context
        self.error_formatter = error_formatter
        self.max_bytes = max_bytes
        self.fast_requests = 0  # answered without Ariadne's app (read by tests)

    def endpoint(self, path: str) -> Schema | None:
        if path == "/graphql":
            return self.seed
        return self.released if VERSIONED_PATH.fullmatch(path) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.endpoint(route_path(scope))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers, as Starlette
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse_size(send)
            return
        authorization = headers.get(b"authorization")
        try:
            principal = await self.authenticate(
                None if authorization is None else authorization.decode("latin-1")
            )
        except errors.NotAuthenticated as error:
            refusal = {"data": None, "errors": [{"message": str(error)}]}
            await respond(send, 401, refusal, ((b"www-authenticate", b"Bearer"),))
            return
        body = await read_body(receive, self.max_bytes)
        if body is None:
            await self.refuse_size(send)
            return
        media_type = headers.get(b"content-type", b"").split(b";")[0]
        if media_type == JSON:
            answer = await self.execute_prepared(endpoint, body, principal)
            if answer is not None:
                self.fast_requests += 1
                await respond(send, *answer)
                return
        scope.setdefault("state", {})["principal"] = principal
        await endpoint.ariadne(scope, replay(body, receive), send)

    async def execute_prepared(
        self, endpoint: Schema, body: bytes, principal: Any
    ) -> tuple[int, dict[str, Any]] | None:
        """Run a request whose document is known to be valid; None hands it to Ariadne.

        Mirrors `ariadne.graphql.graphql` after its parse and validate steps, with no
        extensions, middleware or root value (the broker uses none).
        """
        try:
            # The standard library's parser, as Starlette's `Request.json()` behind Ariadne:
            # orjson would read integers beyond 64 bits as floats and so word errors apart.
            data = json.loads(body)
        except (ValueError, RecursionError):
            return None  # Ariadne answers those
        if not isinstance(data, dict):
            return None
        query, variables = data.get("query"), data.get("variables")
        operation_name = data.get("operationName")
        if not isinstance(query, str) or not (variables is None or isinstance(variables, dict)):
            return None
        if not (operation_name is None or isinstance(operation_name, str)):
            return None
        prepared = endpoint.documents.prepared(query)
        if prepared is None:
            return None
        options: dict[str, Any] = {
            "logger": None,
            "error_formatter": self.error_formatter,
            "debug": False,
        }
        context = self.context(principal)
        try:
            if prepared.plan is not None:
                result = await prepared.plan.run(
                    endpoint.schema, context, variables, operation_name
                )
            else:
                executed = execute(
                    endpoint.schema,
                    prepared.document,
                    context_value=context,
                    variable_values=variables,
                    operation_name=operation_name,
                )
                result = await executed if isawaitable(executed) else executed
            assert isinstance(result, ExecutionResult)
            success, response = handle_query_result(result, **options)
        except GraphQLError as error:
            success, response = handle_graphql_errors([error], **options)
        ok = success or response.get("data") is not None
        return (200 if ok else 400), response

    async def refuse_size(self, send: Send) -> None:
        message = f"Request body is larger than {self.max_bytes} bytes"
        await respond(send, 413, {"errors": [{"message": message}]})


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the `root_path` a proxy mounts it under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) :][:1] in ("", "/"):
        return path[len(root_path) :]
    return path


async def read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the already read body, then the client's own messages."""
    pending = True

    async def receive_again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


async def respond(
    send: Send,
    status: int,
    content: dict[str, Any],
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", JSON),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
