"""Refuse a mutation before it writes when the answer it was asked for would be refused.

graphql-core resolves a mutation's selection after its resolver has written: a nested
field that the caller's roles do not reach, or whose arguments are refused, would answer
`data: null` and an error about a change that was made all the same. So before a
mutation's resolver runs, its whole selection (fragments and `@skip`/`@include` as
graphql-core applies them) is checked against the role table and each nested field's
arguments are read as its resolver will read them. What is left to fail afterwards
depends on what is stored (the request's budgets), not on the document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSkipDirective,
    InlineFragmentNode,
    SelectionNode,
    SelectionSetNode,
    get_argument_values,
    get_directive_values,
    get_named_type,
)

from broker import errors
from broker.http.arguments import event_selection, listener_filter, namespace_filter
from broker.registry import MAX_PAGE_SIZE, page_size


def _listing(read_filter: Callable[[Any], object]) -> Callable[[dict[str, Any]], None]:
    def read(arguments: dict[str, Any]) -> None:
        read_filter(arguments.get("filter"))
        page_size(arguments.get("limit"), MAX_PAGE_SIZE)

    return read


# What the nested fields' resolvers (broker/http/resolvers.py) refuse in their arguments.
ARGUMENTS: Mapping[str, Callable[[dict[str, Any]], None]] = {
    "Listener.events": _listing(event_selection),
    "Namespace.listeners": _listing(listener_filter),
    "Actor.event_namespaces": _listing(namespace_filter),
    "Actor.event_listeners": _listing(listener_filter),
}


def check_answer(
    info: GraphQLResolveInfo[Any], roles: frozenset[str], field_roles: Mapping[str, str | None]
) -> None:
    """Raise what resolving the selection under the field of `info` would raise for
    `roles` and the document alone: `PermissionDenied`, `InvalidInput`, a GraphQLError."""
    for parent, node in _fields(info):
        key = f"{parent.name}.{node.name.value}"
        role = field_roles.get(key)
        if role is not None and role not in roles:
            raise errors.PermissionDenied()
        read = ARGUMENTS.get(key)
        if read is not None:
            read(get_argument_values(parent.fields[node.name.value], node, info.variable_values))


def _fields(
    info: GraphQLResolveInfo[Any], deep: bool = True
) -> Iterator[tuple[GraphQLObjectType, FieldNode]]:
    """The fields selected below the field of `info`, each with the type it is selected on:
    all of them, or (`deep=False`) those on the objects it returns only."""
    stack: list[tuple[Any, SelectionSetNode | None]] = [
        (get_named_type(info.return_type), node.selection_set) for node in info.field_nodes
    ]
    while stack:
        parent, selection_set = stack.pop()
        if selection_set is None or not isinstance(parent, GraphQLObjectType):
            continue
        for selection in selection_set.selections:
            if not _included(selection, info.variable_values):
                continue
            if isinstance(selection, FieldNode):
                if selection.name.value.startswith("__"):
                    continue
                yield parent, selection
                if deep:
                    field = parent.fields[selection.name.value]
                    stack.append((get_named_type(field.type), selection.selection_set))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = parent if condition is None else info.schema.get_type(condition.name.value)
                stack.append((kind, selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                fragment = info.fragments[selection.name.value]
                kind = info.schema.get_type(fragment.type_condition.name.value)
                stack.append((kind, fragment.selection_set))


def item_fields(info: GraphQLResolveInfo[Any], wanted: frozenset[str]) -> list[str]:
    """The `wanted` fields ("Type.field", once per response key) that the field of `info`
    selects on the objects it returns, through fragments, as graphql-core includes them."""
    found = (f"{parent.name}.{node.name.value}" for parent, node in _fields(info, deep=False))
    return [key for key in found if key in wanted]


def _included(node: SelectionNode, variables: Any) -> bool:
    skip = get_directive_values(GraphQLSkipDirective, node, variables)
    if skip is not None and skip["if"] is True:
        return False
    include = get_directive_values(GraphQLIncludeDirective, node, variables)
    return include is None or include["if"] is not False
