"""Who uses the console: OIDC sign-in (authorization code + PKCE), the session, CSRF tokens.

The session is Starlette's signed cookie (itsdangerous). It holds the principal that the
access token named when it was verified by the same authenticator as GraphQL bearer
tokens (issuer, audience, signature, owner and roles claims), until the token expires.
"""

from __future__ import annotations

import hmac
import secrets
import time
import warnings
from typing import Any
from uuid import UUID

import authlib.deprecate
from authlib.common.errors import AuthlibBaseError
from starlette.requests import Request

from broker import auth
from broker.errors import NotAuthenticated
from broker.settings import AuthMode, Settings

with warnings.catch_warnings():
    # authlib warns on import that it runs on httpx rather than its fork httpx2; httpx is
    # what the broker already uses, and the warning would only be noise in the logs.
    warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

PRINCIPAL = "principal"
CSRF = "csrf"
# Without `expires_in` from the token endpoint, a sign-in lasts this long.
DEFAULT_LIFETIME_SECONDS = 300

# What authlib raises when the provider refuses, or its answer (state, ID token) is wrong.
SignInError = AuthlibBaseError


class SignIn:
    """The console's side of the identity provider, and the session's principal."""

    def __init__(self, settings: Settings, authenticator: auth.Authenticator) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.client: StarletteOAuth2App | None = None
        if settings.auth is AuthMode.OIDC and settings.console_client_id:
            issuer = str(settings.oidc_issuer).rstrip("/")
            given = settings.console_client_secret
            secret = given.get_secret_value() if given is not None else ""
            oauth = OAuth()
            self.client = oauth.register(
                "broker",
                client_id=settings.console_client_id,
                client_secret=secret or None,
                server_metadata_url=f"{issuer}/.well-known/openid-configuration",
                client_kwargs={
                    "scope": "openid",
                    "code_challenge_method": "S256",
                    # A public client (no secret) authenticates with PKCE alone.
                    "token_endpoint_auth_method": ("client_secret_basic" if secret else "none"),
                    "trust_env": False,
                    "timeout": auth.FETCH_TIMEOUT_SECONDS,
                },
            )

    @property
    def required(self) -> bool:
        return self.settings.auth is AuthMode.OIDC

    @property
    def configured(self) -> bool:
        return self.client is not None

    async def principal(self, request: Request) -> auth.Principal | None:
        """The signed-in principal; in insecure-dev, the development caller."""
        if not self.required:
            return await self.authenticator.authenticate(None)
        held = request.session.get(PRINCIPAL)
        if not isinstance(held, dict) or held.get("exp", 0) < time.time():
            return None
        return auth.Principal(UUID(held["owner"]), frozenset(held["roles"]))

    def redirect_url(self, request: Request) -> str:
        return self.settings.console_redirect_url or str(request.url_for("console:callback"))

    async def start(self, request: Request) -> Any:
        """Redirect the browser to the identity provider (with state, nonce and PKCE)."""
        assert self.client is not None
        return await self.client.authorize_redirect(request, self.redirect_url(request))

    async def finish(self, request: Request) -> auth.Principal:
        """Trade the callback's code for tokens; raises `SignInError` or `NotAuthenticated`."""
        assert self.client is not None
        token = await self.client.authorize_access_token(request)
        access_token = token.get("access_token")
        if not isinstance(access_token, str):
            raise NotAuthenticated()
        principal = await self.authenticator.authenticate(f"Bearer {access_token}")
        expires_at = token.get("expires_at") or time.time() + DEFAULT_LIFETIME_SECONDS
        # A fresh session (and CSRF token) for the signed-in user: no fixation.
        request.session.clear()
        request.session[PRINCIPAL] = {
            "owner": str(principal.owner),
            "roles": sorted(principal.roles),
            "exp": int(expires_at),
        }
        return principal


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; every form carries it."""
    token = request.session.get(CSRF)
    if not isinstance(token, str):
        token = request.session[CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_valid(request: Request, submitted: object, origin: str) -> bool:
    """The form's token is the session's, and the browser's `Origin` (if sent) is ours."""
    sent_origin = request.headers.get("origin")
    if sent_origin is not None and sent_origin != origin:
        return False
    expected = request.session.get(CSRF)
    return (
        isinstance(expected, str)
        and isinstance(submitted, str)
        and hmac.compare_digest(expected.encode(), submitted.encode())
    )
