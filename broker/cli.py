"""`broker serve`: run the broker, with an embedded Redis when none is configured."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from pydantic import ValidationError
from redis.exceptions import RedisError

from broker import logs
from broker.auth import check_bind_address
from broker.http import metrics_access
from broker.http.protocol import BoundedHttpToolsProtocol
from broker.settings import AuthMode, Settings
from broker.storage.connection import connect
from broker.storage.embedded import EmbeddedRedis
from broker.storage.keys import Keys
from broker.storage.layout import LayoutRefused, claim_layout

log = logging.getLogger("broker")

# Settings whose values a start-up error must not repeat (passwords, secrets, tokens).
SECRET_WORDS = ("password", "secret", "token")


def load_settings() -> Settings:
    """Settings from the environment; a bad one stops start-up with one line saying why."""
    try:
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "_".join(str(part) for part in problem["loc"])
            if not name:
                # A check across settings: its input is all of them, secrets included.
                sys.exit(f"invalid settings: {problem['msg']}")
            where = f"BROKER_{name.upper()}"
            if any(word in name for word in SECRET_WORDS):
                sys.exit(f"invalid setting {where}: {problem['msg']}")
            sys.exit(f"invalid setting {where}: {problem['msg']} (got {problem.get('input')!r})")
        raise


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at Redis: the configured one, or a private embedded server."""
    if settings.external_redis:
        yield settings
        return
    try:
        server = EmbeddedRedis(settings.data_dir, settings.redis_server_binary).start()
    except RuntimeError as error:
        sys.exit(f"cannot start the embedded Redis server: {error}")
    log.warning(
        "BROKER_REDIS_URL is unset: started an embedded server (%s) with data in %s",
        server.binary.name,
        server.data_dir,
    )
    # Worker processes read their settings from the environment again.
    os.environ["BROKER_REDIS_URL"] = server.url
    try:
        yield settings.model_copy(update={"redis_url": server.url})
    finally:
        server.stop()


async def _claim_layout(settings: Settings) -> None:
    redis = connect(settings)
    try:
        await claim_layout(redis, Keys(settings.key_prefix, settings.ingest_shards))
    finally:
        await redis.aclose()


def check_layout(settings: Settings) -> None:
    """Refuse, in one line, to start on data in a storage layout this version does not read.

    The app's start-up checks it too; doing it here first keeps a traceback out of the
    log. An unreachable Redis is left to the app (it starts unready and retries).
    """
    try:
        asyncio.run(_claim_layout(settings))
    except LayoutRefused as error:
        log.error("refusing to start: %s", error)
        sys.exit(1)
    except (RedisError, OSError):
        pass


def _exit_cleanly(signum: int, frame: object) -> None:
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; exiting here
    # instead of dying by the signal lets the embedded server stop cleanly too.
    sys.exit(0)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What `serve` and `relay` run uvicorn with."""
    return dict(
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        log_level=settings.log_level.lower(),
        # Logging is ours (broker/logs.py): one line per request, uvicorn's through it.
        log_config=None,
        access_log=False,
        # A request's head is bounded before the app sees it.
        http=BoundedHttpToolsProtocol,
    )


def serve(host: str, port: int, workers: int) -> None:
    settings = load_settings()
    logs.configure(settings)
    try:
        check_bind_address(settings, host)
    except ValueError as error:
        sys.exit(str(error))
    if settings.auth is AuthMode.INSECURE_DEV:
        log.warning(
            "BROKER_AUTH=insecure-dev: callers are NOT authenticated; token claims are trusted"
        )
    if metrics_access.is_closed(settings):
        log.warning(metrics_access.CLOSED_WARNING)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    with redis_for(settings) as settings:
        check_layout(settings)
        uvicorn.run(
            "broker.main:app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **_uvicorn_options(settings),
        )


def relay(host: str, port: int) -> None:
    """Copy OS2mo's events into the broker's `mo` namespace; health and metrics on host:port."""
    from broker.relay.settings import RelaySettings

    settings = load_settings()
    logs.configure(settings)
    # One INFO line per upstream call would drown the relay's own lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.redis_url is None:
        sys.exit("broker relay writes to the broker's Redis: set BROKER_REDIS_URL")
    try:
        relay_settings = RelaySettings()
    except ValidationError as error:
        problem = error.errors()[0]
        where = "BROKER_RELAY_" + "_".join(str(part) for part in problem["loc"]).upper()
        if not problem["loc"]:
            where = "relay settings"
        sys.exit(f"invalid setting {where}: {problem['msg']}")
    from broker.relay.service import create_relay_app

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    uvicorn.run(
        create_relay_app(settings, relay_settings),
        host=host,
        port=port,
        **_uvicorn_options(settings),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the GraphQL API")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1)
    copy = commands.add_parser("relay", help="copy OS2mo's events into the broker's mo")
    copy.add_argument("--host", default="127.0.0.1", help="health and metrics address")
    copy.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    if args.command == "relay":
        relay(args.host, args.port)
    else:
        serve(args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
