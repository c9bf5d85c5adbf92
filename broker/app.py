"""The ASGI application: routes, and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from broker import auth, devtokens, errors, explorer
from broker.console.routes import console_app
from broker.fanout import FanOut
from broker.http import metrics_access
from broker.http.checker import Checks
from broker.http.context import Shares, context_for
from broker.http.endpoint import GraphQLEndpoint
from broker.http.failures import format_error
from broker.logs import RequestLog
from broker.management import Management
from broker.metrics import Metrics
from broker.notify import Notifier
from broker.settings import AuthMode, Settings
from broker.shutdown import on_exit_signal
from broker.storage.connection import UNAVAILABLE, connect
from broker.storage.keys import Keys
from broker.storage.layout import LayoutRefused
from broker.storage.replication import Replication
from broker.storage.server import ServerRefused, ServerWatch
from broker.storage.store import RedisClient, Store

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 1.0
SETUP_ATTEMPTS = 15  # start-up writes tried once a second while replicas catch up
# Below Prometheus' default scrape timeout (10 s): a slow Redis still gives counters.
METRICS_TIMEOUT_SECONDS = 8.0


class ApiVersion(Convertor[int]):
    """The N of `/graphql/vN`: up to nine digits (Starlette's `int` turns 4,301 into a 500)."""

    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("api_version", ApiVersion())


def create_app(settings: Settings, redis: RedisClient | None = None) -> Starlette:
    """Build the app. Without `redis`, one is made from the settings (it connects lazily)."""
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

    # Nested per-object work and large answers in progress, per caller over all of its
    # requests on both routes.
    shares = Shares()
    state["shares"] = shares

    def graphql(seed: bool) -> GraphQLEndpoint:
        return GraphQLEndpoint(
            Checks.of(settings, seed),
            settings=settings,
            authenticator=authenticator,
            context=partial(context_for, broker, settings, shares),
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
        except UNAVAILABLE:
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
            except LayoutRefused as error:
                log.error("refusing to start: %s", error)
                raise
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
        Route("/graphql", graphql(seed=True), methods=["GET", "POST"]),
        Route("/graphql/v{version:api_version}", graphql(seed=False), methods=["GET", "POST"]),
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
