"""Check a GraphQL document's first sight (parse, limits, validation) in a separate process.

A first sight costs up to ~10 ms of CPU (broker/http/limits.py bounds it) and a hostile
caller can make every text new. On a thread of the server process that CPU still holds
the GIL against the event loop: with 4 such callers `/health/live`'s p99 was 48 ms
against 2.5 ms idle (benchmarks/document_cost.py); with the child, 4.0 ms against 3.1 ms.
So one child process (started with the server, or at the first first sight) does the
checking and sends back only plain data: the errors'
messages and positions, or that the text is clean. The server then parses a clean text
again (at most `MAX_TOKENS` tokens: ~1 ms) to execute it, and rebuilds the refusals as
GraphQLErrors that format exactly as the child's did. A document that only introspects is
also executed there: its answer depends on nothing else (see `_static_answer`).

The child builds the schema and the rules from `Checks`, which is all it is sent besides
the text, and keeps them per `Checks`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Collection, Hashable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from ariadne.graphql import validate_query
from ariadne.types import QueryParser
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    Source,
    execute,
    parse,
    validate,
)
from graphql.utilities import TypeInfo
from graphql.validation import ASTValidationRule

from broker import errors, inputs
from broker.http.limits import (
    INTROSPECTION_FIELDS,
    MAX_TOKENS,
    DocumentLimits,
    max_aliases,
    max_depth,
    max_fields,
    query_parser,
)
from broker.http.schema import schemas
from broker.http.slots import CallerSlots
from broker.settings import Settings

log = logging.getLogger(__name__)

# Where documents are checked if the child process cannot start at all.
_THREAD = ThreadPoolExecutor(1, thread_name_prefix="graphql-checker")

# Texts of one caller in the child at once (checking or queued there); the rest of that
# caller's first sights wait their turn in the server, behind nobody else's.
FIRST_SIGHTS_PER_CALLER = 2


@dataclass(frozen=True, slots=True)
class Checks:
    """What a document is checked against: one endpoint's schema, limits and rules."""

    seed: bool  # the seed's schema (`/graphql`) or the released one
    limits: DocumentLimits
    max_depth: int
    max_aliases: int
    introspection: bool

    @classmethod
    def of(cls, settings: Settings, seed: bool) -> Checks:
        return cls(
            seed,
            DocumentLimits.of(settings),
            settings.max_query_depth,
            settings.max_aliases,
            settings.introspection,
        )

    def schema(self) -> GraphQLSchema:
        released, seed = schemas()
        return seed if self.seed else released

    def rules(self) -> list[type[ASTValidationRule]]:
        """The validation rules besides the spec's, for Ariadne's `validation_rules`."""
        return _rules(self.max_depth, self.max_aliases)


@cache
def _rules(depth: int, aliases: int) -> list[type[ASTValidationRule]]:
    return [max_depth(depth), max_aliases(aliases), max_fields(), inputs.StringLiterals]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A GraphQLError as plain data: what its formatted form is made of."""

    message: str
    positions: tuple[int, ...] | None
    extensions: dict[str, Any] | None

    @classmethod
    def of(cls, error: GraphQLError) -> Refusal:
        positions = None if error.positions is None else tuple(error.positions)
        return cls(error.message, positions, error.extensions or None)

    def error(self, text: str) -> GraphQLError:
        """The error again, located in `text` as the original was."""
        source = Source(text) if self.positions else None
        return GraphQLError(
            self.message, source=source, positions=self.positions, extensions=self.extensions
        )


@dataclass(frozen=True, slots=True)
class StaticAnswer:
    """The answer of a document that only introspects: the same for every request of it."""

    operation: str | None  # the operation's name, which `operationName` may repeat
    body: bytes  # the JSON answer, as the endpoint sends it

    def of(self, operation_name: str | None) -> bytes | None:
        """The body for a request naming `operation_name`, or None (that one is an error)."""
        return self.body if operation_name in (None, self.operation) else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A text's check: refused by the parser (or the limits), or validated (clean or not)."""

    unparsed: Refusal | None
    invalid: tuple[Refusal, ...] = ()
    answer: StaticAnswer | None = None


