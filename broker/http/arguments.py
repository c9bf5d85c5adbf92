"""GraphQL input to the domain's terms: the scalars, and the filters of listings."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ariadne import ScalarType

from broker import cursors, errors
from broker.models import EventSelection, ListenerFilter, NamespaceFilter, Page
from broker.operations import (
    MAX_NAME_LENGTH,
    MAX_SUBJECT_LENGTH,
    canonical_namespace,
    check_list,
    spellings,
)
from broker.tokens import EventToken

# Scalars ------------------------------------------------------------------------------------

uuid_scalar = ScalarType("UUID")


@uuid_scalar.serializer
def _serialize_uuid(value: UUID) -> str:
    return str(value)


@uuid_scalar.value_parser
def _parse_uuid(value: Any) -> UUID:
    # Python's UUID() reads any Unicode digit (Arabic-Indic U+0661 as 1): ASCII only.
    if not isinstance(value, str) or not value.isascii():
        raise errors.InvalidUUID()
    try:
        return UUID(value)
    except ValueError:
        raise errors.InvalidUUID() from None


token_scalar = ScalarType("EventToken")


@token_scalar.serializer
def _serialize_token(value: EventToken) -> str:
    return value.encode()


@token_scalar.value_parser
def _parse_token(value: Any) -> EventToken:
    return EventToken.decode(value)


cursor_scalar = ScalarType("Cursor")


@cursor_scalar.value_parser
def _parse_cursor(value: Any) -> str:
    cursors.decode(value)
    return str(value)


# Input --------------------------------------------------------------------------------------


def checked_list(
    values: list[Any] | None, what: str, max_length: int | None = None
) -> list[Any] | None:
    """`values` (if any) after the checks every list argument gets."""
    if values is not None:
        check_list(what, values, max_length)
    return values


def _set(
    values: list[Any] | None, what: str, max_length: int | None = None
) -> frozenset[Any] | None:
    values = checked_list(values, what, max_length)
    return None if values is None else frozenset(values)


def _names(values: list[str] | None, what: str) -> frozenset[str] | None:
    """Names to match, each as it may be stored (see `operations.spellings`)."""
    values = checked_list(values, what, MAX_NAME_LENGTH)
    return None if values is None else frozenset(s for v in values for s in spellings(v))


def namespace_filter(data: dict[str, Any] | None) -> NamespaceFilter:
    data = data or {}
    names = _names(data.get("names"), "names")
    return NamespaceFilter(
        names=None if names is None else frozenset(canonical_namespace(n) for n in names),
        owners=_set(data.get("owners"), "owners"),
        public=data.get("public"),
    )


def listener_filter(data: dict[str, Any] | None) -> ListenerFilter:
    data = data or {}
    namespaces = data.get("namespaces")
    return ListenerFilter(
        uuids=_set(data.get("uuids"), "uuids"),
        user_keys=_names(data.get("user_keys"), "user_keys"),
        owners=_set(data.get("owners"), "owners"),
        routing_keys=_names(data.get("routing_keys"), "routing_keys"),
        namespaces=None if namespaces is None else namespace_filter(namespaces),
    )


def event_selection(data: dict[str, Any] | None) -> EventSelection:
    data = data or {}
    return EventSelection(
        subjects=_set(data.get("subjects"), "subjects", MAX_SUBJECT_LENGTH),
        priorities=_set(data.get("priorities"), "priorities"),
        silenced=data.get("silenced"),
    )


def paged(page: Page[Any]) -> dict[str, Any]:
    return {"objects": page.objects, "page_info": {"next_cursor": page.next_cursor}}
