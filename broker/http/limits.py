"""Refuse hostile GraphQL requests before any resolver runs: document size and shape.

Wiring: give Ariadne's `GraphQL` `http_handler=JSONOnlyHTTPHandler()`,
`query_parser=query_parser(limits=DocumentLimits.of(settings))` (bounds parsing, and with
`check_cost` the work validation can be made to do) and
`validation_rules=validation_rules(settings)`. The body size is enforced where bodies
are read, in `broker/http/endpoint.py`. Turning introspection
off is Ariadne's job: `GraphQL(introspection=False)` already refuses `__schema` and `__type`
(in fragments too) and hides the explorer.

Depth and field counts leave out what lies under `__schema`/`__type`: graphql-core's
standard introspection query is 15 fields deep and selects ~200, more than any API query
needs. graphql-core's own MaxIntrospectionDepthRule (among the spec rules Ariadne always runs)
stops the `types { fields { type { fields ...` chains; tokens and aliases bound the rest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

from ariadne.asgi.handlers import GraphQLHTTPHandler
from ariadne.constants import DATA_TYPE_JSON
from ariadne.exceptions import HttpBadRequestError
from ariadne.types import QueryParser
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    visit,
)
from graphql.validation import ASTValidationContext, ASTValidationRule, NoFragmentCyclesRule
from starlette.requests import Request

from broker.settings import Settings

# Lexical tokens (and, separately, comments) in one document. Parsing costs about 7 µs
# per token and validation more, so this bounds a refused document's CPU to a few ms
# (benchmarks/document_cost.py); the standard introspection query (all options) has 190
# tokens, the clients' documents under 100.
MAX_TOKENS = 500
# Characters in one document: graphql-core lexes strings and comments a character at a
# time (a 250 KB string literal costs ~90 ms). The introspection query is 1.7 KB; data
# belongs in variables, which the body limit bounds.
MAX_DOCUMENT_CHARS = 8 * 1024
# Field selections per document, fragments expanded (each spread counts its fields again).
MAX_FIELDS = 200
# Operations and fragments per document.
MAX_DEFINITIONS = 20
# Arguments of one field (the schema's fields take at most 3).
MAX_ARGUMENTS = 20
# Defaults of the settings that bound validation's work (see `check_cost`).
MAX_SELECTIONS = 1_000
MAX_SELECTIONS_PER_SET = 50
MAX_REPEATED_FIELDS = 3

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


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """How much one document may select, checked right after parsing (see `check_cost`)."""

    selections: int = MAX_SELECTIONS
    selections_per_set: int = MAX_SELECTIONS_PER_SET
    repeated_fields: int = MAX_REPEATED_FIELDS

    @classmethod
    def of(cls, settings: Settings) -> DocumentLimits:
        return cls(
            settings.max_selections,
            settings.max_selections_per_set,
            settings.max_repeated_fields,
        )


def query_parser(max_tokens: int = MAX_TOKENS, limits: DocumentLimits | None = None) -> QueryParser:
    """A parser for Ariadne's `GraphQL(query_parser=...)`: gives up after `max_tokens`, and
    refuses documents whose validation could cost more than `limits` allow."""
    limits = limits or DocumentLimits()

    def parse_bounded(context: Any, data: dict[str, Any]) -> DocumentNode:
        text = data["query"]
        if isinstance(text, str) and len(text) > MAX_DOCUMENT_CHARS:
            raise GraphQLError(
                f"Query is {len(text)} characters long; the limit is {MAX_DOCUMENT_CHARS}."
            )
        document = parse(text, max_lexical_tokens=max_tokens, max_comments=max_tokens)
        check_cost(document, limits)
        return document

    return parse_bounded


def check_cost(document: DocumentNode, limits: DocumentLimits) -> None:
    """Raise a `GraphQLError` for a document too costly to validate; linear in its size.

    graphql-core's OverlappingFieldsCanBeMergedRule compares every pair of fields that share
    a response-key path (`{ me{actor{uuid}} me{actor{uuid}} ... }`), fragments expanded: a
    7 KB document of 420 repeats costs seconds of CPU before any rule refuses it. So before
    validation this counts the selections (fragments expanded, each fragment counted once
    and then reused, so fragment bombs are cheap to count), the selections of each set, and
    the fields sharing one path; those bound the pairs the rule can compare. Every
    definition is counted as written and as spread: validation visits both.
    """
    definitions = [d for d in document.definitions if isinstance(d, _EXECUTABLE)]
    if len(document.definitions) > MAX_DEFINITIONS:
        count = len(document.definitions)
        raise GraphQLError(
            f"Query has {count} operations and fragments; the limit is {MAX_DEFINITIONS}."
        )
    fragments: dict[str, FragmentDefinitionNode] = {}
    for definition in definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(definition.name.value, definition)
    sizes = _fragment_sizes(fragments, limits)
    if len(sizes) < len(fragments):
        _refuse_cycles(document)
    total = sum(_size(d.selection_set, sizes, limits) for d in definitions)
    if total > limits.selections:
        raise GraphQLError(
            f"Query has {total} selections, fragments expanded; the limit is {limits.selections}."
        )
    # Now the expanded document is small (at most `limits.selections`), so walk it all.
    for definition in definitions:
        repeats: Counter[tuple[str, ...]] = Counter()
        stack: list[tuple[SelectionSetNode, tuple[str, ...], frozenset[str]]] = [
            (definition.selection_set, (), frozenset())
        ]
        while stack:
            selection_set, path, spread = stack.pop()
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    key = (*path, (selection.alias or selection.name).value)
                    repeats[key] += 1
                    if repeats[key] > limits.repeated_fields:
                        raise GraphQLError(
                            f"Query selects `{'.'.join(key)}` more than "
                            f"{limits.repeated_fields} times, fragments expanded; "
                            f"the limit is {limits.repeated_fields}."
                        )
                    if selection.selection_set is not None:
                        stack.append((selection.selection_set, key, spread))
                elif isinstance(selection, InlineFragmentNode):
                    stack.append((selection.selection_set, path, spread))
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in fragments and name not in spread:
                        stack.append((fragments[name].selection_set, path, spread | {name}))


_EXECUTABLE = (OperationDefinitionNode, FragmentDefinitionNode)


def _fragment_sizes(
    fragments: dict[str, FragmentDefinitionNode], limits: DocumentLimits
) -> dict[str, int]:
    """Each fragment's selections with its spreads expanded; fragments in or behind a cycle
    are left out.

    Fragments are sized after the ones they spread (no recursion across fragments, so a
    long chain of them cannot exhaust the stack).
    """
    pending = {name: _spreads(f.selection_set) & fragments.keys() for name, f in fragments.items()}
    sizes: dict[str, int] = {}
    while pending:
        ready = [name for name, used in pending.items() if used <= sizes.keys()]
        if not ready:  # the rest are in or behind a cycle: left out
            break
        for name in ready:
            sizes[name] = _size(fragments[name].selection_set, sizes, limits)
            del pending[name]
    return sizes


def _refuse_cycles(document: DocumentNode) -> None:
    """Raise the spec's own error for a fragment cycle (its rule is linear in the document)."""
    found: list[GraphQLError] = []
    visit(document, NoFragmentCyclesRule(ASTValidationContext(document, found.append)))
    raise found[0]


