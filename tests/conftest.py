"""Fixtures: the same behavioural tests run on fakeredis and on a real server.

The real server is the embedded engine's binary (or `redis-server`), started by
the test session on a free port. If it cannot start, the tests that need it
fail; they are never skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from joserfc.jwk import ECKey
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from broker.app import create_app
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis

# Browser fixtures (and the hook that lets a failing test keep a screenshot).
from tests.browser import (  # noqa: F401
    browser_page,
    chromium,
    live_broker,
    network,
    pytest_runtest_makereport,
)
from tests.jwks_server import IdentityProvider
from tests.processes import Process
from tests.redis_cluster import LocalCluster

# A back-off far longer than any test, so "hidden until its back-off ends" holds however
# slow the machine (tests of the back-off itself use `backoff_api`). Short fan-out
# reads: fakeredis finishes a cancelled blocking read in a thread the loop waits for.
FAST = {"retry_min_seconds": 600, "retry_max_seconds": 600, "fanout_block_seconds": 0.05}
BACK_OFF = 1.0


_real_server_used = False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    global _real_server_used
    binary = os.environ.get("BROKER_TEST_REDIS_SERVER")
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), Path(binary) if binary else None)
    server.start()
    _real_server_used = True
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What the fault tests measured (lost and duplicated events), kept in the output."""
    from tests.history import REPORTS

    if REPORTS:
        terminalreporter.section("failover history")
        for line in REPORTS:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (BROKER_REQUIRE_REAL_REDIS=1) a run without the real server fails."""
    if os.environ.get("BROKER_REQUIRE_REAL_REDIS") == "1" and not _real_server_used:
        print("\nERROR: no test ran against a real Redis server", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests using `redis` run on fakeredis and a real server; marked `cluster`, also on one.

    The real-server and cluster runs are `slow`: `pytest -m "not slow"` checks every
    behaviour on fakeredis only, the full run on all three.
    """
    if "redis" in metafunc.fixturenames:
        backends = ["fake", pytest.param("real", marks=pytest.mark.slow)]
        if metafunc.definition.get_closest_marker("cluster"):
            backends.append(pytest.param("cluster", marks=pytest.mark.slow))
        metafunc.parametrize("redis", backends, indirect=True)


@pytest.fixture
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An empty database: fakeredis, the real session server, or a real 3-node cluster."""
    client: Any
    if request.param == "fake":
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    elif request.param == "real":
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        client = Redis.from_url(server.url, decode_responses=True)
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@dataclass
class Api:
    """A broker app with its lifespan running, spoken to over HTTP (ASGI)."""

    http: httpx.AsyncClient
    app: Any

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        path: str = "/graphql/v25",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await self.http.post(
            path, json={"query": query, "variables": variables or {}}, headers=headers
        )
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        """The `data` of a request that must succeed."""
        body = await self.post(query, variables, **kw)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def error(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> str:
        """The message of a request that must fail."""
        body = await self.post(query, variables, **kw)
        assert body.get("errors"), body
        message: str = body["errors"][0]["message"]
        return message


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(redis: Any) -> AsyncIterator[MakeApi]:
    """Start broker apps on the test's database; settings overridable per call."""
    stack: list[Any] = []

    async def make(**overrides: Any) -> Api:
        settings = Settings(**{**FAST, **overrides})
        app = create_app(settings, redis=redis)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker")
        stack.append((lifespan, http))
        return Api(http, app)

    yield make
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


@pytest.fixture
async def backoff_api(make_api: MakeApi) -> Api:
    """An app whose retry back-off is BACK_OFF seconds for every delivery."""
    return await make_api(retry_min_seconds=BACK_OFF, retry_max_seconds=BACK_OFF)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Broker processes a test starts; any still running at the end are killed."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


@pytest.fixture(scope="module")
def signing_key() -> ECKey:
    """The identity provider's signing key (EC P-256) for OIDC tests."""
    return ECKey.generate_key("P-256", {"kid": "test-1"})


@pytest.fixture(scope="module")
def provider(signing_key: ECKey) -> Iterator[IdentityProvider]:
    """A local identity provider on loopback serving `signing_key` as its JWKS."""
    idp = IdentityProvider()
    idp.keys = [signing_key.as_dict(private=False)]
    idp.start()
    yield idp
    idp.close()
