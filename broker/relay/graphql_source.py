"""Source: OS2mo's GraphQL event API, read as FastRAMQPI reads it, with OIDC client credentials.

One listener per routing key is declared upstream (idempotent, so replicas share it and
OS2mo hands each event to one of their fetchers); each event is stored in the broker and
only then acknowledged upstream. An event not acknowledged comes back after OS2mo's
back-off, and storing it twice coalesces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from broker.relay.metrics import RelayMetrics
from broker.relay.settings import RelaySettings
from broker.relay.sink import MoSink, Refused

log = logging.getLogger(__name__)

SOURCE = "graphql"
# FastRAMQPI's documents, byte for byte: what every OS2mo since 42.0 answers.
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
TIMEOUT_SECONDS = 120.0
# Renew the token this long before it expires (authlib's default is 60 s).
TOKEN_LEEWAY_SECONDS = 30
ERROR_PAUSE_FIRST_SECONDS = 1.0
ERROR_PAUSE_MAX_SECONDS = 30.0


class UpstreamError(Exception):
    """OS2mo answered with GraphQL errors, a bad status or an unreadable body."""


# What a call upstream can fail with (the token endpoint's failures included); the relay
# pauses and tries again, never crashes.
UPSTREAM_ERRORS = (
    httpx.HTTPError,
    UpstreamError,
    AuthlibBaseError,
    KeyError,
    TypeError,
    ValueError,
)


class GraphQLSource:
    def __init__(
        self,
        settings: RelaySettings,
        sink: MoSink,
        metrics: RelayMetrics,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        assert settings.client_secret is not None
        self.client = AsyncOAuth2Client(
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            grant_type="client_credentials",
            token_endpoint=settings.token_url,
            # authlib renews a token it holds when it nears expiry, and (with this expired
            # placeholder) fetches the first one before the first call.
            token={"expires_at": -1, "access_token": ""},
            leeway=TOKEN_LEEWAY_SECONDS,
            timeout=TIMEOUT_SECONDS,
            transport=transport,
            trust_env=False,
        )
        self.stopping = asyncio.Event()
        self.healthy = False

    async def call(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """One GraphQL call; a 401 (token revoked or expired early) renews the token once."""
        body = {"query": query, "variables": variables}
        url = str(self.settings.os2mo_url)
        response = await self.client.post(url, json=body)
        if response.status_code == 401:
            await self.client.fetch_token()
            response = await self.client.post(url, json=body)
        if response.status_code != 200:
            raise UpstreamError(f"status {response.status_code}")
        try:
            answer = response.json()
        except ValueError as error:
            raise UpstreamError("the answer is not JSON") from error
        if not isinstance(answer, dict) or answer.get("errors") or "data" not in answer:
            raise UpstreamError(f"GraphQL errors: {answer!r:.300}")
        data: dict[str, Any] = answer["data"]
        return data

    async def declare(self) -> dict[str, str]:
        """The relay's listener upstream for each routing key (declared at every start)."""
        listeners = {}
        for routing_key in self.settings.routing_keys:
            user_key = f"{self.settings.user_key}-{routing_key}"
            variables = {
                "input": {"namespace": "mo", "user_key": user_key, "routing_key": routing_key}
            }
            data = await self.call(DECLARE_LISTENER, variables)
            listeners[routing_key] = data["event_listener_declare"]["uuid"]
        self.healthy = True
        return listeners

    async def run(self) -> None:
        """Declare, then fetch with `parallelism` fetchers per routing key until `stop()`."""
        pause = ERROR_PAUSE_FIRST_SECONDS
        while not self.stopping.is_set():
            try:
                listeners = await self.declare()
                break
            except UPSTREAM_ERRORS as error:
                self._upstream_failed("declaring listeners", error)
                await self._pause(pause)
                pause = min(pause * 2, ERROR_PAUSE_MAX_SECONDS)
        else:
            return
        async with asyncio.TaskGroup() as fetchers:
            for routing_key, listener in listeners.items():
                for _ in range(self.settings.parallelism):
                    fetchers.create_task(self.fetcher(routing_key, listener))

    async def fetcher(self, routing_key: str, listener: str) -> None:
        pause = ERROR_PAUSE_FIRST_SECONDS
        while not self.stopping.is_set():
            try:
                relayed = await self.relay_one(routing_key, listener)
            except UPSTREAM_ERRORS as error:
                self._upstream_failed(f"relaying {routing_key}", error)
                await self._pause(pause)
                pause = min(pause * 2, ERROR_PAUSE_MAX_SECONDS)
                continue
            pause = ERROR_PAUSE_FIRST_SECONDS
            if not relayed:
                await self._pause(self.settings.poll_seconds)

    async def relay_one(self, routing_key: str, listener: str) -> bool:
        """Fetch one event, store it, then acknowledge it; False when there was none.

        Once fetched, an event is finished even while stopping: stored and acknowledged,
        or (when the broker cannot confirm it) left unacknowledged to come back upstream.
        """
        found = await self._fetch_unless_stopping(listener)
        if found is None:
            return False
        event = found["event_fetch"]
        self.healthy = True
        if event is None:
            return False
        received = time.monotonic()
        try:
            stored = await self.sink.store_event(routing_key, event["subject"], event["priority"])
        except Refused as error:
            # Left pending upstream, where OS2mo's metrics show it; it is retried after back-off.
            log.error("the broker refused an event from %s: %s", routing_key, error)
            self.metrics.rejected.labels(SOURCE, "refused").inc()
            return True
        if not stored:
            return True
        await self.call(ACK, {"token": event["token"]})
        self.metrics.relayed.labels(SOURCE, routing_key).inc()
        self.metrics.lag.labels(SOURCE).observe(time.monotonic() - received)
        self.metrics.last_relayed.labels(SOURCE).set_to_current_time()
        return True

    async def _fetch_unless_stopping(self, listener: str) -> dict[str, Any] | None:
        """The fetch's answer; None when the relay stops first (an upstream that long-polls
        would hold SIGTERM up). An event handed out to a cancelled fetch is not
        acknowledged, so it comes back upstream after its back-off."""
        fetch = asyncio.ensure_future(self.call(FETCH, {"listener": listener}))
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
        if fetch.cancelled():
            return None
        return fetch.result()

    def _upstream_failed(self, doing: str, error: Exception) -> None:
        self.healthy = False
        self.metrics.upstream_errors.labels(SOURCE).inc()
        log.warning("upstream error while %s: %r", doing, error)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        await self.client.aclose()
