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
from graphql import GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import api, auth, errors
from broker.documents import DocumentCache
from broker.fanout import FanOut
from broker.keys import Keys
from broker.limits import BodySizeLimit, JSONOnlyHTTPHandler, validation_rules
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
POOL_WAIT_SECONDS = 5.0  # longest a request waits for a free Redis connection
# Below Prometheus' default scrape timeout (10 s): a slow Redis still gives counters.
METRICS_TIMEOUT_SECONDS = 8.0


def connect(settings: Settings) -> RedisClient:
    """A client for `BROKER_REDIS_URL` that fails fast instead of hanging when Redis is down."""
    assert settings.redis_url is not None
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 10.0,
        "health_check_interval": 15,
        # One quick retry on a fresh connection: after Redis restarts, pooled
        # connections are dead and each would otherwise fail one request. Not on
        # timeouts, which would only double the wait.
        "retry": Retry(
            ExponentialBackoff(cap=0.2, base=0.05),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
    }
    if settings.redis_password is not None:
        options["password"] = settings.redis_password
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_cluster:
        # The cluster client retries (and re-discovers the slots) on its own.
        options.pop("health_check_interval")
        options.pop("retry")
        options["max_connections"] = settings.redis_max_connections
        return RedisCluster.from_url(settings.redis_url, **options)
    # A pool that makes a request wait for a free connection instead of failing at
    # once: ~17 connections are held by blocking fan-out reads and pub/sub, and a
    # burst while Redis is briefly busy would otherwise be refused.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_SECONDS,
        **options,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


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
    elif original is not None and not isinstance(
        original, (GraphQLError, errors.BrokerError, ValueError)
    ):
        log.error("internal error in %s", error.path, exc_info=original)
        error = GraphQLError("Internal server error", path=error.path)
    return dict(error.formatted)


class Authenticated:
    """Let a GraphQL POST through only with a caller; GET (the explorer page) needs none.

    The principal goes into `scope["state"]`, where the context builder finds it.
    """

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "GET":
            request = Request(scope)
            try:
                principal = await self.state["authenticator"].authenticate(
                    request.headers.get("authorization")
                )
            except errors.NotAuthenticated as error:
                body = {"data": None, "errors": [{"message": str(error)}]}
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse(body, status_code=401, headers=headers)(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


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

    def context(request: Request, data: Any) -> api.Context:
        principal: auth.Principal = request.scope["state"]["principal"]
        return api.Context(
            broker=state["broker"],
            caller=caller_of(principal, settings),
            authorize=lambda field_name: auth.require(principal, field_name),
        )

    def graphql_app(schema: Any) -> ASGIApp:
        documents = DocumentCache()
        graphql = GraphQL(
            schema,
            context_value=context,
            debug=False,
            introspection=settings.introspection,
            explorer=ExplorerGraphiQL() if settings.explorer else None,
            error_formatter=partial(format_error, metrics=metrics),
            http_handler=JSONOnlyHTTPHandler(),
            query_parser=documents.parse,
            query_validator=documents.validate,
            validation_rules=validation_rules(settings),
        )
        return Authenticated(graphql, state)

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
        notifier = Notifier(client, keys.notify_channel)
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

    seed_app = graphql_app(seed)
    released_app = graphql_app(released)
    routes = [
        Route("/graphql", seed_app, methods=["GET", "POST"]),
        Route("/graphql/v{version:int}", released_app, methods=["GET", "POST"]),
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", metrics_endpoint),
    ]
    limit_body = Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    middleware = [Middleware(RequestLog), limit_body]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.broker_state = state
    return app
