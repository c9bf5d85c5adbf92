"""The console as an ASGI app: its routes, session cookie and security headers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import auth
from broker.console import actions, listings
from broker.console.signin import SignIn
from broker.console.views import Console
from broker.management import Management
from broker.models import Caller
from broker.settings import Settings

PATH = "/console"
SESSION_COOKIE = "broker_console"
SESSION_MAX_AGE_SECONDS = 12 * 3600
# Everything comes from the broker itself; no inline script or style at all.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


class SecurityHeaders:
    """Adds the CSP and friends to every console response; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{PATH}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_app(
    settings: Settings,
    broker: Management,
    authenticator: auth.Authenticator,
    caller_of: Callable[[auth.Principal], Caller],
) -> Mount:
    """The console mounted at /console, acting through `broker` as GraphQL does."""
    sign_in = SignIn(settings, authenticator)
    console = Console(broker, sign_in, caller_of, _origin_of(settings))
    page = console.page
    routes = [
        Route("/", page(listings.overview), name="overview"),
        Route("/listeners", page(listings.listeners), name="listeners"),
        Route("/listeners/{uuid}", page(listings.listener), name="listener"),
        Route(
            "/listeners/{uuid}/events",
            page(actions.change_events),
            methods=["POST"],
            name="change_events",
        ),
        Route(
            "/listeners/{uuid}/delete",
            page(actions.delete_listener),
            methods=["POST"],
            name="delete_listener",
        ),
        Route(
            "/namespaces/delete",
            page(actions.delete_namespace),
            methods=["POST"],
            name="delete_namespace",
        ),
        Route("/auth/login", console.login, name="login"),
        Route("/auth/callback", console.callback, name="callback"),
        Route("/auth/logout", console.logout, methods=["POST"], name="logout"),
        Mount(
            "/static",
            StaticFiles(directory=Path(__file__).parent / "static"),
            name="static",
        ),
    ]
    # Without a configured secret (insecure-dev), sessions last as long as the process.
    secret = (
        settings.console_session_secret.get_secret_value()
        if settings.console_session_secret is not None
        else secrets.token_urlsafe(32)
    )
    redirect = settings.console_redirect_url or ""
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE_SECONDS,
            path=PATH,
            same_site="lax",  # "strict" would drop the cookie on the identity provider's redirect
            https_only=redirect.startswith("https://"),
        ),
    ]
    return Mount(PATH, app=Starlette(routes=routes, middleware=middleware), name="console")


def _origin_of(settings: Settings) -> Callable[[Request], str]:
    """The console's own origin, which a browser's `Origin` header must match on POST."""
    if settings.console_redirect_url:
        parts = urlsplit(settings.console_redirect_url)
        configured = f"{parts.scheme}://{parts.netloc}"
        return lambda request: configured
    return lambda request: f"{request.url.scheme}://{request.url.netloc}"
