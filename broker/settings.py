"""The broker's settings: one typed object, read from `BROKER_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self
from uuid import UUID

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Owner used for every caller while authentication is `insecure-dev` and the
# request carries no token (issue: security). Stable so a restart keeps ownership.
DEV_OWNER = UUID("00000000-0000-4000-8000-000000000001")
MIN_METRICS_TOKEN = 16  # characters: a guessable token would open /metrics to anyone
MIN_SESSION_SECRET = 32  # characters of the key that signs console sessions


class AuthMode(StrEnum):
    OIDC = "oidc"
    INSECURE_DEV = "insecure-dev"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    # Infinite or NaN durations pass `ge=0` checks and then fail at run time.
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="ignore", allow_inf_nan=False)

    # Storage
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis:// or rediss://). Unset: start an embedded server.",
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Password for Redis; overrides one in the URL."
    )
    redis_cluster: bool = Field(default=False, description="Talk to a Redis Cluster.")
    redis_max_connections: int = Field(
        default=200, ge=32, description="Connections to Redis per process (per node in a cluster)."
    )
    redis_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify Redis' TLS certificate (rediss://)."
    )
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Sentinels as host:port, comma-separated; the master comes from them.",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", min_length=1, description="The master set the sentinels watch."
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description="Password for the sentinels (the master's is BROKER_REDIS_PASSWORD).",
    )
    redis_sentinel_tls: bool = Field(
        default=False, description="Talk TLS to the sentinels and the master."
    )
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas every confirmed write must reach before the broker confirms it; "
        "unset: 1 with Sentinel (a failover then loses nothing confirmed), else 0.",
    )
    redis_wait_timeout_ms: int = Field(
        default=2000, ge=1, description="How long a confirmation waits for those replicas."
    )
    redis_allow_eviction: bool = Field(
        default=False,
        description="Start even when Redis may evict keys (maxmemory-policy not noeviction).",
    )
    redis_server_binary: Path | None = Field(
        default=None,
        description="redis-server/valkey-server for the embedded engine; default: bundled.",
    )
    data_dir: Path = Field(
        default=Path("data"), description="Where the embedded engine keeps its files."
    )
    key_prefix: str = Field(
        default="broker", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    ingest_shards: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Ingest streams topics are spread over. Fixed for the data's lifetime.",
    )

    # Delivery
    retry_min_seconds: float = Field(default=180.0, gt=0)
    retry_max_seconds: float = Field(default=61200.0, gt=0)
    fetch_max_wait_seconds: float = Field(default=30.0, ge=0)
    fetch_default_wait_seconds: float = Field(
        default=0.0,
        ge=0,
        description="How long a fetch that sends no `wait` waits for an event (0: OS2mo's "
        "behaviour, answer at once); capped by fetch_max_wait_seconds.",
    )
    fetch_empty_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a process remembers that a listener had nothing to fetch "
        "(until an event for it is published); 0 turns this off.",
    )
    fanout_batch: int = Field(default=256, ge=1, le=10_000)
    fanout_block_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long one fan-out read waits for new events."
    )
    fanout_claim_idle_seconds: float = Field(
        default=30.0, gt=0, description="Ingest entries idle this long are taken over."
    )

    # Security
    auth: AuthMode = AuthMode.INSECURE_DEV
    allow_insecure_on_public_interface: bool = False
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None
    oidc_audience: str | None = None
    oidc_owner_claim: str = "uuid"
    oidc_roles_claim: str = "realm_access.roles"
    oidc_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256"]
    admin_role: str = "admin"
    mo_emitter_role: str = "os2mo"
    mo_emitters: Annotated[list[UUID], NoDecode] = []
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token (16+ characters) that GET /metrics requires; unset: open "
        "in insecure-dev, refused (403) in oidc unless metrics_public.",
    )
    metrics_public: bool = Field(
        default=False, description="In oidc mode without a metrics token, serve /metrics to anyone."
    )
    explorer: bool = True
    introspection: bool = True
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_query_depth: int = Field(default=10, ge=2)
    max_aliases: int = Field(default=30, ge=1)
    max_selections: int = Field(
        default=1_000,
        ge=1,
        description="Selections one GraphQL document may make in all, fragments expanded.",
    )
    max_selections_per_set: int = Field(
        default=50, ge=1, description="Selections in one selection set of a GraphQL document."
    )
    max_repeated_fields: int = Field(
        default=3,
        ge=1,
        description="Fields one GraphQL document may select at one response-key path "
        "(`{ me { uuid } me { uuid } }` selects `me` twice), fragments expanded.",
    )
    max_namespaces_per_owner: int = Field(
        default=100,
        ge=1,
        description="Namespaces one owner may hold; further declares are refused.",
    )
    max_listeners_per_owner: int = Field(
        default=1000,
        ge=1,
        description="Listeners one owner may hold; further declares are refused.",
    )
    max_nested_per_request: int = Field(
        default=200,
        ge=1,
        description="Nested per-object fields that read Redis (e.g. `Listener.events`) one "
        "request may resolve; past it the request gets an error.",
    )
    max_objects_per_request: int = Field(
        default=10_000,
        ge=1,
        description="Listeners, namespaces and events one request may list in all; past it "
        "the request gets an error that says to page.",
    )

    # Operator console (/console)
    console: bool = Field(default=True, description="Serve the operator console on /console.")
    console_client_id: str | None = Field(
        default=None, description="OIDC client the console signs in with (oidc mode)."
    )
    console_client_secret: SecretStr | None = Field(
        default=None, description="That client's secret; unset for a public client (PKCE only)."
    )
    console_redirect_url: str | None = Field(
        default=None,
        description="Sign-in callback URL as the browser sees it; default: derived from the "
        "request (…/console/auth/callback). An https URL makes the session cookie Secure.",
    )
    console_session_secret: SecretStr | None = Field(
        default=None,
        description="Key signing the console's session cookie; the same on every pod.",
    )

    # Operation
    log_format: LogFormat = LogFormat.CONSOLE
    log_level: str = "INFO"
    stats_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often, at most, a process re-reads every listener's pending counts "
        "for /metrics and the console's sort by backlog (only while they are asked for).",
    )
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """`BROKER_REDIS_SENTINELS` as (host, port) pairs."""
        pairs = [sentinel.rpartition(":") for sentinel in self.redis_sentinels]
        return [(host.strip("[]"), int(port)) for host, _, port in pairs]

    @property
    def external_redis(self) -> bool:
        """Redis is configured (a URL or sentinels): no embedded server."""
        return self.redis_url is not None or bool(self.redis_sentinels)

    @model_validator(mode="before")
    @classmethod
    def _lists_from_commas(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in ("oidc_algorithms", "mo_emitters", "redis_sentinels"):
                if name in data:
                    data[name] = _split_list(data[name])
        return data

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _strip_token(cls, value: object) -> object:
        # As Prometheus trims its credentials file: a Secret made from a file with a
        # trailing newline still matches.
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.redis_url is not None and not self.redis_url.strip():
            raise ValueError("BROKER_REDIS_URL is empty; unset it to use the embedded server")
        for sentinel in self.redis_sentinels:
            host, _, port = sentinel.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"BROKER_REDIS_SENTINELS: {sentinel!r} is not host:port")
        if self.redis_sentinels and (self.redis_url is not None or self.redis_cluster):
            raise ValueError(
                "BROKER_REDIS_SENTINELS replaces BROKER_REDIS_URL and BROKER_REDIS_CLUSTER; "
                "set only one of them"
            )
        if self.redis_sentinels and "redis_wait_replicas" not in self.model_fields_set:
            # Sentinel is there to survive a master's failure; without WAIT a failover
            # drops confirmed writes the replica had not yet received.
            self.redis_wait_replicas = 1
        if self.retry_max_seconds < self.retry_min_seconds:
            raise ValueError("BROKER_RETRY_MAX_SECONDS must be >= BROKER_RETRY_MIN_SECONDS")
        if self.auth is AuthMode.OIDC and not (self.oidc_issuer or self.oidc_jwks_url):
            raise ValueError("BROKER_AUTH=oidc needs BROKER_OIDC_ISSUER or BROKER_OIDC_JWKS_URL")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN:
            raise ValueError(
                f"BROKER_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN} characters"
            )
        secret = self.console_session_secret
        if secret is not None and len(secret) < MIN_SESSION_SECRET:
            raise ValueError(
                f"BROKER_CONSOLE_SESSION_SECRET must be at least {MIN_SESSION_SECRET} characters"
            )
        if self.console_client_id and not self.console_session_secret:
            raise ValueError("BROKER_CONSOLE_CLIENT_ID needs BROKER_CONSOLE_SESSION_SECRET")
        if self.console_client_id and not self.oidc_issuer:
            raise ValueError("BROKER_CONSOLE_CLIENT_ID needs BROKER_OIDC_ISSUER (for discovery)")
        return self
