"""insecure-dev serves Keycloak's client-credentials token endpoint; oidc does not."""

from __future__ import annotations

import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from httpx import ASGITransport

from broker.devtokens import owner_of
from tests.clients import ME, declare
from tests.conftest import Api, MakeApi

TOKEN_PATH = "/auth/realms/mo/protocol/openid-connect/token"


def keycloak_client(api: Api, client_id: str) -> AsyncOAuth2Client:
    """The OAuth2 client FastRAMQPI builds, pointed at the broker as its auth server."""
    return AsyncOAuth2Client(
        base_url="http://broker",
        client_id=client_id,
        client_secret="anything",
        grant_type="client_credentials",
        token_endpoint=f"http://broker{TOKEN_PATH}",
        token={"expires_at": -1, "access_token": ""},
        transport=ASGITransport(app=api.app),
    )


async def test_a_fastramqpi_style_client_gets_a_token_that_names_its_own_owner(
    api: Api,
) -> None:
    async with keycloak_client(api, "sd-integration") as client:
        response = await client.post("/graphql/v25", json={"query": ME})
    assert response.status_code == 200
    assert response.json()["data"]["me"]["actor"]["uuid"] == str(owner_of("sd-integration"))


async def test_the_answer_has_keycloaks_fields(api: Api) -> None:
    form = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    body = (await api.http.post(TOKEN_PATH, data=form)).json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["access_token"].count(".") == 2


async def test_a_development_token_holds_every_role(api: Api) -> None:
    async with keycloak_client(api, "roles") as client:
        api.http.headers["Authorization"] = f"Bearer {(await client.fetch_token())['access_token']}"
    listener = await declare(api, "person", "with-dev-token")  # needs create_event_listener
    assert listener


async def test_two_client_ids_are_two_owners_and_one_is_always_the_same() -> None:
    assert owner_of("a") == owner_of("a")
    assert owner_of("a") != owner_of("b")


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "client_id": "x"},
        {"grant_type": "client_credentials"},
        {},
    ],
)
async def test_other_grants_and_missing_client_ids_are_refused(
    api: Api, form: dict[str, str]
) -> None:
    response = await api.http.post(TOKEN_PATH, data=form)
    assert response.status_code in (400, 401)
    assert "error" in response.json()


async def test_the_endpoint_is_not_served_under_oidc(make_api: MakeApi) -> None:
    api = await make_api(auth="oidc", oidc_issuer="http://127.0.0.1:9/realms/mo")
    form = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    assert (await api.http.post(TOKEN_PATH, data=form)).status_code == 404
