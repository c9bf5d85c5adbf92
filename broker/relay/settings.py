"""The relay's own settings (`BROKER_RELAY_*`); it reaches Redis with the broker's settings."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# OS2mo's object types: the routing keys of its `mo` events.
MO_ROUTING_KEYS = (
    "address",
    "association",
    "class",
    "engagement",
    "facet",
    "itsystem",
    "ituser",
    "kle",
    "leave",
    "manager",
    "org_unit",
    "owner",
    "person",
    "related_unit",
    "rolebinding",
)


class Source(StrEnum):
    GRAPHQL = "graphql"
    AMQP = "amqp"


class RelaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BROKER_RELAY_", extra="ignore", allow_inf_nan=False
    )

    source: Source = Source.GRAPHQL
    routing_keys: Annotated[list[str], NoDecode] = Field(
        default=list(MO_ROUTING_KEYS), description="Routing keys (object types) to relay."
    )

    # GraphQL source: OS2mo's event API, with OIDC client credentials.
    os2mo_url: str | None = Field(
        default=None, description="OS2mo's GraphQL endpoint, e.g. http://mo:5000/graphql/v25."
    )
    auth_server: str | None = Field(
        default=None, description="Keycloak base URL, e.g. http://keycloak:8080/auth."
    )
    auth_realm: str = "mo"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    parallelism: int = Field(default=1, ge=1, le=64, description="Fetchers per routing key.")
    user_key: str = Field(
        default="event-broker-relay",
        min_length=1,
        description="Prefix of the relay's listeners upstream: `<user_key>-<routing key>`.",
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Pause after an empty fetch upstream."
    )

    # AMQP source: OS2mo's exchange on RabbitMQ.
    amqp_url: SecretStr | None = None
    amqp_exchange: str = Field(default="os2mo", min_length=1)
    amqp_queue: str = Field(default="event-broker-relay", min_length=1)
    amqp_prefetch: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _lists_from_commas(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("routing_keys"), str):
            data["routing_keys"] = [
                key.strip() for key in data["routing_keys"].split(",") if key.strip()
            ]
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.routing_keys:
            raise ValueError("BROKER_RELAY_ROUTING_KEYS names no routing key")
        if self.source is Source.GRAPHQL:
            missing = [
                f"BROKER_RELAY_{name.upper()}"
                for name in ("os2mo_url", "auth_server", "client_id", "client_secret")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"BROKER_RELAY_SOURCE=graphql needs {', '.join(missing)}")
        if self.source is Source.AMQP and self.amqp_url is None:
            raise ValueError("BROKER_RELAY_SOURCE=amqp needs BROKER_RELAY_AMQP_URL")
        return self

    @property
    def token_url(self) -> str:
        """Keycloak's token endpoint for the realm."""
        base = str(self.auth_server).rstrip("/")
        return f"{base}/realms/{self.auth_realm}/protocol/openid-connect/token"
