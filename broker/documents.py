"""A bounded cache of parsed and validated GraphQL documents, keyed by their text.

Clients send the same few documents with different variables, and validating
even a small document costs milliseconds, most of a request's CPU. Parsing and
validation depend only on the text (and the schema, fixed per endpoint), so the
result is reused; variables are still coerced on every request. A document that
validated cleanly is kept `Prepared`, with its compiled plan (broker/plans.py) when
it is simple enough for one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
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

from broker.limits import DocumentLimits, query_parser
from broker.plans import Plan, compile_plan

MAX_DOCUMENTS = 256


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

    def parse(self, context: Any, data: dict[str, Any]) -> DocumentNode:
        text = data["query"]
        document = self._documents.get(text)
        if document is not None:
            self._documents.move_to_end(text)
            return document
        document = self._parse(context, data)
        self._documents[text] = document
        if len(self._documents) > self.max_documents:
            _, evicted = self._documents.popitem(last=False)
            self._validated.pop(id(evicted), None)
        return document

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
        known = self._validated.get(id(document_ast))
        if known is not None and known.document is document_ast:
            return known.errors
        found = validate(schema, document_ast, rules=rules, max_errors=max_errors)
        if any(doc is document_ast for doc in self._documents.values()):
            prepared = None
            if not found and not _subscribes(document_ast):
                prepared = Prepared(document_ast, compile_plan(schema, document_ast))
            self._validated[id(document_ast)] = _Validated(document_ast, found, prepared)
        return found


def _subscribes(document: DocumentNode) -> bool:
    return any(
        isinstance(definition, OperationDefinitionNode)
        and definition.operation is OperationType.SUBSCRIPTION
        for definition in document.definitions
    )
