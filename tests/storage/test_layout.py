"""The stored layout version: a fresh Redis gets it, data in another layout is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from broker.app import create_app
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis
from broker.storage.keys import Keys
from broker.storage.layout import LayoutRefused
from broker.storage.records import LAYOUT
from tests.conftest import FAST
from tests.processes import broker_env
from tests.stepped import stepped_broker

pytestmark = pytest.mark.cluster
CONFIG = Keys("broker", Settings().ingest_shards).config


async def _snapshot(redis: Any) -> dict[str, Any]:
    return {key: await redis.dump(key) for key in sorted(await redis.keys("*"))}


async def _start(redis: Any) -> None:
    app = create_app(Settings(**FAST, ingest_shards=2), redis=redis)
    async with app.router.lifespan_context(app):
        pass


async def test_a_fresh_redis_gets_the_current_layout_and_starts_again_on_it(redis: Any) -> None:
    async with stepped_broker(redis):
        assert await redis.hget(CONFIG, "layout") == str(LAYOUT)
    await _start(redis)  # its own data: read as it is
    assert await redis.hget(CONFIG, "layout") == str(LAYOUT)


OLD_RECORD = "1|10000|0|1733100000000|0|1733100000000-5|20971520000|1733100000000-1"
LISTENER = "00000000-0000-4000-8000-000000000001"
OLD_EVENTS = f"broker:{{broker:l:{LISTENER}}}:events"


async def _plant_old_listener(redis: Any, config: dict[str, str], pending: bool) -> None:
    await redis.hset(CONFIG, mapping=config)
    await redis.hset("broker:{broker:registry}:listeners", LISTENER, "{}")
    await redis.hset(f"broker:{{broker:l:{LISTENER}}}:meta", "gen", "5")
    if pending:
        await redis.hset(OLD_EVENTS, "subject", OLD_RECORD)


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        ({"ingest_shards": "2"}, "1 (1 listeners hold events)"),  # before layouts had versions
        ({"ingest_shards": "2", "layout": "1"}, "1"),
        ({"ingest_shards": "2", "layout": str(LAYOUT + 1)}, str(LAYOUT + 1)),  # a newer one's
    ],
)
async def test_events_in_another_layout_are_refused_with_a_clear_message_and_left_alone(
    redis: Any, stored: dict[str, str], named: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _plant_old_listener(redis, stored, pending=True)
    before = await _snapshot(redis)
    with pytest.raises(LayoutRefused) as refused:
        await _start(redis)
    assert f"storage layout {named}, and this version of the broker reads layout {LAYOUT}" in (
        str(refused.value)
    )
    assert "refusing to start" in caplog.text
    assert await _snapshot(redis) == before


async def test_drained_data_of_the_first_layout_is_taken_over(redis: Any) -> None:
    await _plant_old_listener(redis, {"ingest_shards": "2"}, pending=False)
    await redis.hset("broker:{broker:registry}:listeners", "not-a-uuid", "{}")
    await _start(redis)
    assert await redis.hget(CONFIG, "layout") == str(LAYOUT)
    assert await redis.hget("broker:{broker:registry}:listeners", LISTENER) == "{}"


@pytest.mark.slow
def test_broker_serve_refuses_old_data_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        with SyncRedis.from_url(server.url) as client:
            client.hset(CONFIG, "ingest_shards", "16")
            client.hset("broker:{broker:registry}:listeners", LISTENER, "{}")
            client.hset(OLD_EVENTS, "subject", OLD_RECORD)
        result = subprocess.run(
            [sys.executable, "-m", "broker", "serve"],
            env=broker_env(BROKER_REDIS_URL=server.url, BROKER_AUTH="insecure-dev"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    refusals = [line for line in result.stderr.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1
    assert "storage layout 1 (1 listeners hold events), and this version" in refusals[0]
    assert "docs/operations.md" in refusals[0]
