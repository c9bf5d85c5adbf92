"""Development tokens: a Keycloak-shaped client-credentials endpoint for `insecure-dev` only.

FastRAMQPI fetches its token with OAuth2 client credentials from
`{auth_server}/realms/{realm}/protocol/openid-connect/token`. Under `BROKER_AUTH=insecure-dev`
the broker answers that request itself, so an integration runs against it with its ordinary
settings and no identity provider. INSECURE: any client id gets a token for any secret, the
token is unsigned, and `insecure-dev` believes its claims. It is never served under `oidc`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, Final
from urllib.parse import parse_qs, unquote
from uuid import UUID, uuid5

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.auth import ROLES
from broker.settings import Settings

PATH: Final = "/auth/realms/{realm}/protocol/openid-connect/token"
# Keycloak's default access-token lifespan; clients refresh before it ends.
EXPIRES_IN_SECONDS: Final = 300
MAX_FORM_BYTES: Final = 8 * 1024
# Fixed, so a client id names the same owner on every machine and after every restart.
OWNER_NAMESPACE: Final = UUID("6f1b0b52-8f4e-5c1e-9a3c-2d7c1c0e7a10")


def owner_of(client_id: str) -> UUID:
    """The development owner a client id stands for (the same one every time)."""
    return uuid5(OWNER_NAMESPACE, client_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def development_token(client_id: str, settings: Settings, now: float) -> str:
    """An unsigned JWT (`alg: none`) naming the client's owner, with every role."""
    roles = sorted(ROLES | {settings.admin_role, settings.mo_emitter_role})
    claims: dict[str, Any] = {
        "iat": int(now),
        "exp": int(now) + EXPIRES_IN_SECONDS,
        "azp": client_id,
        "preferred_username": f"service-account-{client_id}",
        settings.oidc_owner_claim: str(owner_of(client_id)),
    }
    # The roles at the configured claim path (Keycloak's `realm_access.roles` by default).
    *parents, leaf = settings.oidc_roles_claim.split(".")
    where = claims
    for name in parents:
        where = where.setdefault(name, {})
    where[leaf] = roles
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _error(error: str, description: str, status: int = 400) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _basic_client_id(authorization: str | None) -> str | None:
    """The client id of an HTTP Basic header (authlib's default way to send credentials)."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(decoded.partition(":")[0]) or None


class TokenEndpoint:
    """`POST` handler answering like Keycloak's token endpoint, for any realm."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def answer(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return _error("invalid_request", "request too large", 413)
        try:
            form = parse_qs(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            return _error("invalid_request", "the form is not UTF-8")
        if form.get("grant_type") != ["client_credentials"]:
            return _error("unsupported_grant_type", "only client_credentials is served")
        client_id = _basic_client_id(request.headers.get("authorization"))
        if client_id is None:
            client_id = (form.get("client_id") or [""])[0]
        if not client_id:
            return _error("invalid_client", "client_id is missing", 401)
        token = development_token(client_id, self.settings, time.time())
        return JSONResponse(
            {
                "access_token": token,
                "expires_in": EXPIRES_IN_SECONDS,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "profile email",
            },
            headers={"Cache-Control": "no-store"},
        )