def check(checks: Checks, text: str) -> Outcome:
    """Parse, limit-check and validate `text` as the endpoint of `checks` does (in the child)."""
    try:
        document = _parser(checks.limits)(None, {"query": text})
    except GraphQLError as error:
        return Outcome(Refusal.of(error))
    found: list[GraphQLError] = []

    def collect(
        schema: GraphQLSchema,
        document_ast: DocumentNode,
        rules: Collection[type[ASTValidationRule]] | None = None,
        max_errors: int | None = None,
        type_info: TypeInfo | None = None,
    ) -> list[GraphQLError]:
        found.extend(validate(schema, document_ast, rules=rules, max_errors=max_errors))
        return found

    # Ariadne's own composition of the rules (spec rules, ours, introspection's).
    validate_query(
        checks.schema(),
        document,
        checks.rules(),
        enable_introspection=checks.introspection,
        query_validator=collect,
    )
    if found:
        return Outcome(None, tuple(Refusal.of(error) for error in found))
    return Outcome(None, (), _static_answer(checks.schema(), document))


def _static_answer(schema: GraphQLSchema, document: DocumentNode) -> StaticAnswer | None:
    """The answer of `document` if it only introspects (one operation, no variables).

    Executing GraphiQL's introspection query costs ~8 ms of CPU, and its answer depends on
    the schema and the text alone: worked out here, it costs the event loop nothing.
    """
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1 or operations[0].variable_definitions:
        return None
    operation = operations[0]
    roots = operation.selection_set.selections
    if not all(isinstance(root, FieldNode) and root.name.value in _META for root in roots):
        return None
    if not any(
        isinstance(root, FieldNode) and root.name.value in INTROSPECTION_FIELDS for root in roots
    ):
        return None
    result = execute(schema, document)
    if not isinstance(result, ExecutionResult) or result.errors:
        return None  # not for an awaitable: closed unawaited, harmless (none resolve async)
    name = None if operation.name is None else operation.name.value
    return StaticAnswer(name, orjson.dumps({"data": result.data}))


_META = frozenset({"__schema", "__type", "__typename"})


@cache
def _parser(limits: DocumentLimits) -> QueryParser:
    return query_parser(limits=limits)


def parse_checked(text: str) -> DocumentNode:
    """A text the child found clean, parsed for execution (no limits to check again)."""
    return parse(text, max_lexical_tokens=MAX_TOKENS, max_comments=MAX_TOKENS)


# How often the child looks whether the server that started it is still there.
PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """In the child: end it when the server is gone (killed, or crashed).

    A ProcessPoolExecutor worker holds both ends of its task queue, so it never sees the
    server's end close and would wait forever, an orphan, after a `kill -9` of the server.
    A daemon thread watching the parent's pid is the portable way out.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class Checker:
    """The child process, shared by every endpoint of the server: one text at a time.

    A module-level resource like the worker thread it replaced: apps come and go (tests
    build hundreds), the child stays, and `concurrent.futures` ends it when Python exits.
    """

    def __init__(self, per_caller: int = FIRST_SIGHTS_PER_CALLER) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self.answered = False  # the child has checked a text
        self.on_thread = False  # the child could not start: check on `_THREAD`
        self.per_caller = per_caller
        self.slots = CallerSlots(per_caller)  # waiting or checking, per caller

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server has threads (and locks held by them) to leave behind.
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def check(self, checks: Checks, text: str, caller: Hashable) -> Outcome:
        """`check(checks, text)`, run in the child process once `caller` has fewer than
        `per_caller` texts there: one caller's burst cannot queue in front of everyone's."""
        async with self.slots.hold(caller):
            return await self._run(checks, text)

    async def _run(self, checks: Checks, text: str) -> Outcome:
        loop = asyncio.get_running_loop()
        if self.on_thread:
            return await loop.run_in_executor(_THREAD, check, checks, text)
        for _ in range(2):
            try:
                outcome = await loop.run_in_executor(self._executor(), check, checks, text)
                self.answered = True
                return outcome
            except BrokenProcessPool:  # the child died (killed, out of memory): start another
                self._pool = None
        if self.answered:  # it ran before: this text took it down, twice
            return Outcome(Refusal(str(errors.DocumentUnchecked()), None, None))
        # It never started: e.g. the server runs from a script without
        # `if __name__ == "__main__"`, which a spawned child runs again.
        log.error("the document checker process cannot start; checking on a thread instead")
        self.on_thread = True
        return await loop.run_in_executor(_THREAD, check, checks, text)

    def start(self) -> None:
        """Start the child now rather than at the first first sight (it takes ~1 s)."""
        self._executor().submit(os.getpid)

    async def pid(self) -> int:
        """The child's process id (starting the child if need be)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), os.getpid)


CHECKER = Checker()
