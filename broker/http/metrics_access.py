"""Who may scrape `GET /metrics`: its gauges name every owner's listeners, so not anyone.

With `BROKER_METRICS_TOKEN` set, a scrape must send it as a bearer token (Prometheus'
`authorization` setting). Without one, `/metrics` stays open in `insecure-dev`, and in
`oidc` mode is refused unless `BROKER_METRICS_PUBLIC=true` says to serve it to anyone.
A refused scrape reads nothing from Redis. The check wraps the one route it guards, where
the route table shows it, rather than Starlette's AuthenticationMiddleware, which would
run for every request to every route.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from broker.auth import bearer_token
from broker.errors import NotAuthenticated
from broker.settings import AuthMode, Settings

Endpoint = Callable[[Request], Awaitable[Response]]

HOW_TO_OPEN = "set BROKER_METRICS_TOKEN, or BROKER_METRICS_PUBLIC=true to serve it to anyone"
WRONG_TOKEN = "GET /metrics needs the bearer token that BROKER_METRICS_TOKEN sets\n"
CLOSED = f"GET /metrics is closed: {HOW_TO_OPEN}\n"
CLOSED_WARNING = (
    f"BROKER_AUTH=oidc without BROKER_METRICS_TOKEN: /metrics answers 403; {HOW_TO_OPEN}"
)


def is_closed(settings: Settings) -> bool:
    """Whether `settings` refuse every scrape: `oidc`, no token, and not made public."""
    return (
        settings.auth is AuthMode.OIDC
        and settings.metrics_token is None
        and not settings.metrics_public
    )


def guarded(settings: Settings, endpoint: Endpoint) -> Endpoint:
    """`endpoint`, answering only the scrapes `settings` allow (the others get 401 or 403)."""
    if settings.metrics_token is not None:
        expected = settings.metrics_token.get_secret_value().encode()

        async def with_token(request: Request) -> Response:
            try:
                presented = bearer_token(request.headers.get("authorization")) or ""
            except NotAuthenticated:
                presented = ""
            # Starlette decodes headers as latin-1: these are the bytes that were sent.
            if hmac.compare_digest(presented.encode("latin-1"), expected):
                return await endpoint(request)
            return PlainTextResponse(WRONG_TOKEN, 401, {"WWW-Authenticate": "Bearer"})

        return with_token
    if is_closed(settings):

        async def closed(request: Request) -> Response:
            return PlainTextResponse(CLOSED, 403)

        return closed
    return endpoint
