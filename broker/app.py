"""The ASGI application: routes, and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache, partial
from typing import Any

import httpx
from ariadne import make_executable_schema
from graphql import GraphQLError, GraphQLSchema
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import OutOfMemoryError, RedisError
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from broker import auth, devtokens, errors, explorer
from broker.console.routes import console_app
from broker.fanout import FanOut
from broker.http import api, metrics_access
from broker.http.endpoint import GraphQLEndpoint
from broker.http.schema import schema_text, seed_variant
from broker.logs import RequestLog
from broker.management import Management
from broker.metrics import Metrics
from broker.notify import Notifier
from broker.settings import AuthMode, Settings
from broker.shutdown import on_exit_signal
from broker.storage.connection import connect
from broker.storage.keys import Keys
from broker.storage.replication import Replication
from broker.storage.server import ServerRefused, ServerWatch
from broker.storage.store import RedisClient, Store

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 1.0
SETUP_ATTEMPTS = 15  # start-up writes tried once a second while replicas catch up
# Below Prometheus' default scrape timeout (10 s): a slow Redis still gives counters.
METRICS_TIMEOUT_SECONDS = 8.0


def format_error(
    error: GraphQLError, debug: bool = False, metrics: Metrics | None = None
) -> dict[str, Any]:
    """Show users the refusals meant for them; hide internals behind a stable message."""
    original = error.original_error
    if isinstance(original, OutOfMemoryError):
        # A script refused at its first write: nothing of it was stored.
        log.warning("Redis is full (maxmemory) in %s: %s", error.path, original)
        if metrics is not None:
            metrics.store_full.inc()
        error = GraphQLError(str(errors.StoreFull()), path=error.path)
    elif isinstance(original, errors.NotReplicated):
        if metrics is not None:
            metrics.not_replicated.inc()
    elif isinstance(original, RedisError):
        log.warning("Redis error in %s: %s", error.path, original)
        if metrics is not None:
            metrics.redis_errors.labels("api").inc()
        error = GraphQLError(str(errors.StorageUnavailable()), path=error.path)
    elif original is not None and not isinstance(original, (GraphQLError, errors.BrokerError)):
        # A ValueError (or anything else) from a bug must not show its text to users.
        log.error("internal error in %s", error.path, exc_info=original)
        error = GraphQLError("Internal server error", path=error.path)
    return dict(error.formatted)


class ApiVersion(Convertor[int]):
    """The N of `/graphql/vN`: up to nine digits (Starlette's `int` turns 4,301 into a 500)."""

    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("api_version", ApiVersion())


@cache
def schemas() -> tuple[GraphQLSchema, GraphQLSchema]:
    """The released and the seed schema, built once per process: they depend on nothing else
    (and building them takes longer than the rest of an app; tests build many apps)."""
    type_defs = schema_text()
    released = make_executable_schema(type_defs, *api.BINDABLES)
    seed = make_executable_schema(seed_variant(type_defs), *api.BINDABLES)
    return released, seed


def create_app(settings: Settings, redis: RedisClient | None = None) -> Starlette:
    """Build the app. Without `redis`, one is made from the settings (it connects lazily)."""
    released, seed = schemas()
    metrics = Metrics()
    client = redis if redis is not None else connect(settings)
    http = httpx.AsyncClient(trust_env=False)
    authenticator = auth.make_authenticator(settings, http)
    keys = Keys(settings.key_prefix, settings.ingest_shards)
    replication = Replication(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
    server = ServerWatch(client, settings, replication)
    store = Store(client, keys, replication, metrics.count_unreadable)
    notifier = Notifier(client, keys.notify_channel, settings.fetch_empty_cache_seconds)
    broker = Management(store, settings, notifier, metrics)
    fanout = FanOut(store, settings, notifier, metrics)
    state: dict[str, Any] = dict(
        store=store,
        broker=broker,
        fanout=fanout,
        notifier=notifier,
        authenticator=authenticator,
        server=server,
    )

    def graphql(schema: GraphQLSchema) -> GraphQLEndpoint:
        return GraphQLEndpoint(
            schema,
            settings=settings,
            authenticator=authenticator,
            context=partial(api.context_for, broker, settings),
            error_formatter=partial(format_error, metrics=metrics),
        )

    async def live(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def ready(request: Request) -> Response:
        if server.problem is not None:
            return JSONResponse({"status": server.problem}, status_code=503)
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await store.ping()
        except (RedisError, OSError, TimeoutError):
            return JSONResponse({"status": "redis unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        # From the latest snapshot; only the first scrape in a while waits for a read.
        snapshot = await broker.stats.snapshot(METRICS_TIMEOUT_SECONDS)
        age = broker.stats.age()
        return Response(metrics.render(snapshot, age), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await server.check()
        except ServerRefused as error:
            log.error("refusing to start: %s", error)
            raise
        # Fresh replicas may still be syncing: their first WAIT can time out.
        for attempt in range(SETUP_ATTEMPTS):
            try:
                await broker.setup()
                break
            except errors.NotReplicated:
                if attempt == SETUP_ATTEMPTS - 1:
                    raise
                log.warning("start-up writes not yet replicated; trying again in 1 s")
                await asyncio.sleep(1)
        notifier.start()
        fanout.start()
        watching = asyncio.create_task(server.watch())
        try:
            # Long polls end as soon as SIGTERM arrives, not after the grace period.
            with on_exit_signal(notifier.close):
                yield
        finally:
            watching.cancel()
            await broker.stats.stop()
            await notifier.stop()
            await fanout.stop(settings.shutdown_timeout_seconds)
            await http.aclose()
            if redis is None:
                await client.aclose()

    # GET shows the explorer (when enabled); POST runs GraphQL (see broker/http/endpoint.py).
    routes: list[BaseRoute] = [
        Route("/graphql", graphql(seed), methods=["GET", "POST"]),
        Route("/graphql/v{version:api_version}", graphql(released), methods=["GET", "POST"]),
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", metrics_access.guarded(settings, metrics_endpoint)),
    ]
    if settings.explorer:
        routes.append(Mount(explorer.ASSETS_PATH, explorer.assets()))
    if settings.console:
        routes.append(
            console_app(settings, broker, authenticator, partial(auth.caller_of, settings=settings))
        )
    if settings.auth is AuthMode.INSECURE_DEV:
        # Integrations fetch development tokens here instead of from a Keycloak.
        routes.append(
            Route(devtokens.PATH, devtokens.TokenEndpoint(settings).answer, methods=["POST"])
        )
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RequestLog)])
    app.state.broker_state = state
    return app
