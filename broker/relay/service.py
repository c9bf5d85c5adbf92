"""The relay process: its source and sink, and a small HTTP app for health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from broker.relay.amqp_source import AmqpSource
from broker.relay.graphql_source import GraphQLSource
from broker.relay.metrics import RelayMetrics
from broker.relay.settings import RelaySettings, Source
from broker.relay.sink import MoSink
from broker.settings import Settings
from broker.storage.store import RedisClient

log = logging.getLogger(__name__)


class EventSource(Protocol):
    healthy: bool

    async def run(self) -> None: ...
    def stop(self) -> None: ...
    async def close(self) -> None: ...


def make_source(relay: RelaySettings, sink: MoSink, metrics: RelayMetrics) -> EventSource:
    if relay.source is Source.AMQP:
        return AmqpSource(relay, sink, metrics)  # type: ignore[return-value]
    return GraphQLSource(relay, sink, metrics)


async def stop_gracefully(
    source: EventSource, sink: MoSink, running: asyncio.Task[None], grace: float
) -> None:
    """No new events; those in flight are finished (stored and acknowledged) within `grace` seconds.

    Past it, the sink stops retrying and what is left is cancelled: unacknowledged upstream,
    so it comes back there.
    """
    source.stop()
    if isinstance(source, AmqpSource):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(source.drain(), grace)
    done, _ = await asyncio.wait([running], timeout=grace)
    if not done:
        sink.stop()
        done, _ = await asyncio.wait([running], timeout=1.0)
    if not done:
        running.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await running


def _exit_if_crashed(task: asyncio.Task[None]) -> None:
    """A source that ends by itself is a bug: stop the process so that it is restarted."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.critical("the relay's source crashed; exiting", exc_info=error)
        os.kill(os.getpid(), signal.SIGTERM)


def create_relay_app(
    settings: Settings, relay: RelaySettings, redis: RedisClient | None = None
) -> Starlette:
    metrics = RelayMetrics()
    sink = MoSink(settings, metrics, redis)
    source = make_source(relay, sink, metrics)

    async def live(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def ready(request: Request) -> Response:
        problems = []
        if not await sink.ready():
            problems.append("redis unavailable")
        if not source.healthy:
            problems.append("upstream unavailable")
        if problems:
            return JSONResponse({"status": ", ".join(problems)}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sink.setup()
        running = asyncio.create_task(source.run())
        running.add_done_callback(_exit_if_crashed)
        log.info("relaying %s events into the broker's mo namespace", relay.source.value)
        try:
            yield
        finally:
            await stop_gracefully(source, sink, running, settings.shutdown_timeout_seconds)
            await source.close()
            await sink.close()

    routes = [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", metrics_endpoint),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.relay = (source, sink, metrics)
    return app
