"""Authentication against real signed tokens and a loopback identity provider."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import graphql
import httpx
import pytest
from ariadne import make_executable_schema
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from broker import auth
from broker.auth import (
    ROLES,
    DevAuthenticator,
    OidcAuthenticator,
    Principal,
    check_bind_address,
    is_admin,
    make_authenticator,
    may_emit_into_mo,
)
from broker.errors import NotAuthenticated, PermissionDenied
from broker.http.context import Context
from broker.http.gates import FIELD_ROLES
from broker.http.resolvers import BINDABLES
from broker.http.schema import schema_text
from broker.models import Caller
from broker.settings import DEV_OWNER, AuthMode, Settings
from tests.jwks_server import DISCOVERY_PATH, JWKS_PATH, IdentityProvider, b64url, sign, unsigned

OWNER = UUID("3f2ec2f5-8d1f-4a6e-9a7b-2b1c0d9e8f70")
AUDIENCE = "event-broker"


class Keys:
    """Signing keys made once per test session."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, {"kid": "rsa-1"})
        self.ec = ECKey.generate_key("P-256", {"kid": "ec-1"})
        self.rotated = RSAKey.generate_key(2048, {"kid": "rsa-2"})
        self.intruder = RSAKey.generate_key(2048, {"kid": "intruder"})
        # Same kid as a published key, different key material.
        self.impostor = RSAKey.generate_key(2048, {"kid": "rsa-1"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def identity_provider() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.start()
    yield provider
    provider.close()


@pytest.fixture
def idp(identity_provider: IdentityProvider, keys: Keys) -> IdentityProvider:
    identity_provider.reset()
    identity_provider.keys = [keys.rsa.as_dict(private=False), keys.ec.as_dict(private=False)]
    return identity_provider


@pytest.fixture(scope="session")
def tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # slow to build; one per session


@pytest.fixture
async def http(tls: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy from the environment must not see loopback traffic.
    async with httpx.AsyncClient(trust_env=False, verify=tls) as client:
        yield client


@pytest.fixture
def settings(idp: IdentityProvider) -> Settings:
    return Settings(auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_audience=AUDIENCE)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authenticator(
    settings: Settings, http: httpx.AsyncClient, clock: FakeClock
) -> OidcAuthenticator:
    return OidcAuthenticator(settings, http, clock=clock)


def claims_for(idp: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    """Keycloak-shaped access-token claims; an override of `None` drops the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "uuid": str(OWNER),
        "realm_access": {"roles": ["fetch_event", "send_event"]},
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def bearer(token: str) -> str:
    return f"Bearer {token}"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/realms/mo"


# Valid tokens -------------------------------------------------------------------------------


async def test_rs256_token_gives_owner_and_realm_roles(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    principal = await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    assert principal == Principal(OWNER, frozenset({"fetch_event", "send_event"}))


async def test_es256_token_is_accepted(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    principal = await authenticator.authenticate(bearer(sign(keys.ec, claims_for(idp))))
    assert principal.owner == OWNER


async def test_keys_come_from_the_discovery_document_once(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    for _ in range(3):
        await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    assert idp.requests == {DISCOVERY_PATH: 1, JWKS_PATH: 1}


async def test_configured_jwks_url_skips_discovery(
    idp: IdentityProvider, http: httpx.AsyncClient, keys: Keys
) -> None:
    settings = Settings(auth=AuthMode.OIDC, oidc_jwks_url=idp.jwks_url)
    authenticator = make_authenticator(settings, http)
    principal = await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    assert principal.owner == OWNER
    assert idp.requests == {JWKS_PATH: 1}


async def test_audience_list_containing_ours_is_accepted(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp, aud=["account", AUDIENCE]))
    assert (await authenticator.authenticate(bearer(token))).owner == OWNER


async def test_expiry_within_the_leeway_is_tolerated(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp, exp=int(time.time()) - 10))
    assert (await authenticator.authenticate(bearer(token))).owner == OWNER


async def test_roles_claim_path_is_configurable(
    idp: IdentityProvider, http: httpx.AsyncClient, keys: Keys
) -> None:
    settings = Settings(
        auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_roles_claim="resource_access.mo.roles"
    )
    claims = claims_for(idp, resource_access={"mo": {"roles": ["read_event", 7]}})
    principal = await make_authenticator(settings, http).authenticate(
        bearer(sign(keys.rsa, claims))
    )
    assert principal.roles == frozenset({"read_event"})


async def test_missing_roles_claim_means_no_roles(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp, realm_access=None))
    assert (await authenticator.authenticate(bearer(token))).roles == frozenset()


async def test_roles_claim_that_is_not_a_list_grants_nothing(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp, realm_access={"roles": "send_event"}))
    assert (await authenticator.authenticate(bearer(token))).roles == frozenset()


async def test_owner_claim_name_is_configurable(
    idp: IdentityProvider, http: httpx.AsyncClient, keys: Keys
) -> None:
    settings = Settings(auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_owner_claim="sub")
    token = sign(keys.rsa, claims_for(idp, sub=str(OWNER), uuid=None))
    assert (await make_authenticator(settings, http).authenticate(bearer(token))).owner == OWNER


async def test_owner_as_keycloak_base64_guid_is_read_little_endian(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    guid = base64.b64encode(OWNER.bytes_le).decode()
    principal = await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp, uuid=guid))))
    assert principal.owner == OWNER
    assert principal.owner != UUID(bytes=OWNER.bytes_le)


# Refused tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": -120}, id="expired"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"exp": "tomorrow"}, id="exp-not-a-number"),
        pytest.param({"nbf": 120}, id="not-yet-valid"),
        pytest.param({"iat": 120}, id="issued-in-the-future"),
        pytest.param({"iss": "https://evil.example/realms/mo"}, id="wrong-issuer"),
        pytest.param({"iss": None}, id="no-issuer"),
        pytest.param({"aud": "another-service"}, id="wrong-audience"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"uuid": None}, id="no-owner"),
        pytest.param({"uuid": "alice"}, id="owner-not-a-uuid"),
        pytest.param({"uuid": base64.b64encode(b"short").decode()}, id="owner-base64-not-16-bytes"),
        pytest.param({"uuid": 42}, id="owner-a-number"),
        pytest.param(  # Arabic-Indic digits, which UUID() reads as 1s
            {"uuid": "\u0661" * 8 + "-1111-4111-8111-" + "1" * 12}, id="owner-non-ascii-digits"
        ),
        pytest.param({"uuid": str(UUID(int=0))}, id="owner-the-nil-uuid"),
        pytest.param({"uuid": base64.b64encode(bytes(16)).decode()}, id="owner-the-nil-guid"),
    ],
)
async def test_token_with_bad_claims_is_refused(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys, overrides: dict[str, Any]
) -> None:
    now = int(time.time())
    shifted = {
        name: now + value if name in ("exp", "nbf", "iat") and isinstance(value, int) else value
        for name, value in overrides.items()
    }
    token = sign(keys.rsa, claims_for(idp, **shifted))
    with pytest.raises(NotAuthenticated, match=r"^User is not authenticated$"):
        await authenticator.authenticate(bearer(token))


async def test_token_signed_by_an_unpublished_key_is_refused(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(sign(keys.intruder, claims_for(idp))))


async def test_token_signed_by_another_key_under_a_published_kid_is_refused(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(sign(keys.impostor, claims_for(idp))))


async def test_tampered_payload_is_refused(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    header, _, signature = sign(keys.rsa, claims_for(idp)).split(".")
    forged = b64url(json.dumps(claims_for(idp, uuid=str(uuid4()))).encode())
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(f"{header}.{forged}.{signature}"))


@pytest.mark.parametrize("algorithms", [["RS256", "ES256"], ["RS256", "none"]])
async def test_alg_none_is_refused_even_when_configured(
    idp: IdentityProvider, http: httpx.AsyncClient, keys: Keys, algorithms: list[str]
) -> None:
    settings = Settings(auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_algorithms=algorithms)
    authenticator = make_authenticator(settings, http)
    await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))  # keys loaded
    token = unsigned({"alg": "none", "kid": "rsa-1"}, claims_for(idp))
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(token))


@pytest.mark.parametrize("algorithms", [["RS256", "ES256"], ["RS256", "HS256", "none"]])
async def test_hs256_signed_with_the_public_key_is_refused(
    idp: IdentityProvider, http: httpx.AsyncClient, keys: Keys, algorithms: list[str]
) -> None:
    # Algorithm confusion: the attacker uses the published RSA key as an HMAC secret.
    settings = Settings(auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_algorithms=algorithms)
    authenticator = make_authenticator(settings, http)
    public_pem = keys.rsa.as_pem(private=False)
    header = b64url(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    payload = b64url(json.dumps(claims_for(idp)).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(f"{header}.{payload}.{b64url(mac)}"))


async def test_hs256_is_refused_even_with_a_shared_key_published_and_configured(
    idp: IdentityProvider, http: httpx.AsyncClient
) -> None:
    shared = OctKey.import_key(b"s" * 32, {"kid": "shared"})
    idp.keys.append(shared.as_dict(private=True))
    settings = Settings(
        auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_algorithms=["RS256", "HS256"]
    )
    token = jwt.encode({"alg": "HS256", "kid": "shared"}, claims_for(idp), shared)
    with pytest.raises(NotAuthenticated):
        await make_authenticator(settings, http).authenticate(bearer(token))


async def test_algorithm_outside_the_configured_list_is_refused(
    idp: IdentityProvider, http: httpx.AsyncClient, keys: Keys
) -> None:
    settings = Settings(auth=AuthMode.OIDC, oidc_issuer=idp.issuer, oidc_algorithms=["RS256"])
    with pytest.raises(NotAuthenticated):
        await make_authenticator(settings, http).authenticate(
            bearer(sign(keys.ec, claims_for(idp)))
        )


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer   ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer " + "x" * 20_000,
    ],
)
async def test_missing_or_malformed_header_is_refused(
    authenticator: OidcAuthenticator, idp: IdentityProvider, authorization: str | None
) -> None:
    with pytest.raises(NotAuthenticated, match=r"^User is not authenticated$"):
        await authenticator.authenticate(authorization)


async def test_bearer_scheme_is_case_insensitive(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp))
    assert (await authenticator.authenticate(f"bearer {token}")).owner == OWNER


# Hostile tokens: never a 500, always one INFO line ------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
HEADER_NAMES = ["alg", "kid", "typ", "crit", "jwk", "jku", "x5c", "x5u", "b64", "enc", "zip"]
# Headers shaped like a JWS header, with values of every JSON type.
headers = st.dictionaries(
    st.sampled_from(HEADER_NAMES), json_values, max_size=4
) | st.fixed_dictionaries(
    {
        "alg": st.sampled_from(["ES256", "RS256", "none", "HS256"]),
        "kid": st.just("ec-1") | json_values,
    },
    optional={"crit": json_values, "b64": json_values, "jwk": json_values},
)
CLAIM_NAMES = ["iss", "aud", "exp", "nbf", "iat", "uuid", "realm_access", "sub", "jti"]
payloads = st.dictionaries(st.sampled_from(CLAIM_NAMES), json_values, max_size=5)


def _segment(value: Any) -> str:
    return b64url(json.dumps(value).encode())


segments = (
    (headers | json_values).map(_segment)
    | st.binary(max_size=40).map(b64url)
    | st.text(max_size=30)
    | st.just("!!not base64!!")
)


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    parts = [draw(segments), draw((payloads | json_values).map(_segment) | segments)]
    parts.append(draw(st.binary(max_size=80).map(b64url) | st.text(max_size=10)))
    dots = draw(st.sampled_from([".", ".", "..", ""]))
    return dots.join(parts)


def _rejections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "broker.auth"]


@hypothesis_settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(token=hostile_tokens())
async def test_any_hostile_token_is_not_authenticated_and_logged_once_at_info(
    authenticator: OidcAuthenticator,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
    token: str,
) -> None:
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, "broker.auth"),
        pytest.raises(NotAuthenticated, match=r"^User is not authenticated$"),
    ):
        await authenticator.authenticate(bearer(token))
    [record] = _rejections(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(claims=payloads)
async def test_signed_token_with_any_claims_is_refused_cleanly_or_accepted(
    authenticator: OidcAuthenticator,
    idp: IdentityProvider,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
    claims: dict[str, Any],
) -> None:
    caplog.clear()
    token = sign(keys.ec, {**claims_for(idp), **claims})
    with caplog.at_level(logging.INFO, "broker.auth"):
        try:
            principal = await authenticator.authenticate(bearer(token))
        except NotAuthenticated as error:
            assert str(error) == "User is not authenticated"
            [record] = _rejections(caplog)
            assert record.levelno == logging.INFO and record.exc_info is None
        else:
            assert principal.owner.int != 0 and not _rejections(caplog)


@pytest.mark.parametrize("header", [["alg"], "alg", {"crit": 5}, {"alg": "ES256", "crit": [5]}])
async def test_malformed_headers_seen_in_the_wild_are_not_authenticated(
    authenticator: OidcAuthenticator, idp: IdentityProvider, header: Any
) -> None:
    token = f"{_segment(header)}.{_segment(claims_for(idp))}.c2lnbmF0dXJl"
    with pytest.raises(NotAuthenticated, match=r"^User is not authenticated$"):
        await authenticator.authenticate(bearer(token))


@hypothesis_settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    token=hostile_tokens()
    | payloads.map(lambda claims: unsigned({"alg": "none"}, claims))
    | st.fixed_dictionaries(
        {"uuid": st.just(str(OWNER))}, optional={"realm_access": json_values}
    ).map(lambda claims: unsigned({"alg": "none"}, claims))
)
async def test_insecure_dev_reads_any_claims_without_failing_loud(
    dev: DevAuthenticator, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO, "broker.auth"):
        try:
            principal = await dev.authenticate(bearer(token))
        except NotAuthenticated as error:
            assert str(error) == "User is not authenticated"
            [record] = _rejections(caplog)
            assert record.levelno == logging.INFO and record.exc_info is None
        else:
            assert all(isinstance(role, str) for role in principal.roles)


# Key rotation and refresh limits ------------------------------------------------------------


async def test_rotated_key_is_accepted_after_one_refresh(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys, clock: FakeClock
) -> None:
    await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    idp.keys = [keys.rotated.as_dict(private=False)]
    clock.now += auth.MIN_REFRESH_SECONDS

    principal = await authenticator.authenticate(bearer(sign(keys.rotated, claims_for(idp))))

    assert principal.owner == OWNER
    assert idp.requests[JWKS_PATH] == 2
    assert idp.requests[DISCOVERY_PATH] == 1


async def test_unknown_kids_fetch_keys_at_most_once_per_interval(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys, clock: FakeClock
) -> None:
    await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    for _ in range(25):
        with pytest.raises(NotAuthenticated):
            await authenticator.authenticate(bearer(sign(keys.intruder, claims_for(idp))))
    assert idp.requests[JWKS_PATH] == 1

    clock.now += auth.MIN_REFRESH_SECONDS
    for _ in range(25):
        with pytest.raises(NotAuthenticated):
            await authenticator.authenticate(bearer(sign(keys.intruder, claims_for(idp))))
    assert idp.requests[JWKS_PATH] == 2


async def test_unknown_kids_with_the_real_clock_do_not_hammer_the_provider(
    idp: IdentityProvider, settings: Settings, http: httpx.AsyncClient, keys: Keys
) -> None:
    authenticator = make_authenticator(settings, http)
    tokens = [bearer(sign(keys.intruder, claims_for(idp))) for _ in range(50)]
    results = await asyncio.gather(
        *(authenticator.authenticate(token) for token in tokens), return_exceptions=True
    )
    assert all(isinstance(result, NotAuthenticated) for result in results)
    assert idp.requests[JWKS_PATH] == 1


async def test_concurrent_refreshes_share_one_fetch(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys, clock: FakeClock
) -> None:
    await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    idp.keys.append(keys.rotated.as_dict(private=False))
    clock.now += auth.MIN_REFRESH_SECONDS
    token = bearer(sign(keys.rotated, claims_for(idp)))

    principals = await asyncio.gather(*(authenticator.authenticate(token) for _ in range(20)))

    assert {principal.owner for principal in principals} == {OWNER}
    assert idp.requests[JWKS_PATH] == 2


async def test_concurrent_first_requests_share_one_fetch(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    token = bearer(sign(keys.ec, claims_for(idp)))
    await asyncio.gather(*(authenticator.authenticate(token) for _ in range(20)))
    assert idp.requests == {DISCOVERY_PATH: 1, JWKS_PATH: 1}


async def test_old_keys_are_read_again_so_withdrawn_keys_stop_working(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys, clock: FakeClock
) -> None:
    token = bearer(sign(keys.rsa, claims_for(idp)))
    await authenticator.authenticate(token)
    idp.keys = [keys.ec.as_dict(private=False)]
    clock.now += auth.KEYS_MAX_AGE_SECONDS + 1
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(token)
    assert idp.requests[JWKS_PATH] == 2


# Identity provider trouble ------------------------------------------------------------------


async def test_unreachable_provider_means_not_authenticated(
    http: httpx.AsyncClient, idp: IdentityProvider, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(auth=AuthMode.OIDC, oidc_issuer=closed_port_url())
    authenticator = make_authenticator(settings, http)
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))
    assert "could not fetch the identity provider's keys" in caplog.text


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_provider_error_status_means_not_authenticated_until_it_recovers(
    authenticator: OidcAuthenticator,
    idp: IdentityProvider,
    keys: Keys,
    clock: FakeClock,
    status: int,
) -> None:
    token = bearer(sign(keys.rsa, claims_for(idp)))
    idp.status = status
    for _ in range(5):
        with pytest.raises(NotAuthenticated):
            await authenticator.authenticate(token)
    assert idp.requests[DISCOVERY_PATH] == 1  # failures are rate limited too

    idp.status = 200
    clock.now += auth.MIN_REFRESH_SECONDS
    assert (await authenticator.authenticate(token)).owner == OWNER


async def test_provider_outage_keeps_known_keys_working(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys, clock: FakeClock
) -> None:
    token = bearer(sign(keys.rsa, claims_for(idp)))
    await authenticator.authenticate(token)
    idp.status = 503
    clock.now += auth.KEYS_MAX_AGE_SECONDS + 1
    assert (await authenticator.authenticate(token)).owner == OWNER
    assert idp.requests[JWKS_PATH] == 2


async def test_garbage_key_set_means_not_authenticated(
    authenticator: OidcAuthenticator, idp: IdentityProvider, keys: Keys
) -> None:
    idp.keys = [{"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "rsa-1"}]
    with pytest.raises(NotAuthenticated):
        await authenticator.authenticate(bearer(sign(keys.rsa, claims_for(idp))))


# Roles --------------------------------------------------------------------------------------


SCHEMA = make_executable_schema(schema_text(), *BINDABLES)
# What a field can return that needs a role: the broker's data and pages of it.
DATA_TYPES = frozenset(
    {"Event", "FullEvent", "Listener", "Namespace", "FullEventPaged", "ListenerPaged"}
    | {"NamespacePaged"}
)


def test_role_table_is_os2mos() -> None:
    assert len(ROLES) == 14
    assert {role for role in FIELD_ROLES.values() if role} == ROLES - {"read_event_all"}


def test_every_field_that_returns_data_has_a_role_entry() -> None:
    document = graphql.parse((Path(__file__).parents[1] / "schema.graphql").read_text())
    fields = {
        f"{definition.name.value}.{field.name.value}"
        for definition in document.definitions
        if isinstance(
            definition, graphql.ObjectTypeDefinitionNode | graphql.ObjectTypeExtensionNode
        )
        for field in definition.fields or ()
        if definition.name.value in ("Query", "Mutation") or _named_type(field.type) in DATA_TYPES
    }
    assert fields == set(FIELD_ROLES)


def _named_type(node: graphql.TypeNode) -> str:
    while not isinstance(node, graphql.NamedTypeNode):
        node = node.type  # type: ignore[attr-defined]
    return node.name.value


class _Info:
    """Just enough of a resolve info for a resolver's role check."""

    field_nodes: tuple[Any, ...] = ()  # a mutation's selection (checked before it writes)

    def __init__(self, roles: frozenset[str]) -> None:
        self.context = Context(broker=None, caller=Caller(OWNER), roles=roles)  # type: ignore[arg-type]


def _resolve(field: str, roles: frozenset[str]) -> None:
    type_name, field_name = field.split(".")
    resolver = SCHEMA.type_map[type_name].fields[field_name].resolve  # type: ignore[attr-defined]
    assert resolver is not None
    try:
        result = resolver({"objects": []}, _Info(roles))
    except AttributeError:
        return  # a synchronous resolver got past its check and read the stand-in object
    if inspect.iscoroutine(result):
        result.close()  # the role check is done before the coroutine exists


@pytest.mark.parametrize(("field", "role"), [(f, r) for f, r in FIELD_ROLES.items() if r])
def test_field_needs_its_role(field: str, role: str) -> None:
    with pytest.raises(PermissionDenied, match=r"^No policy approved the access$"):
        _resolve(field, ROLES - {role} | {"admin", "os2mo"})
    _resolve(field, frozenset({role}))


def test_me_needs_no_role() -> None:
    _resolve("Query.me", frozenset())


def test_a_context_without_roles_is_refused_everywhere() -> None:
    fields = [field for field, role in FIELD_ROLES.items() if role]
    for field in fields:
        with pytest.raises(PermissionDenied):
            type_name, field_name = field.split(".")
            resolver = SCHEMA.type_map[type_name].fields[field_name].resolve  # type: ignore[attr-defined]
            info = _Info(frozenset())
            info.context = Context(broker=None, caller=Caller(OWNER))  # type: ignore[arg-type]
            resolver({"objects": []}, info)


def test_mo_emitters_by_role_or_by_owner() -> None:
    emitter = uuid4()
    settings = Settings(mo_emitters=[emitter], mo_emitter_role="os2mo")
    assert may_emit_into_mo(Principal(OWNER, frozenset({"os2mo"})), settings)
    assert may_emit_into_mo(Principal(emitter, frozenset()), settings)
    assert not may_emit_into_mo(Principal(OWNER, ROLES | {"admin"}), settings)


def test_admin_is_the_admin_role() -> None:
    settings = Settings(admin_role="broker-admin")
    assert is_admin(Principal(OWNER, frozenset({"broker-admin"})), settings)
    assert not is_admin(Principal(OWNER, ROLES | {"admin"}), settings)


# insecure-dev -------------------------------------------------------------------------------


@pytest.fixture
def dev(http: httpx.AsyncClient) -> DevAuthenticator:
    authenticator = make_authenticator(Settings(auth=AuthMode.INSECURE_DEV), http)
    assert isinstance(authenticator, DevAuthenticator)
    return authenticator


async def test_dev_without_a_token_is_the_dev_owner_with_every_role(dev: DevAuthenticator) -> None:
    principal = await dev.authenticate(None)
    assert principal == Principal(DEV_OWNER, ROLES | {"admin", "os2mo"})


async def test_dev_token_names_any_owner_without_a_signature(dev: DevAuthenticator) -> None:
    someone = uuid4()
    token = unsigned({"alg": "none"}, {"uuid": str(someone)})
    principal = await dev.authenticate(bearer(token))
    assert principal == Principal(someone, ROLES | {"admin", "os2mo"})


async def test_dev_token_with_roles_gets_only_those(dev: DevAuthenticator, keys: Keys) -> None:
    claims = {"uuid": str(OWNER), "realm_access": {"roles": ["read_event"]}}
    principal = await dev.authenticate(bearer(sign(keys.intruder, claims)))
    assert principal == Principal(OWNER, frozenset({"read_event"}))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer a.b",
        "Bearer " + unsigned({"alg": "none"}, {"sub": "alice"}),
        "Bearer " + unsigned({"alg": "none"}, {"uuid": "alice"}),
        "Bearer " + unsigned({"alg": "none"}, {"uuid": str(UUID(int=0))}),
        "Bearer x." + b64url(b"[1, 2]") + ".",
        "Bearer x." + b64url(b"[" * 5000) + ".",
        "Bearer " + unsigned({"alg": "none"}, {"uuid": str(OWNER), "padding": "x" * 20_000}),
        "Token abc",
        "",
    ],
)
async def test_dev_refuses_a_present_but_unusable_header(
    dev: DevAuthenticator, authorization: str
) -> None:
    with pytest.raises(NotAuthenticated):
        await dev.authenticate(authorization)


# Binding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_insecure_dev_may_listen_on_loopback(host: str) -> None:
    check_bind_address(Settings(auth=AuthMode.INSECURE_DEV), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "broker.example", ""])
def test_insecure_dev_refuses_other_interfaces(host: str) -> None:
    with pytest.raises(ValueError, match="BROKER_ALLOW_INSECURE_ON_PUBLIC_INTERFACE") as raised:
        check_bind_address(Settings(auth=AuthMode.INSECURE_DEV), host)
    assert "\n" not in str(raised.value)


def test_insecure_dev_on_a_public_interface_when_allowed() -> None:
    check_bind_address(
        Settings(auth=AuthMode.INSECURE_DEV, allow_insecure_on_public_interface=True), "::"
    )


def test_oidc_may_listen_anywhere() -> None:
    check_bind_address(
        Settings(auth=AuthMode.OIDC, oidc_jwks_url="http://127.0.0.1/certs"), "0.0.0.0"
    )
