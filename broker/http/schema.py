"""Loads `schema.graphql` (the API contract), derives the seed-era variant from it, and binds
both to the resolvers."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from ariadne import make_executable_schema
from graphql import (
    DocumentNode,
    FieldDefinitionNode,
    GraphQLSchema,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    ObjectTypeDefinitionNode,
    parse,
    print_ast,
)

from broker.http import resolvers


@cache
def schemas() -> tuple[GraphQLSchema, GraphQLSchema]:
    """The released and the seed schema, built once per process: they depend on nothing else
    (and building them takes longer than the rest of an app; tests build many apps)."""
    type_defs = schema_text()
    released = make_executable_schema(type_defs, *resolvers.BINDABLES)
    seed = make_executable_schema(seed_variant(type_defs), *resolvers.BINDABLES)
    return released, seed


def schema_text() -> str:
    """The schema file: shipped inside the wheel, or at the repository root in a checkout."""
    packaged = resources.files("broker") / "schema.graphql"
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()


def seed_variant(type_defs: str) -> str:
    """The one difference of the seed's API (served at `/graphql`).

    The seed acknowledges with `event_acknowledge(input: $token)` where `$token` is
    an `EventToken!`; the released API takes `input: EventAcknowledgeInput!`
    (`{token: $token}`). GraphQL cannot accept both in one argument, so the seed
    endpoint gets the same schema with only that argument's type replaced.
    """
    document = parse(type_defs)
    definitions = []
    for definition in document.definitions:
        if isinstance(definition, ObjectTypeDefinitionNode) and definition.name.value == "Mutation":
            definition = _with_fields(definition, [_seed_field(f) for f in definition.fields or ()])
        definitions.append(definition)
    return print_ast(DocumentNode(definitions=tuple(definitions)))


def _seed_field(field: FieldDefinitionNode) -> FieldDefinitionNode:
    if field.name.value != "event_acknowledge":
        return field
    token = NonNullTypeNode(type=NamedTypeNode(name=NameNode(value="EventToken")))
    arguments = tuple(
        argument.__class__(
            name=argument.name,
            description=argument.description,
            type=token,
            default_value=None,
            directives=argument.directives,
        )
        if argument.name.value == "input"
        else argument
        for argument in field.arguments or ()
    )
    return FieldDefinitionNode(
        name=field.name,
        description=field.description,
        arguments=arguments,
        type=field.type,
        directives=field.directives,
    )


def _with_fields(
    definition: ObjectTypeDefinitionNode, fields: list[FieldDefinitionNode]
) -> ObjectTypeDefinitionNode:
    return ObjectTypeDefinitionNode(
        name=definition.name,
        description=definition.description,
        interfaces=definition.interfaces,
        directives=definition.directives,
        fields=tuple(fields),
    )
