"""Structured logs: JSON in production, readable in a terminal; one line per request.

Everything that logs through the standard library (uvicorn, redis-py, our modules)
goes through the same structlog renderer. Event subjects are never logged above
DEBUG: requests are logged by method, path and status only, and GraphQL errors
(whose messages can quote variables) reach the log at DEBUG only.

The request line is the one written for every request, so in JSON it skips structlog's
processor chain and the standard library's records: `RequestLines` renders the same
fields with orjson and writes the lines of one event-loop turn together.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.settings import LogFormat, Settings

REQUEST_ID_HEADER = "x-request-id"
# A caller's request id is kept only if it is short and plain (it goes into every line).
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes and scrapes are logged at DEBUG: they would drown the requests that matter.
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})

# Generated request ids: a random prefix per process and a counter, unique without a
# system call for randomness on every request.
_ID_PREFIX = os.urandom(8).hex()
_request_numbers = itertools.count(1)

requests_log = structlog.stdlib.get_logger("broker.requests")
_stdlib_requests_log = logging.getLogger("broker.requests")


def _orjson_text(data: Any, **kwargs: Any) -> str:
    return orjson.dumps(data, default=str).decode()


class RequestLines:
    """JSON request lines, rendered by orjson and written once per event-loop turn.

    A line costs a few microseconds instead of structlog's chain, a LogRecord and a write
    system call each: under load, the lines of every request that finished in one turn
    go out in one write, at the end of that turn (or at once outside an event loop).
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, level: str, request_id: str, **fields: Any) -> None:
        fields["event"] = "request"
        fields["request_id"] = request_id
        fields["level"] = level
        fields["logger"] = "broker.requests"
        # As structlog's TimeStamper(fmt="iso", utc=True).
        fields["timestamp"] = datetime.now(UTC).isoformat()[:-6] + "Z"
        self._pending.append(orjson.dumps(fields, default=str) + b"\n")
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()
        else:
            self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        binary = getattr(self.stream, "buffer", None)
        if binary is not None:
            self.stream.flush()  # whatever the standard library's handler wrote comes first
            binary.write(data)
            binary.flush()
        else:
            self.stream.write(data.decode())
            self.stream.flush()


# Set by `configure` for the JSON format; None: request lines go through structlog.
_request_lines: RequestLines | None = None


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: request lines still waiting for their turn's end go out first."""

    def emit(self, record: logging.LogRecord) -> None:
        if _request_lines is not None:
            _request_lines.flush()
        super().emit(record)


def configure(settings: Settings) -> None:
    """Route all logging through structlog; safe to call again (e.g. in each worker)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any]
    global _request_lines
    if _request_lines is not None:
        _request_lines.flush()
    _request_lines = None
    if settings.log_format is LogFormat.JSON:
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_text),
        ]
        _request_lines = RequestLines(sys.stderr)
        atexit.register(_request_lines.flush)
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # RequestLog writes the access log, with the request id.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


class RequestLog:
    """ASGI middleware: one log line per HTTP request, tagged with a request id.

    The id comes from the caller's `X-Request-ID` header or is generated; it is
    echoed in the response and bound to every log line written during the request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        if _SAFE_REQUEST_ID.match(given):
            request_id = given
        else:
            request_id = f"{_ID_PREFIX}{next(_request_numbers):016x}"
        status = 500  # if the app fails before it answers, uvicorn answers 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        # bind/reset rather than `bound_contextvars`: the same, without a generator per request.
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
            # The stdlib logger would drop the line anyway; checking first skips structlog's
            # processor chain (timestamp formatting and all), ~20 us per request.
            try:
                if not _stdlib_requests_log.isEnabledFor(level):
                    pass
                elif _request_lines is not None:
                    _request_lines.write(
                        "debug" if level == logging.DEBUG else "info",
                        request_id,
                        method=scope["method"],
                        path=path,
                        status=status,
                        duration_ms=round((time.perf_counter() - start) * 1000, 1),
                    )
                else:
                    requests_log.log(
                        level,
                        "request",
                        method=scope["method"],
                        path=path,
                        status=status,
                        duration_ms=round((time.perf_counter() - start) * 1000, 1),
                    )
            finally:
                structlog.contextvars.reset_contextvars(**tokens)
