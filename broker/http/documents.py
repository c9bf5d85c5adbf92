"""A bounded cache of parsed and validated GraphQL documents, keyed by their text.

Clients send the same few documents with different variables, and validating
even a small document costs milliseconds, most of a request's CPU. Parsing and
validation depend only on the text (and the schema, fixed per endpoint), so the
result is reused; variables are still coerced on every request. A document that
validated cleanly is kept `Prepared`, with its compiled plan (broker/http/plans.py) when
it is simple enough for one.

A text's first sight is checked in a separate process (broker/http/checker.py), so
that hostile texts, each new, cost the event loop little; first sights queue behind each
other there instead of in front of everyone. Only the outcomes are stored, on the loop;
cache hits never leave it.

A text is kept in the cache from its second sight on: before that, its outcome is only
handed to Ariadne's parse and validate of the same request. Real clients repeat their
few documents, while a hostile caller's texts are each new; keeping those would fill the
cache with long-lived syntax trees, and then every full garbage collection (which holds
the GIL for as long as it walks them, ~250 ms for a cache full of them) stalls the loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import Any

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

from broker.http.checker import CHECKER, Checks, StaticAnswer, parse_checked
from broker.http.limits import query_parser
from broker.http.plans import Plan, compile_plan

MAX_DOCUMENTS = 256
MAX_SEEN_ONCE = 4096  # hashes of texts seen once, waiting for a second sight
MAX_HANDED = 64  # first-sight outcomes waiting for their request's parse (normally one)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document that parsed and validated cleanly, its plan if it is simple, and its
    answer if it only introspects."""

    document: DocumentNode
    plan: Plan | None
    answer: StaticAnswer | None = None


@dataclass(slots=True)
class _Validated:
    document: DocumentNode  # kept, so that a recycled id(document) cannot match
    errors: list[GraphQLError]
    prepared: Prepared | None


class DocumentCache:
    """Ariadne's `query_parser` and `query_validator`, remembering their results."""

    def __init__(self, checks: Checks, max_documents: int = MAX_DOCUMENTS) -> None:
        self.checks = checks
        self.schema = checks.schema()
        self.max_documents = max_documents
        self._parse = query_parser(limits=checks.limits)
        self._documents: OrderedDict[str, DocumentNode] = OrderedDict()
        self._validated: dict[int, _Validated] = {}  # by id(document)
        self._seen_once: OrderedDict[int, None] = OrderedDict()  # hash(text); ints: no GC cost
        self._handed: OrderedDict[str, _Validated | GraphQLError] = OrderedDict()
        self._compiling: dict[str, asyncio.Future[_Validated | GraphQLError]] = {}
        self._checked: _Validated | None = None  # from `parse` to `validate`, no await between

    def known(self, text: str) -> bool:
        """Whether `text` is in the cache (parsed and validated, cleanly or not)."""
        return text in self._documents

    async def first_sight(self, text: str, caller: Hashable) -> Prepared | None:
        """Check `text` in the child process, and remember the outcome for Ariadne's own
        parse and validate of the same text; what it prepared, if it is clean."""
        # Concurrent first sights of one text (a client's burst) share one check.
        compiling = self._compiling.get(text)
        if compiling is None:
            compiling = asyncio.ensure_future(self._compile(text, caller))
            self._compiling[text] = compiling
            compiling.add_done_callback(lambda _: self._compiling.pop(text, None))
        outcome = await asyncio.shield(compiling)  # one caller going away cancels nothing
        prepared = outcome.prepared if isinstance(outcome, _Validated) else None
        if self.known(text):  # another request stored it meanwhile
            return prepared
        key = hash(text)
        if isinstance(outcome, _Validated) and key in self._seen_once:
            del self._seen_once[key]
            self._remember(text, outcome.document)
            self._validated[id(outcome.document)] = outcome
            return prepared
        self._seen_once[key] = None
        if len(self._seen_once) > MAX_SEEN_ONCE:
            self._seen_once.popitem(last=False)
        self._handed[text] = outcome
        if len(self._handed) > MAX_HANDED:
            self._handed.popitem(last=False)
        return prepared

    def answered(self, text: str) -> None:
        """`text`'s first sight was answered without Ariadne: nothing to hand over."""
        self._handed.pop(text, None)

    async def _compile(self, text: str, caller: Hashable) -> _Validated | GraphQLError:
        """The outcome of `text`, computed without touching the cache."""
        outcome = await CHECKER.check(self.checks, text, caller)
        if outcome.unparsed is not None:
            return outcome.unparsed.error(text)
        if outcome.invalid:
            # Ariadne validates whatever `parse` gave it; these errors are the answer, so a
            # placeholder spares parsing the text here (each its own: see `_Validated`).
            errors = [refusal.error(text) for refusal in outcome.invalid]
            return _Validated(DocumentNode(definitions=()), errors, None)
        document = parse_checked(text)
        prepared = _prepare(self.schema, document, [])
        if prepared is not None and outcome.answer is not None:
            prepared = Prepared(document, prepared.plan, outcome.answer)
        return _Validated(document, [], prepared)

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
