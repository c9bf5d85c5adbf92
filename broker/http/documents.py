"""A bounded cache of parsed and validated GraphQL documents, keyed by their text.

Clients send the same few documents with different variables, and validating
even a small document costs milliseconds, most of a request's CPU. Parsing and
validation depend only on the text (and the schema, fixed per endpoint), so the
result is reused; variables are still coerced on every request. A document that
validated cleanly is kept `Prepared`, with its compiled plan (broker/http/plans.py) when
it is simple enough for one.

A text's first sight costs up to ~10 ms of CPU (broker/http/limits.py bounds it), and a
hostile caller can make every text new. So `first_sight` parses, validates and plans it
on one dedicated worker thread: the event loop gets the GIL back every switch interval
(health, fetch and acknowledge keep answering), and first sights queue behind each other
instead of in front of everyone. Only the results are stored, on the loop; cache hits
never leave it.

A text is kept in the cache from its second sight on: before that, its outcome is only
handed to Ariadne's parse and validate of the same request. Real clients repeat their
few documents, while a hostile caller's texts are each new; keeping those would fill the
cache with long-lived syntax trees, and then every full garbage collection (which holds
the GIL for as long as it walks them, ~250 ms for a cache full of them) stalls the loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ariadne.graphql import parse_query, validate_query
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    validate,
)
from graphql.utilities import TypeInfo
from graphql.validation import ASTValidationRule

from broker.http.limits import DocumentLimits, query_parser
from broker.http.plans import Plan, compile_plan

MAX_DOCUMENTS = 256
MAX_SEEN_ONCE = 4096  # hashes of texts seen once, waiting for a second sight
MAX_HANDED = 64  # first-sight outcomes waiting for their request's parse (normally one)

# One thread for every endpoint: first sights run one at a time, whoever sends them.
_COMPILER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graphql-first-sight")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document that parsed and validated cleanly, and its plan if it is simple."""

    document: DocumentNode
    plan: Plan | None


@dataclass(slots=True)
class _Validated:
    document: DocumentNode  # kept, so that a recycled id(document) cannot match
    errors: list[GraphQLError]
    prepared: Prepared | None


class DocumentCache:
    """Ariadne's `query_parser` and `query_validator`, remembering their results."""

    def __init__(
        self, max_documents: int = MAX_DOCUMENTS, limits: DocumentLimits | None = None
    ) -> None:
        self.max_documents = max_documents
        self._parse = query_parser(limits=limits)
        self._documents: OrderedDict[str, DocumentNode] = OrderedDict()
        self._validated: dict[int, _Validated] = {}  # by id(document)
        self._seen_once: OrderedDict[int, None] = OrderedDict()  # hash(text); ints: no GC cost
        self._handed: OrderedDict[str, _Validated | GraphQLError] = OrderedDict()
        self._compiling: dict[str, asyncio.Future[_Validated | GraphQLError]] = {}
        self._checked: _Validated | None = None  # from `parse` to `validate`, no await between

    def known(self, text: str) -> bool:
        """Whether `text` is in the cache (parsed and validated, cleanly or not)."""
        return text in self._documents

    async def first_sight(
        self,
        schema: GraphQLSchema,
        text: str,
        rules: Collection[type[ASTValidationRule]] | None,
        introspection: bool,
    ) -> None:
        """Parse, validate and plan `text` off the event loop, and remember the outcome.

        `rules` and `introspection` are what the endpoint hands Ariadne, so that Ariadne's
        own parse and validate of the same text then find this outcome in the cache.
        """
        # Concurrent first sights of one text (a client's burst) share one compilation.
        compiling = self._compiling.get(text)
        if compiling is None:
            loop = asyncio.get_running_loop()
            compiling = loop.run_in_executor(
                _COMPILER, self._compile, schema, text, rules, introspection
            )
            self._compiling[text] = compiling
            compiling.add_done_callback(lambda _: self._compiling.pop(text, None))
        outcome = await asyncio.shield(compiling)  # one caller going away cancels nothing
        if self.known(text):  # another request stored it meanwhile
            return
        key = hash(text)
        if isinstance(outcome, _Validated) and key in self._seen_once:
            del self._seen_once[key]
            self._remember(text, outcome.document)
            self._validated[id(outcome.document)] = outcome
            return
        self._seen_once[key] = None
        if len(self._seen_once) > MAX_SEEN_ONCE:
            self._seen_once.popitem(last=False)
        self._handed[text] = outcome
        if len(self._handed) > MAX_HANDED:
            self._handed.popitem(last=False)

    def _compile(
        self,
        schema: GraphQLSchema,
        text: str,
        rules: Collection[type[ASTValidationRule]] | None,
        introspection: bool,
    ) -> _Validated | GraphQLError:
        """The outcome of `text`, computed without touching the cache (on the worker thread)."""
        try:
            document = parse_query(None, self._parse, {"query": text})
        except GraphQLError as error:
            return error
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
            schema, document, rules, enable_introspection=introspection, query_validator=collect
        )
        return _Validated(document, found, _prepare(schema, document, found))

    def parse(self, context: Any, data: dict[str, Any]) -> DocumentNode:
        text = data["query"]
        document = self._documents.get(text)
        if document is not None:
            self._documents.move_to_end(text)
            return document
        handed = self._handed.pop(text, None)
        if isinstance(handed, GraphQLError):
            raise handed.with_traceback(None)
        if handed is not None:
            self._checked = handed
            return handed.document
        document = self._parse(context, data)
        self._remember(text, document)
        return document

    def _remember(self, text: str, document: DocumentNode) -> None:
        self._documents[text] = document
        if len(self._documents) > self.max_documents:
            _, evicted = self._documents.popitem(last=False)
            self._validated.pop(id(evicted), None)

    def prepared(self, text: str) -> Prepared | None:
        """What `text` parsed to, if it has been validated without errors.

        Documents with a subscription are never prepared (the broker serves none).
        """
        document = self._documents.get(text)
        known = None if document is None else self._validated.get(id(document))
        if known is None or known.document is not document or known.prepared is None:
            return None
        self._documents.move_to_end(text)
        return known.prepared

    def validate(
        self,
        schema: GraphQLSchema,
        document_ast: DocumentNode,
        rules: Collection[type[ASTValidationRule]] | None = None,
        max_errors: int | None = None,
        type_info: TypeInfo | None = None,  # part of Ariadne's protocol; graphql-core 3.3 drops it
    ) -> list[GraphQLError]:
        checked, self._checked = self._checked, None
        if checked is not None and checked.document is document_ast:
            return checked.errors
        known = self._validated.get(id(document_ast))
        if known is not None and known.document is document_ast:
            return known.errors
        found = validate(schema, document_ast, rules=rules, max_errors=max_errors)
        if any(doc is document_ast for doc in self._documents.values()):
            prepared = _prepare(schema, document_ast, found)
            self._validated[id(document_ast)] = _Validated(document_ast, found, prepared)
        return found


def _prepare(
    schema: GraphQLSchema, document: DocumentNode, errors: list[GraphQLError]
) -> Prepared | None:
    if errors or _subscribes(document):
        return None
    return Prepared(document, compile_plan(schema, document))


def _subscribes(document: DocumentNode) -> bool:
    return any(
        isinstance(definition, OperationDefinitionNode)
        and definition.operation is OperationType.SUBSCRIPTION
        for definition in document.definitions
    )
