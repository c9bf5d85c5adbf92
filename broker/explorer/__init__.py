"""The GraphQL explorer (GraphiQL) on `GET /graphql`, served entirely from the broker's files.

Ariadne's own explorer page loads GraphiQL, React and more from a CDN, so it stays blank
on a machine without internet. This page loads the same kind of files from
`ASSETS_PATH` instead: GraphiQL's and React's built files, vendored from the npm
registry at the versions pinned in `npm/package-lock.json` (scripts/vendor-explorer
refreshes them; their licences lie beside them in `static/vendor`). Every response of
the explorer's routes carries a Content-Security-Policy that names no other origin.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from ariadne.explorer import Explorer, ExplorerHttp405
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.settings import Settings

ASSETS_PATH = "/static/explorer"
STATIC = Path(__file__).parent / "static"
PAGE = Template((Path(__file__).parent / "page.html").read_text())
# Only the broker itself: scripts and styles from files (no inline code), the GraphQL
# requests to the same origin, and GraphiQL's fonts and icons embedded as data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class OfflineGraphiQL(Explorer):
    """Ariadne's explorer hook: the page that loads GraphiQL from `ASSETS_PATH`."""

    def __init__(self, auth_mode: str) -> None:
        self.auth_mode = auth_mode  # the page tells OIDC users where their token goes

    def html(self, request: Request) -> str:
        # root_path: behind a proxy that mounts the broker under a prefix, assets follow.
        assets = request.scope.get("root_path", "") + ASSETS_PATH
        return PAGE.substitute(assets=html.escape(assets), auth=html.escape(self.auth_mode))


def page_for(settings: Settings) -> Explorer:
    """The explorer to give Ariadne's app; with `BROKER_EXPLORER=false`, none (405)."""
    # Given no explorer at all, Ariadne falls back to its own CDN-loaded page.
    return OfflineGraphiQL(settings.auth) if settings.explorer else ExplorerHttp405()


class WithSecurityHeaders:
    """ASGI wrapper adding the explorer's Content-Security-Policy (and friends) to responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def assets() -> ASGIApp:
    """The app serving the explorer's files (mount it at `ASSETS_PATH`), compressed."""
    # gzip shrinks the page's 1.6 MB of scripts and styles to 0.66 MB.
    return WithSecurityHeaders(GZipMiddleware(StaticFiles(directory=STATIC)))
