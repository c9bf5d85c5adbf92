"""The GraphQL routes' endpoint: POSTs read, authenticated and answered with little overhead.

One `GraphQLEndpoint` serves each schema's routes (see the route table in broker/app.py):
GET shows the explorer, POST runs the request. Clients post the same few documents
over and over (FastRAMQPI polls `event_fetch` and acknowledges each event), so most POSTs
carry a document this endpoint has already seen parse and validate cleanly. Those run at
once, as a compiled plan (broker/http/plans.py) or on graphql-core's executor, and are
answered exactly as Ariadne would answer them (same body, same status). Everything else
(a document's first sight, malformed bodies, validation errors) goes to Ariadne's own
ASGI app with the buffered body, so Ariadne stays the reference for every edge of
GraphQL over HTTP. The exception: a document that only introspects is answered as the
checker process worked it out (broker/http/checker.py), on its first sight too.
Skipping Starlette's request objects and Ariadne's per-request set-up roughly halves
the CPU of a fetch or an acknowledgement (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from inspect import isawaitable
from typing import Any

import orjson
from ariadne.asgi import GraphQL
from ariadne.graphql import handle_graphql_errors, handle_query_result
from ariadne.types import ErrorFormatter
from graphql import ExecutionResult, GraphQLError, execute
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from broker import errors, explorer, inputs
from broker.auth import Authenticator, Principal
from broker.http.checker import Checks
from broker.http.context import Context
from broker.http.documents import DocumentCache
from broker.http.failures import ErrorLog
from broker.http.limits import JSONOnlyHTTPHandler
from broker.settings import Settings

JSON = b"application/json"


class GraphQLEndpoint:
    """The ASGI app of one schema's GraphQL routes.

    `authenticator` maps the Authorization header to a principal (raising
    `NotAuthenticated`), and `context` maps the principal to the resolvers' context, on
    the fast path and (through `scope["state"]`) in Ariadne's app alike.
    """

    def __init__(
        self,
        checks: Checks,
        *,
        settings: Settings,
        authenticator: Authenticator,
        context: Callable[[Principal], Context],
        error_formatter: ErrorFormatter,
    ) -> None:
        self.schema = schema = checks.schema()
        self.documents = DocumentCache(checks)
        self.authenticator = authenticator
        self.context = context
        self.error_formatter = error_formatter
        self.max_bytes = settings.max_body_bytes
        self.fast_requests = 0  # answered without Ariadne's app (read by tests)
        self.error_log = ErrorLog()
        self.ariadne = GraphQL(
            schema,
            context_value=self.ariadne_context,
            debug=False,
            logger=self.error_log,
            introspection=settings.introspection,
            explorer=explorer.page_for(settings),
            error_formatter=error_formatter,
            http_handler=JSONOnlyHTTPHandler(),
            query_parser=self.documents.parse,
            query_validator=self.documents.validate,
            validation_rules=checks.rules(),
        )
        # GET: the explorer page (or Ariadne's refusal), under the explorer's CSP.
        self.explorer_page = explorer.WithSecurityHeaders(self.ariadne)

    def ariadne_context(self, request: Request, data: Any) -> Context:
        state = request.scope["state"]
        state["context"] = context = self.context(state["principal"])
        return context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":  # the explorer, or Ariadne's refusal
            await self.explorer_page(scope, receive, send)
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
            principal = await self.authenticator.authenticate(
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
            data = decode_json(body)
            if isinstance(data, dict):
                # The input boundary, for both paths below: nothing runs on such text.
                try:
                    inputs.check_request(data)
                except errors.InvalidInput as error:
                    await respond(send, 400, {"errors": [{"message": str(error)}]})
                    return
            answer = await self.execute_prepared(data, principal)
            if answer is not None:
                self.fast_requests += 1
                await respond(send, *answer)
                return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        try:
            await self.ariadne(scope, replay(body, receive), send)
        finally:
            if "context" in state:
                await state.pop("context").release()

    async def execute_prepared(
        self, data: Any, principal: Principal
    ) -> tuple[int, dict[str, Any] | bytes] | None:
        """Run a request whose document is known to be valid; None hands it to Ariadne.

        Mirrors `ariadne.graphql.graphql` after its parse and validate steps, with no
        extensions, middleware or root value (the broker uses none).
        """
        if not isinstance(data, dict):
            return None
        query, variables = data.get("query"), data.get("variables")
        operation_name = data.get("operationName")
        if not isinstance(query, str) or not (variables is None or isinstance(variables, dict)):
            return None
        if not (operation_name is None or isinstance(operation_name, str)):
            return None
        if not self.documents.known(query):
            # Parse and validate off the event loop (see broker/http/documents.py). A first sight
            # goes to Ariadne, handed that outcome; from the second on, the text is cached.
            # A document that only introspects is answered as worked out there, at once.
            first = await self.documents.first_sight(query, principal.owner)
            answer = (
                None if first is None or first.answer is None else first.answer.of(operation_name)
            )
            if answer is not None:
                self.documents.answered(query)
                return 200, answer
            if not self.documents.known(query):
                return None
        prepared = self.documents.prepared(query)
        if prepared is None:
            return None
        if prepared.answer is not None and (answer := prepared.answer.of(operation_name)):
            return 200, answer
        options: dict[str, Any] = {
            "logger": self.error_log,
            "error_formatter": self.error_formatter,
            "debug": False,
        }
        context = self.context(principal)
        try:
            if prepared.plan is not None:
                result = await prepared.plan.run(self.schema, context, variables, operation_name)
            else:
                executed = execute(
                    self.schema,
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
        finally:
            await context.release()  # the answer is complete; orjson encodes it at once
        ok = success or response.get("data") is not None
        return (200 if ok else 400), response

    async def refuse_size(self, send: Send) -> None:
        message = f"Request body is larger than {self.max_bytes} bytes"
        await respond(send, 413, {"errors": [{"message": message}]})


def decode_json(body: bytes) -> Any:
    """The request body's JSON, or None when it is none (Ariadne then answers the error)."""
    try:
        # The standard library's parser, as Starlette's `Request.json()` behind Ariadne:
        # orjson would read integers beyond 64 bits as floats and so word errors apart.
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


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
    content: dict[str, Any] | bytes,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = content if isinstance(content, bytes) else orjson.dumps(content)
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
