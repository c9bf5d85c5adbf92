"""What users see of a GraphQL error, and what the log keeps of it.

Ariadne hands every error of an answer to its logger (`logger.error(error,
exc_info=error)`) and then to the error formatter. Most errors are refusals meant for
the caller (a document that does not parse or validate, a bad variable, a `BrokerError`):
they are answers, not faults, so `ErrorLog` keeps them at DEBUG without a traceback. Only
an error nobody expected (a bug) is logged at ERROR with its traceback, once, and
`format_error` shows the caller a fixed message instead of its text.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError
from redis.exceptions import OutOfMemoryError

from broker import errors
from broker.metrics import Metrics
from broker.storage.connection import UNAVAILABLE

log = logging.getLogger("broker.graphql")

INTERNAL = "Internal server error"


def unexpected(error: GraphQLError) -> bool:
    """Whether `error` comes from a bug rather than from the request or the store."""
    original = error.original_error
    return original is not None and not isinstance(
        original, (GraphQLError, errors.BrokerError, *UNAVAILABLE)
    )


def format_error(
    error: GraphQLError, debug: bool = False, metrics: Metrics | None = None
) -> dict[str, Any]:
    """Show users the refusals meant for them; hide internals behind a stable message."""
    original = error.original_error
    if isinstance(original, OutOfMemoryError):
        # A script refused at its first write: nothing of it was stored.
        log.warning("Redis is full (maxmemory) in %s: %s", error.path, original)
        if metrics is not None:
            metrics.store_full.inc()
        error = GraphQLError(str(errors.StoreFull()), path=error.path)
    elif isinstance(original, errors.NotReplicated):
        if metrics is not None:
            metrics.not_replicated.inc()
    elif isinstance(original, UNAVAILABLE):
        log.warning("Redis error in %s: %s", error.path, original)
        if metrics is not None:
            metrics.redis_errors.labels("api").inc()
        error = GraphQLError(str(errors.StorageUnavailable()), path=error.path)
    elif unexpected(error):
        # A ValueError (or anything else) from a bug must not show its text to users.
        error = GraphQLError(INTERNAL, path=error.path)
    return dict(error.formatted)


class ErrorLog(logging.LoggerAdapter[logging.Logger]):
    """The logger Ariadne is given (`GraphQL(logger=...)`, `handle_query_result(logger=...)`)."""

    def __init__(self) -> None:
        super().__init__(log, {})

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        # Ariadne calls `error(error, exc_info=error)`, one call per error of an answer.
        if isinstance(msg, GraphQLError) and unexpected(msg):
            self.logger.error("internal error in %s", msg.path, exc_info=msg.original_error)
        elif isinstance(msg, GraphQLError):
            self.logger.debug("refused: %s", msg.message)
        else:
            self.logger.error(msg, *args, **kwargs)
