"""The broker reads the Redis server before trusting it with events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from broker.app import create_app
from broker.settings import Settings
from broker.storage.connection import connect
from broker.storage.embedded import EmbeddedRedis, free_port
from broker.storage.replication import Replication
from broker.storage.server import MIN_VERSION, ServerFacts, ServerRefused, ServerWatch, judge
from tests.conftest import FAST

GOOD = ServerFacts(
    name="redis",
    run_id="a",
    version=(7, 0, 15),
    eviction_policy="noeviction",
    aof_enabled=True,
    rdb_saves=False,
    replicas=0,
)


def _replace(facts: ServerFacts, **changes: Any) -> ServerFacts:
    fields = {name: getattr(facts, name) for name in ServerFacts.__slots__}
    return ServerFacts(**{**fields, **changes})


def test_a_server_older_than_the_scripts_need_is_refused_naming_the_minimum() -> None:
    with pytest.raises(ServerRefused, match=r"need Redis 7\.0\.0 or newer"):
        judge(_replace(GOOD, version=(6, 2, 14)), Settings())
    assert judge(_replace(GOOD, version=MIN_VERSION), Settings()) == []


def test_an_evicting_server_is_refused_unless_eviction_is_allowed() -> None:
    evicting = _replace(GOOD, eviction_policy="allkeys-lru")
    with pytest.raises(ServerRefused, match="silently drops pending events"):
        judge(evicting, Settings())
    assert judge(evicting, Settings(redis_allow_eviction=True)) == []


def test_no_persistence_and_no_replicas_is_warned_about() -> None:
    bare = _replace(GOOD, aof_enabled=False, rdb_saves=False)
    assert any("no persistence" in warning for warning in judge(bare, Settings()))
    assert judge(_replace(bare, replicas=1), Settings()) == []
    unknown = _replace(bare, rdb_saves=None)  # CONFIG GET disabled
    assert any("save schedule is unknown" in warning for warning in judge(unknown, Settings()))


def test_waiting_for_more_replicas_than_are_connected_is_warned_about() -> None:
    warnings = judge(_replace(GOOD, replicas=0), Settings(redis_wait_replicas=1))
    assert any("BROKER_REDIS_WAIT_REPLICAS=1" in warning for warning in warnings)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis", extra_args=("--rename-command", "CONFIG", "")) as s:
        yield s


async def test_a_server_without_config_get_is_read_from_info(server: EmbeddedRedis) -> None:
    redis = Redis.from_url(server.url, decode_responses=True)
    try:
        watch = ServerWatch(redis, Settings(), Replication())
        await watch.check()
        assert watch.problem is None
    finally:
        await redis.aclose()


@pytest.fixture
def evicting(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis", extra_args=("--maxmemory-policy", "allkeys-lru")) as s:
        yield s


async def test_the_app_refuses_to_start_on_an_evicting_server(
    evicting: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    redis = Redis.from_url(evicting.url, decode_responses=True)
    app = create_app(Settings(**FAST), redis=redis)
    try:
        with pytest.raises(ServerRefused, match="maxmemory-policy allkeys-lru"):
            await app.router.lifespan_context(app).__aenter__()
        assert "refusing to start" in caplog.text
        allowed = create_app(Settings(**FAST, redis_allow_eviction=True), redis=redis)
        lifespan = allowed.router.lifespan_context(allowed)
        await lifespan.__aenter__()
        await lifespan.__aexit__(None, None, None)
    finally:
        await redis.aclose()


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    yield free_port(), tmp_path / "redis"


async def test_a_server_replaced_by_an_evicting_one_makes_the_broker_unready(
    restartable: tuple[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    port, folder = restartable
    server = EmbeddedRedis(folder, port=port).start()
    redis = connect(Settings(redis_url=server.url))  # reconnects after the restart
    app = create_app(Settings(**FAST), redis=redis)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
    try:
        assert (await http.get("/health/ready")).status_code == 200
        server.stop()
        server = EmbeddedRedis(folder, port=port, extra_args=("--maxmemory-policy", "volatile-lru"))
        server.start()
        with caplog.at_level(logging.ERROR), pytest.raises(ServerRefused):
            await app.state.broker_state["server"].check()  # what the watcher does every 5 s
        ready = await http.get("/health/ready")
        assert ready.status_code == 503
        assert "volatile-lru" in ready.json()["status"]
    finally:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)
        await redis.aclose()
        server.stop()
