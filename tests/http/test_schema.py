"""schema.graphql is the contract: resolvers match it, and the seed variant differs in one place."""

from __future__ import annotations

from graphql import GraphQLNonNull, GraphQLObjectType, build_schema

from broker.http import resolvers
from broker.http.schema import schema_text, seed_variant


def _root_fields(name: str) -> set[str]:
    schema = build_schema(schema_text())
    root = schema.get_type(name)
    assert isinstance(root, GraphQLObjectType)
    return set(root.fields)


def test_every_query_and_mutation_field_has_a_resolver_and_vice_versa() -> None:
    assert set(resolvers.query._resolvers) == _root_fields("Query")
    assert set(resolvers.mutation._resolvers) == _root_fields("Mutation")


def test_variable_types_real_clients_name_exist() -> None:
    schema = build_schema(schema_text())
    for name in (
        "UUID",
        "EventToken",
        "NamespaceCreateInput",
        "ListenerCreateInput",
        "EventSendInput",
        "Cursor",
        "EventSilenceInput",
        "EventUnsilenceInput",
        "EventRerunInput",
        "ListenerFilter",
        "ListenersBoundFullEventFilter",
    ):
        assert schema.get_type(name) is not None, name


def test_seed_variant_changes_only_the_acknowledge_argument() -> None:
    released = build_schema(schema_text())
    seed = build_schema(seed_variant(schema_text()))
    seed_ack = seed.mutation_type.fields["event_acknowledge"].args["input"].type  # type: ignore[union-attr]
    released_ack = released.mutation_type.fields["event_acknowledge"].args["input"].type  # type: ignore[union-attr]
    assert isinstance(seed_ack, GraphQLNonNull) and seed_ack.of_type.name == "EventToken"
    assert isinstance(released_ack, GraphQLNonNull)
    assert released_ack.of_type.name == "EventAcknowledgeInput"
    assert set(seed.type_map) == set(released.type_map)
    for name, field in released.mutation_type.fields.items():  # type: ignore[union-attr]
        if name != "event_acknowledge":
            assert str(seed.mutation_type.fields[name].type) == str(field.type)  # type: ignore[union-attr]
