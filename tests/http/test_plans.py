"""A plan answers exactly as graphql-core does, and runs the root resolver once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ariadne import MutationType, ObjectType, QueryType, make_executable_schema
from graphql import ExecutionResult, execute, parse, validate

from broker.http.plans import compile_plan
from broker.http.slices import SLICE, Sliced

SDL = """
type Query {
  item(id: Int!): Item
  strict(id: Int!): Item!
  items: [Item!]
  many(n: Int!, unnamed: Int = -1): [Item!]
  word: String
}
type Mutation { bump(by: Int! = 1): Int! }
type Item {
  id: Int!
  name: String
  nullable_name: String!
  slow: String
  fails: String
  number: Int
  children: [Item!]
}
"""
ITEMS = {1: {"id": 1, "name": "one"}, 2: {"id": 2, "name": None}}

calls: list[str] = []
query, mutation, item = QueryType(), MutationType(), ObjectType("Item")


@query.field("item")
@query.field("strict")
async def resolve_item(_: Any, info: Any, id: int) -> Any:
    calls.append(info.field_name)
    if id == 13:
        raise ValueError("unlucky")
    return ITEMS.get(id)


@query.field("items")
def resolve_items(*_: Any) -> Any:
    calls.append("items")
    return [ITEMS[1], ITEMS[2]]


@query.field("many")
def resolve_many(_: Any, info: Any, n: int, unnamed: int) -> Any:
    """`n` items; the item at `unnamed` has no name; item 3 has `n` children."""
    calls.append("many")
    items = [{"id": i, "name": None if i == unnamed else f"n{i}"} for i in range(n)]
    if n > 3:
        items[3]["children"] = Sliced({"id": -i, "name": "child"} for i in range(n))
    return Sliced(items)  # as the broker's resolvers return long lists


@query.field("word")
def resolve_word(*_: Any) -> Any:
    calls.append("word")
    return object()  # not a string: String refuses it


counter = {"value": 0}


@mutation.field("bump")
async def resolve_bump(_: Any, info: Any, by: int) -> int:
    calls.append("bump")
    counter["value"] += by
    return counter["value"]


@item.field("nullable_name")
def resolve_nullable_name(obj: Any, info: Any) -> Any:
    return obj["name"]


@item.field("slow")
async def resolve_slow(obj: Any, info: Any) -> str:
    return "eventually"


@item.field("fails")
def resolve_fails(obj: Any, info: Any) -> str:
    raise RuntimeError("sub-resolver failed")


@item.field("number")
def resolve_number(obj: Any, info: Any) -> Any:
    return "not a number"


schema = make_executable_schema(SDL, query, mutation, item)


async def run(document: str, variables: dict[str, Any] | None, plan: bool) -> ExecutionResult:
    parsed = parse(document)
    assert validate(schema, parsed) == []
    if plan:
        compiled = compile_plan(schema, parsed)
        assert compiled is not None
        return await compiled.run(schema, None, variables, None)
    result = execute(schema, parsed, variable_values=variables)
    return await result if not isinstance(result, ExecutionResult) else result


def formatted(result: ExecutionResult) -> Any:
    return result.data, [error.formatted for error in result.errors or []]


PLAIN = [
    ("{ __typename }", None),
    ("query Q($id: Int!) { item(id: $id) { id name __typename } }", {"id": 1}),
    ("query Q($id: Int!) { item(id: $id) { id name } }", {"id": 404}),
    ("{ item(id: 2) { renamed: name id } }", None),
    ("{ items { id name } }", None),
    ("{ many(n: 250) { id name children { id name } } }", None),  # long lists, sliced
]
DIFFICULT = [
    ("query Q($id: Int!) { item(id: $id) { id } }", {"id": "x"}),  # variables do not coerce
    ("query Q($id: Int!) { item(id: $id) { id } }", {}),  # missing variable
    ("{ item(id: 13) { id } }", None),  # the root resolver raises
    ("{ strict(id: 13) { id } }", None),  # ...under a non-null type
    ("{ strict(id: 404) { id } }", None),  # null where not allowed at the root
    ("{ item(id: 2) { nullable_name } }", None),  # null where not allowed below
    ("{ items { nullable_name } }", None),  # ...inside a list
    ("{ item(id: 1) { slow } }", None),  # an asynchronous resolver below the root
    ("{ item(id: 1) { fails name } }", None),  # a resolver below the root raises
    ("{ item(id: 1) { number } }", None),  # a value the scalar refuses
    ("{ word }", None),
    ("{ many(n: 250, unnamed: 230) { nullable_name } }", None),  # in a later slice
    ("{ many(n: 250, unnamed: 230) { children { nullable_name } } }", None),
]


@pytest.mark.parametrize(("document", "variables"), PLAIN + DIFFICULT)
async def test_a_plan_answers_as_graphql_core_does(
    document: str, variables: dict[str, Any] | None
) -> None:
    calls.clear()
    expected = formatted(await run(document, variables, plan=False))
    general_calls = list(calls)
    calls.clear()
    assert formatted(await run(document, variables, plan=True)) == expected
    assert calls == general_calls  # each resolver ran as often as graphql-core runs it


async def test_a_mutation_runs_once_even_when_its_value_is_not_plain() -> None:
    counter["value"] = 0
    result = await run("mutation { bump(by: 2) }", None, plan=True)
    assert result.data == {"bump": 2} and counter["value"] == 2


@pytest.mark.parametrize(
    "document",
    [
        "query A { word } query B { word }",  # two operations
        "{ word items { id } }",  # two root fields
        "{ ...F } fragment F on Query { word }",
        "{ item(id: 1) { ... on Item { id } } }",
        "{ word @include(if: true) }",
        "{ item(id: 1) { id id } }",  # the same key twice
        "{ __schema { queryType { name } } }",
    ],
)
def test_documents_beyond_the_plain_shape_get_no_plan(document: str) -> None:
    parsed = parse(document)
    assert validate(schema, parsed) == []
    assert compile_plan(schema, parsed) is None


@pytest.mark.parametrize("plan", [True, False], ids=["plan", "graphql-core"])
async def test_a_long_list_is_completed_with_the_event_loop_free_in_between(
    plan: bool,
) -> None:
    turns = 0
    stop = False

    async def other_request() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(other_request())
    await asyncio.sleep(0)
    turns = 0
    result = await run("{ many(n: 1000) { id } }", None, plan=plan)
    stop = True
    await running
    assert result.data == {"many": [{"id": n} for n in range(1000)]}
    assert turns >= 1000 // SLICE
