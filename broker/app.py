"""The ASGI application: routes, and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
from ariadne import make_executable_schema
from ariadne.asgi import GraphQL
from ariadne.explorer import ExplorerGraphiQL
from graphql import GraphQLError, GraphQLSchema
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from broker import api, auth, errors
from broker.connection import connect
from broker.documents import DocumentCache
from broker.endpoint import GraphQLEndpoint, Schema
from broker.fanout import FanOut
from broker.keys import Keys
from broker.limits import JSONOnlyHTTPHandler, validation_rules
from broker.logs import RequestLog
from broker.metrics import Metrics, read_snapshot
from broker.models import Caller
from broker.notify import Notifier
from broker.operations import Broker
from broker.schema import schema_text, seed_variant
from broker.settings import Settings
from broker.shutdown import on_exit_signal
from broker.store import RedisClient, Store

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 1.0
# Below Prometheus' default scrape timeout (10 s): a slow Redis still gives counters.
METRICS_TIMEOUT_SECONDS = 8.0


def format_error(
    error: GraphQLError, debug: bool = False, metrics: Metrics | None = None
) -> dict[str, Any]:
    """Show users the refusals meant for them; hide internals behind a stable message."""
    original = error.original_error
    if isinstance(original, RedisError):
        log.warning("Redis error in %s: %s", error.path, original)
        if metrics is not None:
            metrics.redis_errors.labels("api").inc()
        error = GraphQLError(str(errors.StorageUnavailable()), path=error.path)
    elif original is not None and not isinstance(original, (GraphQLError, errors.BrokerError)):
        # A ValueError (or anything else) from a bug must not show its text to users.
        log.error("internal error in %s", error.path, exc_info=original)
        error = GraphQLError("Internal server error", path=error.path)
    return dict(error.formatted)


def caller_of(principal: auth.Principal, settings: Settings) -> Caller:
    return Caller(
        owner=principal.owner,
        admin=auth.is_admin(principal, settings),
        read_all=principal.has("read_event_all"),
        mo_emitter=auth.may_emit_into_mo(principal, settings),
    )


def create_app(settings: Settings, redis: RedisClient | None = None) -> Starlette:
    """Build the app. Without `redis`, one is connected from the settings at start-up."""
    type_defs = schema_text()
    released = make_executable_schema(type_defs, *api.BINDABLES)
    seed = make_executable_schema(seed_variant(type_defs), *api.BINDABLES)
    state: dict[str, Any] = {}
    metrics = Metrics()

    def context(principal: auth.Principal) -> api.Context:
        return api.Context(
            broker=state["broker"],
            caller=caller_of(principal, settings),
            authorize=lambda field_name: auth.require(principal, field_name),
        )

    def graphql_app(schema: GraphQLSchema) -> Schema:
        documents = DocumentCache()
        graphql = GraphQL(
            schema,
            context_value=lambda request, data: context(request.scope["state"]["principal"]),
            debug=False,
            introspection=settings.introspection,
            explorer=ExplorerGraphiQL() if settings.explorer else None,
            error_formatter=partial(format_error, metrics=metrics),
            http_handler=JSONOnlyHTTPHandler(),
            query_parser=documents.parse,
            query_validator=documents.validate,
            validation_rules=validation_rules(settings),
        )
        return Schema(schema, documents, graphql)

    async def live(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def ready(request: Request) -> Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await state["store"].ping()
        except (RedisError, OSError, TimeoutError):
            return JSONResponse({"status": "redis unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        snapshot = None
        try:
            async with asyncio.timeout(METRICS_TIMEOUT_SECONDS):
                snapshot = await read_snapshot(state["store"])
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("metrics: cannot read the event store (%s)", error)
            metrics.redis_errors.labels("metrics").inc()
        return Response(metrics.render(snapshot), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = redis if redis is not None else connect(settings)
        http = httpx.AsyncClient(trust_env=False)
        state["authenticator"] = auth.make_authenticator(settings, http)
        keys = Keys(settings.key_prefix, settings.ingest_shards)
        store = Store(client, keys)
        notifier = Notifier(client, keys.notify_channel, settings.fetch_empty_cache_seconds)
        broker = Broker(store, settings, notifier, metrics)
        await broker.setup()
        fanout = FanOut(store, settings, notifier, metrics)
        state.update(store=store, broker=broker, fanout=fanout, notifier=notifier)
        notifier.start()
        fanout.start()
        try:
            # Long polls end as soon as SIGTERM arrives, not after the grace period.
            with on_exit_signal(notifier.close):
                yield
        finally:
            await notifier.stop()
            await fanout.stop(settings.shutdown_timeout_seconds)
            await http.aclose()
            if redis is None:
                await client.aclose()

    seed_endpoint, released_endpoint = graphql_app(seed), graphql_app(released)
    # POSTs to the GraphQL paths are answered by GraphQLEndpoint (which authenticates);
    # these routes only serve the explorer page (GET) and refuse other methods.
    routes = [
        Route("/graphql", seed_endpoint.ariadne, methods=["GET"]),
        Route("/graphql/v{version:int}", released_endpoint.ariadne, methods=["GET"]),
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", metrics_endpoint),
    ]
    graphql_endpoint = Middleware(
        GraphQLEndpoint,
        seed=seed_endpoint,
        released=released_endpoint,
        authenticate=lambda authorization: state["authenticator"].authenticate(authorization),
        context=context,
        error_formatter=partial(format_error, metrics=metrics),
        max_bytes=settings.max_body_bytes,
    )
    middleware = [Middleware(RequestLog), graphql_endpoint]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.broker_state = state
    return app
