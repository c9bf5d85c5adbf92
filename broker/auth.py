"""Who is calling: bearer token → `Principal`, with OS2mo realm roles (checked in http/gates.py).

`BROKER_AUTH=oidc` verifies the token against the identity provider's published keys.
`BROKER_AUTH=insecure-dev` reads the same claims without any verification, so local tests
can act as several owners; without a token the caller is `DEV_OWNER` with every role.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol
from uuid import UUID

import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from broker.errors import NotAuthenticated
from broker.models import Caller
from broker.settings import DEV_OWNER, AuthMode, Settings

log = logging.getLogger(__name__)

# OS2mo's realm roles for the event API.
ROLES: Final = frozenset(
    {
        "fetch_event",
        "acknowledge_event",
        "send_event",
        "silence_event",
        "unsilence_event",
        "rerun_event",
        "read_event",
        "read_event_listener",
        "read_event_namespace",
        "create_event_listener",
        "delete_event_listener",
        "create_event_namespace",
        "delete_event_namespace",
        "read_event_all",
    }
)

LEEWAY_SECONDS: Final = 30  # clock skew allowed on exp, nbf and iat
MIN_REFRESH_SECONDS: Final = 10.0  # unknown `kid`s cannot make us fetch keys more often
KEYS_MAX_AGE_SECONDS: Final = 3600.0  # re-read keys now and then so withdrawn ones stop working
FETCH_TIMEOUT_SECONDS: Final = 5.0
MAX_TOKEN_CHARS: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the owner of what they create, and their realm roles."""

    owner: UUID
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles


class Authenticator(Protocol):
    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an `Authorization` header; raises `NotAuthenticated`."""
        ...


def make_authenticator(settings: Settings, http: httpx.AsyncClient) -> Authenticator:
    """The authenticator `settings.auth` asks for; `http` fetches the identity provider's keys."""
    if settings.auth is AuthMode.OIDC:
        return OidcAuthenticator(settings, http)
    return DevAuthenticator(settings)


def may_emit_into_mo(principal: Principal, settings: Settings) -> bool:
    """Whether the caller may send into the built-in `mo` namespace."""
    return principal.has(settings.mo_emitter_role) or principal.owner in settings.mo_emitters


def is_admin(principal: Principal, settings: Settings) -> bool:
    """Whether the caller may manage other owners' namespaces, listeners and events."""
    return principal.has(settings.admin_role)


def caller_of(principal: Principal, settings: Settings) -> Caller:
    """Who the domain operations see: the principal's owner and what its roles allow."""
    return Caller(
        owner=principal.owner,
        admin=is_admin(principal, settings),
        read_all=principal.has("read_event_all"),
        mo_emitter=may_emit_into_mo(principal, settings),
    )


def check_bind_address(settings: Settings, host: str) -> None:
    """Refuse to serve unauthenticated (insecure-dev) on anything but loopback."""
    if settings.auth is not AuthMode.INSECURE_DEV or settings.allow_insecure_on_public_interface:
        return
    if host == "localhost" or _is_loopback_ip(host.strip("[]")):
        return
    raise ValueError(
        f"BROKER_AUTH=insecure-dev lets anyone act as any owner; refusing to listen on {host}. "
        "Bind to 127.0.0.1 or set BROKER_ALLOW_INSECURE_ON_PUBLIC_INTERFACE=true."
    )


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DevAuthenticator:
    """insecure-dev: believes whatever the token's claims say. Never expose it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.all_roles = ROLES | {settings.admin_role, settings.mo_emitter_role}

    async def authenticate(self, authorization: str | None) -> Principal:
        with failing_closed():
            token = bearer_token(authorization)
            if token is None:
                return Principal(DEV_OWNER, self.all_roles)
            claims = _unverified_claims(token)
            # A dev token with only `uuid` gets every role; one that lists roles gets just those.
            return principal_from_claims(claims, self.settings, default_roles=self.all_roles)


class OidcAuthenticator:
    """oidc: a JWT signed by the identity provider, with issuer, audience and lifetime checked."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keys = JwksCache(settings, http, clock)
        # HS* would verify with a public key as the shared secret (algorithm confusion).
        self.algorithms = [
            alg for alg in settings.oidc_algorithms if alg != "none" and not alg.startswith("HS")
        ]
        required: dict[str, Any] = {"exp": {"essential": True}}
        if settings.oidc_issuer:
            required["iss"] = {"essential": True, "value": settings.oidc_issuer}
        if settings.oidc_audience:
            required["aud"] = {"essential": True, "value": settings.oidc_audience}
        self.claims = jwt.JWTClaimsRegistry(leeway=LEEWAY_SECONDS, **required)

    async def authenticate(self, authorization: str | None) -> Principal:
        with failing_closed():
            token = bearer_token(authorization)
            if token is None:
                raise NotAuthenticated("no bearer token")
            keys = await self.keys.current()
            try:
                verified = jwt.decode(token, keys, algorithms=self.algorithms)
            except InvalidKeyIdError:
                keys = await self.keys.refresh()
                verified = jwt.decode(token, keys, algorithms=self.algorithms)
            self.claims.validate(verified.claims)
            return principal_from_claims(verified.claims, self.settings)


