"""Run the documents clients send over and over without graphql-core's general executor.

graphql-core's executor is general (fragments, directives, abstract types, incremental
delivery, error paths) and costs more CPU than everything else in a fetch or an
acknowledgement. The documents that matter are simple: one operation, one root field,
scalars or plain objects below it. `compile` turns such a document into a `Plan` once; a
plan runs the root resolver and completes its value directly: leaves under the default
resolver are read without building resolve info, and a long list is completed a slice
at a time with the event loop free in between (broker/http/slices.py).

A plan only takes the plain path. graphql-core stays in charge of everything else, and
so of every error: variables or arguments that do not coerce go to graphql-core before
any resolver runs; a root resolver that raises, or a value whose completion is not
plain (null where one is not allowed, a value a scalar refuses, a resolver below the
root that raises or is asynchronous), is handed to graphql-core with the root
resolver's outcome replayed through middleware, so side effects never run twice and
the answer is graphql-core's own. Resolvers below the root field read only.

Everything used here is graphql-core's public API (names in `graphql.__all__` and
`graphql.pyutils.__all__`; resolve info built by its field names). It earns its place:
about 1.4 times the fetch+ack cycles per CPU second of graphql-core's executor
(benchmarks/RESULTS.md, "earn it or delete it").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    Undefined,
    VariableValues,
    default_field_resolver,
    execute,
    get_argument_values,
    get_named_type,
    get_variable_values,
    is_leaf_type,
    is_object_type,
)
from graphql.pyutils import Path, is_awaitable

from broker.http.slices import SLICE, slices

INTROSPECTION = frozenset({"__schema", "__type"})


async def _gather(awaitables: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*awaitables))


def _track(values: Sequence[Any]) -> None:
    for value in values:
        if isawaitable(value):
            _tracked.add(task := asyncio.ensure_future(value))
            task.add_done_callback(_tracked.discard)


_tracked: set[asyncio.Future[Any]] = set()
# The broker's resolvers use neither helper; these behave as their names say.
_HELPERS = GraphQLResolveInfoHelpers(gather=_gather, track=_track)


class _NotPlain(Exception):
    """The value's completion needs graphql-core's general rules."""


@dataclass
class _Later:
    """A long list whose items are completed after the rest, a slice at a time."""

    out: list[Any]  # already in its parent's value; filled in place
    field_: _Field
    item_type: Any
    items: Sequence[Any]
    info: GraphQLResolveInfo[Any]


@dataclass
class _Field:
    key: str  # response key (alias or name)
    node: FieldNode
    definition: GraphQLField | None  # None: __typename
    selection: list[_Field] | None = None  # for object types


@dataclass
class Plan:
    document: DocumentNode
    operation: OperationDefinitionNode
    root_type: GraphQLObjectType
    root: _Field
    fragments: dict[str, Any] = field(default_factory=dict)

    async def run(
        self,
        schema: GraphQLSchema,
        context: Any,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> ExecutionResult:
        def general(**options: Any) -> Any:
            return execute(
                schema,
                self.document,
                context_value=context,
                variable_values=variables,
                operation_name=operation_name,
                **options,
            )

        name = self.operation.name.value if self.operation.name else None
        if operation_name is not None and operation_name != name:
            return await _settled(general())
        definitions = self.operation.variable_definitions or ()
        coerced = get_variable_values(schema, definitions, variables or {})
        if isinstance(coerced, list):
            return await _settled(general())
        root = self.root
        if root.definition is None:  # { __typename }
            return ExecutionResult({root.key: self.root_type.name}, None)
        try:
            args = get_argument_values(root.definition, root.node, coerced)
        except GraphQLError:
            return await _settled(general())

        path = Path(None, root.key, self.root_type.name)
        info = self._info(schema, root, self.root_type, path, context, coerced)
        resolve = root.definition.resolve or default_field_resolver
        try:
            outcome = resolve(None, info, **args)
            if isawaitable(outcome):
                outcome = await outcome
        except Exception as error:
            outcome = error
        if not isinstance(outcome, Exception):
            later: list[_Later] = []
            try:
                value = self._complete(schema, root, root.definition.type, outcome, info, later)
                while later:
                    await self._fill(schema, later.pop(0), later)
            except _NotPlain:
                pass
            else:
                return ExecutionResult({root.key: value}, None)

        def replay(
            next_: Callable[..., Any], source: Any, info: GraphQLResolveInfo[Any], **kw: Any
        ) -> Any:
            if info.path.prev is not None:
                return next_(source, info, **kw)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return await _settled(general(middleware=[replay]))

    def _info(
        self,
        schema: GraphQLSchema,
        field_: _Field,
        parent: GraphQLObjectType,
        path: Path,
        context: Any,
        variables: VariableValues,
    ) -> GraphQLResolveInfo[Any]:
        assert field_.definition is not None
        return GraphQLResolveInfo(
            field_name=field_.node.name.value,
            field_nodes=[field_.node],
            return_type=field_.definition.type,
            parent_type=parent,
            path=path,
            schema=schema,
            fragments=self.fragments,
            root_value=None,
            operation=self.operation,
            variable_values=variables,
            context=context,
            is_awaitable=is_awaitable,
            abort_signal=None,
            async_helpers=_HELPERS,
        )

    async def _fill(self, schema: GraphQLSchema, long: _Later, later: list[_Later]) -> None:
        """Complete a long list's items a slice at a time, letting other requests run."""
        async for part in slices(long.items):
            long.out.extend(
                self._complete(schema, long.field_, long.item_type, item, long.info, later)
                for item in part
            )

    def _complete(
        self,
        schema: GraphQLSchema,
        field_: _Field,
        type_: Any,
        value: Any,
        info: GraphQLResolveInfo[Any],
        later: list[_Later],
    ) -> Any:
        if isinstance(type_, GraphQLNonNull):
            completed = self._complete(schema, field_, type_.of_type, value, info, later)
            if completed is None:
                raise _NotPlain
            return completed
        if value is None or value is Undefined:
            return None
        if isinstance(type_, GraphQLList):
            if not isinstance(value, (list, tuple)):
                raise _NotPlain
            if len(value) > SLICE:
                out: list[Any] = []
                later.append(_Later(out, field_, type_.of_type, value, info))
                return out
            item_type = type_.of_type
            return [self._complete(schema, field_, item_type, item, info, later) for item in value]
        if is_leaf_type(type_):
            try:
                coerced = type_.coerce_output_value(value)
            except Exception as error:
                raise _NotPlain from error
            if coerced is None or coerced is Undefined:
                raise _NotPlain
            return coerced
        if type_.is_type_of is not None or field_.selection is None:
            raise _NotPlain
        fields: dict[str, Any] = {}
        for sub in field_.selection:
            if sub.definition is None:
                fields[sub.key] = type_.name
                continue
            if sub.definition.resolve is None and sub.selection is None:
                # A leaf under graphql-core's default resolver: read as it reads it,
                # without building the resolve info it would not use.
                name = sub.node.name.value
                mapping = type(value) is dict or isinstance(value, Mapping)
                leaf = value.get(name) if mapping else getattr(value, name, None)
                if not callable(leaf):
                    fields[sub.key] = self._complete(
                        schema, sub, sub.definition.type, leaf, info, later
                    )
                    continue
            path = info.path.add_key(sub.key, type_.name)
            sub_info = self._info(schema, sub, type_, path, info.context, info.variable_values)
            resolve = sub.definition.resolve or default_field_resolver
            try:
                result = resolve(value, sub_info)
            except Exception as error:
                raise _NotPlain from error
            if isawaitable(result):
                if hasattr(result, "close"):
                    result.close()  # a coroutine never awaited; graphql-core runs it again
                raise _NotPlain
            fields[sub.key] = self._complete(
                schema, sub, sub.definition.type, result, sub_info, later
            )
        return fields


