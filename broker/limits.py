"""Refuse hostile GraphQL requests before any resolver runs: document size and shape.

Wiring: give Ariadne's `GraphQL` `http_handler=JSONOnlyHTTPHandler()`,
`query_parser=query_parser()` (bounds parsing and validation work) and
`validation_rules=validation_rules(settings)`. The body size is enforced where bodies
are read, in `broker/endpoint.py`. Turning introspection
off is Ariadne's job: `GraphQL(introspection=False)` already refuses `__schema` and `__type`
(in fragments too) and hides the explorer.

Depth and field counts leave out what lies under `__schema`/`__type`: graphql-core's
standard introspection query is 15 fields deep and selects ~200, more than any API query
needs. graphql-core's own MaxIntrospectionDepthRule (among the spec rules Ariadne always runs)
stops the `types { fields { type { fields ...` chains; tokens and aliases bound the rest.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ariadne.asgi.handlers import GraphQLHTTPHandler
from ariadne.constants import DATA_TYPE_JSON
from ariadne.exceptions import HttpBadRequestError
from ariadne.types import QueryParser
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from graphql.validation import ASTValidationContext, ASTValidationRule
from starlette.requests import Request

from broker.settings import Settings

# Lexical tokens (and, separately, comments) in one document. Parsing and the spec's
# validation rules cost about 0.1 ms per token, so a 256 KiB body of `a a a ...` would
# burn seconds; the standard introspection query has under 200 tokens.
MAX_TOKENS = 3_000
# Field selections per document, fragments expanded (each spread counts its fields again).
MAX_FIELDS = 200
# Operations and fragments per document.
MAX_DEFINITIONS = 20

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


class JSONOnlyHTTPHandler(GraphQLHTTPHandler):
    """Ariadne's HTTP handler without multipart uploads, answering 400 where Ariadne gives 500.

    The API has no `Upload` scalar, and without python-multipart installed every
    `multipart/form-data` request crashes Starlette's form parser. JSON nested deeper than
    Python's recursion limit (`[[[[...`, a few KiB) makes `json.loads` raise RecursionError.
    """

    async def extract_data_from_request(self, request: Request) -> Any:
        if request.method == "POST" and _media_type(request) != DATA_TYPE_JSON:
            raise HttpBadRequestError(f"Posted content must be of type {DATA_TYPE_JSON}")
        try:
            return await super().extract_data_from_request(request)
        except RecursionError as error:
            raise HttpBadRequestError("Request body is nested too deeply") from error


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0]


def query_parser(max_tokens: int = MAX_TOKENS) -> QueryParser:
    """A parser for Ariadne's `GraphQL(query_parser=...)` that gives up after `max_tokens`."""

    def parse_bounded(context: Any, data: dict[str, Any]) -> DocumentNode:
        return parse(data["query"], max_lexical_tokens=max_tokens, max_comments=max_tokens)

    return parse_bounded


class _Size(NamedTuple):
    depth: int
    fields: int


class _Measure:
    """Depth and field count of selection sets; each fragment is measured once, cycles as 0.

    Fields under `__schema`/`__type` are left out (see the module docstring).
    """

    def __init__(self, context: ASTValidationContext) -> None:
        self.context = context
        self.fragments: dict[str, _Size] = {}
        self.open: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None) -> _Size:
        depth = fields = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if selection.name.value in INTROSPECTION_FIELDS:
                    continue
                inner = self.selections(selection.selection_set)
                depth, fields = max(depth, inner.depth + 1), fields + inner.fields + 1
            elif isinstance(selection, InlineFragmentNode):
                inner = self.selections(selection.selection_set)
                depth, fields = max(depth, inner.depth), fields + inner.fields
            elif isinstance(selection, FragmentSpreadNode):
                inner = self.fragment(selection.name.value)
                depth, fields = max(depth, inner.depth), fields + inner.fields
        return _Size(depth, fields)

    def fragment(self, name: str) -> _Size:
        if name in self.fragments:
            return self.fragments[name]
        definition = self.context.get_fragment(name)
        if definition is None or name in self.open:
            return _Size(0, 0)  # unknown or cyclic: the spec's rules report those
        self.open.add(name)
        size = self.selections(definition.selection_set)
        self.open.discard(name)
        self.fragments[name] = size
        return size


class _LimitRule(ASTValidationRule):
    def __init__(self, context: ASTValidationContext) -> None:
        super().__init__(context)
        self.measure = _Measure(context)


def max_depth(limit: int) -> type[ASTValidationRule]:
    """Refuse operations nested more than `limit` fields deep (`{ a { b } }` is 2)."""

    class MaxDepth(_LimitRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            depth = self.measure.selections(node.selection_set).depth
            if depth > limit:
                message = f"Query is {depth} levels deep; the limit is {limit}."
                self.report_error(GraphQLError(message, node))

    return MaxDepth


def max_fields(limit: int = MAX_FIELDS) -> type[ASTValidationRule]:
    """Refuse documents selecting more than `limit` fields in all, fragments expanded."""

    class MaxFields(_LimitRule):
        def leave_document(self, node: DocumentNode, *_: Any) -> None:
            fields = sum(
                self.measure.selections(definition.selection_set).fields
                for definition in node.definitions
                if isinstance(definition, OperationDefinitionNode)
            )
            if fields > limit:
                message = f"Query selects {fields} fields; the limit is {limit}."
                self.report_error(GraphQLError(message))

    return MaxFields


def max_aliases(limit: int) -> type[ASTValidationRule]:
    """Refuse documents that write more than `limit` aliases."""

    class MaxAliases(ASTValidationRule):
        aliases = 0

        def enter_field(self, node: FieldNode, *_: Any) -> None:
            self.aliases += node.alias is not None

        def leave_document(self, node: DocumentNode, *_: Any) -> None:
            if self.aliases > limit:
                message = f"Query has {self.aliases} aliases; the limit is {limit}."
                self.report_error(GraphQLError(message))

    return MaxAliases


def max_definitions(limit: int = MAX_DEFINITIONS) -> type[ASTValidationRule]:
    """Refuse documents with more than `limit` operations and fragments."""

    class MaxDefinitions(ASTValidationRule):
        def enter_document(self, node: DocumentNode, *_: Any) -> None:
            count = len(node.definitions)
            if count > limit:
                message = f"Query has {count} operations and fragments; the limit is {limit}."
                self.report_error(GraphQLError(message))

    return MaxDefinitions


def validation_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """Every document limit, for Ariadne's `GraphQL(validation_rules=...)`."""
    return [
        max_definitions(),
        max_depth(settings.max_query_depth),
        max_aliases(settings.max_aliases),
        max_fields(),
    ]