def _spreads(selection_set: SelectionSetNode) -> set[str]:
    """The fragments a selection set spreads, at any depth (unknown ones left out later)."""
    found: set[str] = set()
    for node in _selection_sets(selection_set):
        for selection in node.selections:
            if isinstance(selection, FragmentSpreadNode):
                found.add(selection.name.value)
    return found


def _size(selection_set: SelectionSetNode, sizes: dict[str, int], limits: DocumentLimits) -> int:
    """Selections under `selection_set`, each spread adding its fragment's size."""
    total = 0
    for node in _selection_sets(selection_set):
        if len(node.selections) > limits.selections_per_set:
            raise GraphQLError(
                f"A selection set has {len(node.selections)} selections; "
                f"the limit is {limits.selections_per_set}.",
                node,
            )
        total += len(node.selections)
        for selection in node.selections:
            if isinstance(selection, FragmentSpreadNode):
                total += sizes.get(selection.name.value, 0)
            elif (
                isinstance(selection, FieldNode) and len(selection.arguments or ()) > MAX_ARGUMENTS
            ):
                # Two same-named fields' arguments are compared pairwise: quadratic.
                count = len(selection.arguments or ())
                raise GraphQLError(
                    f"Field '{selection.name.value}' has {count} arguments; "
                    f"the limit is {MAX_ARGUMENTS}.",
                    selection,
                )
    return total


def _selection_sets(root: SelectionSetNode) -> list[SelectionSetNode]:
    """Every selection set under `root` as written (spreads not followed), without recursion."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(node)
        for selection in node.selections:
            inner = getattr(selection, "selection_set", None)
            if inner is not None:
                stack.append(inner)
    return found


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


def validation_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """Every document limit, for Ariadne's `GraphQL(validation_rules=...)`."""
    return [
        max_depth(settings.max_query_depth),
        max_aliases(settings.max_aliases),
        max_fields(),
    ]