@contextmanager
def failing_closed() -> Iterator[None]:
    """Turn every failure while reading or verifying a token into one `NotAuthenticated`.

    The token is the caller's to shape, and the JOSE library's failure modes on hostile
    headers (`["alg"]`, `{"crit": 5}`, huge numbers, junk nested deep) are not a closed set
    of exception types: any exception here means "not authenticated", never a 500. Logged
    once at INFO, without a traceback; the caller only ever sees the stable message.
    """
    try:
        yield
    except NotAuthenticated as error:
        log.info("rejected bearer token: %s", _reason(error))
        raise NotAuthenticated() from None
    except Exception as error:  # see the docstring: fail closed on anything
        log.info("rejected bearer token: %s", _reason(error))
        raise NotAuthenticated() from None


def _reason(error: Exception) -> str:
    text = str(error) if str(error) != NotAuthenticated.message else ""
    reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return reason[:200]  # the text may quote the caller's input


class JwksCache:
    """The identity provider's signing keys: fetched on first use, refreshed rarely.

    Concurrent refreshes share one fetch, and a fetch happens at most once per
    `MIN_REFRESH_SECONDS`, so a flood of tokens with unknown `kid`s cannot hammer the IdP.
    """

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.http = http
        self.clock = clock
        self.lock = asyncio.Lock()
        self.keys: KeySet | None = None
        self.fetched_at = 0.0
        self.attempted_at: float | None = None
        self.jwks_url = settings.oidc_jwks_url

    async def current(self) -> KeySet:
        if self.keys is None or self.clock() - self.fetched_at > KEYS_MAX_AGE_SECONDS:
            return await self.refresh()
        return self.keys

    async def refresh(self) -> KeySet:
        """Freshly fetched keys if a fetch is allowed now; else the ones we have."""
        async with self.lock:
            # Requests queued behind a fetch find it just attempted, and take its result.
            if self.attempted_at is None or self.clock() - self.attempted_at >= MIN_REFRESH_SECONDS:
                try:
                    self.keys = await self._fetch()
                    self.fetched_at = self.clock()
                except (httpx.HTTPError, JoseError, ValueError, TypeError, KeyError) as error:
                    # Keep serving the keys we have; the next refresh may do better.
                    log.warning("could not fetch the identity provider's keys: %r", error)
                finally:
                    self.attempted_at = self.clock()  # from the end: slow fetches cannot overlap
            if self.keys is None:
                raise NotAuthenticated()
            return self.keys

    async def _fetch(self) -> KeySet:
        if self.jwks_url is None:
            issuer = str(self.settings.oidc_issuer).rstrip("/")
            discovery = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            jwks_uri = discovery["jwks_uri"]
            if not isinstance(jwks_uri, str):
                raise TypeError("jwks_uri in the discovery document is not a string")
            self.jwks_url = jwks_uri
        return KeySet.import_key_set(await self._get_json(self.jwks_url))  # type: ignore[arg-type]

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self.http.get(url, timeout=FETCH_TIMEOUT_SECONDS)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise TypeError(f"{url} did not return a JSON object")
        return document


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer` header; `None` when there is no header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise NotAuthenticated()
    return token


def principal_from_claims(
    claims: Mapping[str, Any], settings: Settings, default_roles: frozenset[str] = frozenset()
) -> Principal:
    """The principal verified (or, in insecure-dev, merely decoded) claims describe."""
    owner = parse_owner(claims.get(settings.oidc_owner_claim))
    roles = _claim_at(claims, settings.oidc_roles_claim)
    if roles is None:
        return Principal(owner, default_roles)
    if not isinstance(roles, list):
        return Principal(owner, frozenset())
    return Principal(owner, frozenset(role for role in roles if isinstance(role, str)))


def parse_owner(value: object) -> UUID:
    """A UUID string, or Keycloak's base64 of an AD objectGUID; anything else is refused.

    Keycloak passes AD's objectGUID through as base64 of its 16 raw bytes, which AD stores in
    Microsoft's GUID layout (first three fields little-endian), hence `bytes_le`. OS2mo reads
    the claim the same way, so both see one owner.
    """
    if not isinstance(value, str) or not value.isascii():  # UUID() reads any Unicode digit
        raise NotAuthenticated()
    try:
        owner = UUID(value)
    except ValueError:
        owner = _from_base64_guid(value)
    if owner.int == 0:  # the nil UUID owns the built-in `mo` namespace; no caller may be it
        raise NotAuthenticated()
    return owner


def _from_base64_guid(value: str) -> UUID:
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise NotAuthenticated() from error
    if len(raw) != 16:
        raise NotAuthenticated()
    return UUID(bytes_le=raw)


def _claim_at(claims: Mapping[str, Any], dotted_path: str) -> object | None:
    value: object = claims
    for name in dotted_path.split("."):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


def _unverified_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise NotAuthenticated()
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError) as error:  # RecursionError: "[[[[..." payloads
        raise NotAuthenticated() from error
    if not isinstance(claims, dict):
        raise NotAuthenticated()
    return claims