async def _settled(result: Any) -> ExecutionResult:
    if isawaitable(result):
        result = await result
    assert isinstance(result, ExecutionResult)
    return result


def compile_plan(schema: GraphQLSchema, document: DocumentNode) -> Plan | None:
    """A plan for a valid `document`, or None when it is not simple enough for one."""
    if len(document.definitions) != 1:
        return None
    operation = document.definitions[0]
    if not isinstance(operation, OperationDefinitionNode) or operation.directives:
        return None
    if operation.operation is OperationType.SUBSCRIPTION:
        return None
    if any(definition.directives for definition in operation.variable_definitions or ()):
        return None
    root_type = schema.get_root_type(operation.operation)
    if root_type is None or len(operation.selection_set.selections) != 1:
        return None
    root = _compile_field(root_type, operation.selection_set.selections[0], root=True)
    if root is None:
        return None
    return Plan(document, operation, root_type, root)


def _compile_field(parent: GraphQLObjectType, node: Any, root: bool = False) -> _Field | None:
    if not isinstance(node, FieldNode) or node.directives:
        return None
    if node.arguments and not root:
        return None
    name = node.name.value
    key = node.alias.value if node.alias else name
    if name in INTROSPECTION:
        return None
    if name == "__typename":
        return _Field(key, node, None)
    definition = parent.fields.get(name)
    if definition is None:
        return None
    named = get_named_type(definition.type)
    if is_leaf_type(named):
        return _Field(key, node, definition) if node.selection_set is None else None
    if not is_object_type(named) or node.selection_set is None:
        return None
    selection: list[_Field] = []
    for selected in node.selection_set.selections:
        sub = _compile_field(named, selected)
        if sub is None or any(other.key == sub.key for other in selection):
            return None
        selection.append(sub)
    return _Field(key, node, definition, selection)
