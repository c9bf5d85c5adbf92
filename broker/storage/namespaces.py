"""The registry's namespace records and its listing indexes (the registry slot)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.client import NEVER_DECODE

from broker.models import Listener, Namespace
from broker.storage.base import StoreBase, T

_PAGE = 500


def _text(data: dict[str, Any], field: str) -> str:
    value = data[field]
    if not isinstance(value, str):
        raise TypeError(f"{field} is not a string")
    return value


def _namespace(raw: str | bytes) -> Namespace:
    """A stored namespace record; one of `DECODE_ERRORS` if it is not one."""
    data = json.loads(raw)
    public = data["public"]
    if not isinstance(public, bool):
        raise TypeError("public is not a boolean")
    return Namespace(name=_text(data, "name"), owner=UUID(_text(data, "owner")), public=public)


def _listener(raw: str | bytes) -> Listener:
    """A stored listener record; one of `DECODE_ERRORS` if it is not one."""
    data = json.loads(raw)
    return Listener(
        uuid=UUID(_text(data, "uuid")),
        owner=UUID(_text(data, "owner")),
        namespace=_text(data, "namespace"),
        routing_key=_text(data, "routing_key"),
        user_key=_text(data, "user_key"),
    )


@dataclass(frozen=True, slots=True)
class NamespaceClaim:
    """What claiming a namespace name found."""

    held: Namespace | None  # who holds the name now (None: its record cannot be read)
    lookalike: str | None = None  # set instead: the existing name the new one folds onto


def _namespace_record(namespace: Namespace) -> str:
    return json.dumps(
        {"name": namespace.name, "owner": str(namespace.owner), "public": namespace.public}
    )


def _listener_record(listener: Listener) -> str:
    return json.dumps(
        {
            "uuid": str(listener.uuid),
            "owner": str(listener.owner),
            "namespace": listener.namespace,
            "routing_key": listener.routing_key,
            "user_key": listener.user_key,
        }
    )


def _limit_arg(limit: int | None) -> str:
    return "" if limit is None else str(limit)


class QuotaReached(Exception):
    """The owner holds as many namespaces or listeners as allowed."""


class NamespaceGone(Exception):
    """A listener's namespace was deleted while the listener was being declared."""


class Namespaces(StoreBase):
    """Namespace records, and the keyset-paged listing indexes of the registry."""

    # Namespaces -------------------------------------------------------------------------------

    def _namespace_keys(self, owner: UUID) -> list[str]:
        return [
            self.keys.namespaces,
            self.keys.namespace_folds,
            self.keys.namespace_order,
            self.keys.owner_namespaces(str(owner)),
        ]

    async def claim_namespace(
        self, namespace: Namespace, fold: str, limit: int | None = None
    ) -> NamespaceClaim:
        """Store the namespace unless its name (or its `fold`) is taken; say who holds it.

        One script claims the name, its fold, its listing indexes and the owner's quota
        together, so of two racing declares of names that fold alike (`Mo`, `mo`) only one
        can win, and no race passes the quota. Raises `QuotaReached` when the owner already
        holds `limit` namespaces.
        """
        reply = await self._written(
            self._claim_namespace,
            keys=self._namespace_keys(namespace.owner),
            args=[namespace.name, fold, _namespace_record(namespace), _limit_arg(limit)],
        )
        if int(reply[0]) == 0:
            raise QuotaReached(str(reply[1]))
        if int(reply[0]) == 2:
            return NamespaceClaim(None, str(reply[1]))
        return NamespaceClaim(await self.get_namespace(namespace.name))

    async def fold_namespaces(self, fold: Callable[[str], str]) -> None:
        """Claim the fold of every namespace stored without one (by an older version)."""
        names = []
        for raw in await self.redis.execute_command(
            "HKEYS", self.keys.namespaces, **{NEVER_DECODE: True}
        ):
            try:
                names.append(raw.decode())
            except UnicodeDecodeError as error:  # no request can name it: nothing to guard
                self.unreadable("namespace", f"{self.keys.namespaces}[{raw!r}]", error)
        folded = set(await self.redis.hvals(self.keys.namespace_folds))
        missing = {fold(name): name for name in sorted(names) if name not in folded}
        for folded_name, name in missing.items():
            await self.redis.hsetnx(self.keys.namespace_folds, folded_name, name)

    async def get_namespace(self, name: str) -> Namespace | None:
        """The namespace, or None when there is none or its record cannot be read."""
        raw = await self._raw_field(self.keys.namespaces, name)
        if raw is None:
            return None
        return self._decode("namespace", f"{self.keys.namespaces}[{name}]", raw, _namespace)

    async def namespace_recorded(self, name: str) -> bool:
        """Whether a record is stored under the name, readable or not."""
        return bool(await self.redis.hexists(self.keys.namespaces, name))

    async def all_namespaces(self) -> list[Namespace]:
        found = []
        for name, raw in (await self._raw_fields(self.keys.namespaces)).items():
            key = f"{self.keys.namespaces}[{name}]"
            if (namespace := self._decode("namespace", key, raw, _namespace)) is not None:
                found.append(namespace)
        return found

    async def delete_namespace(self, name: str, held: Namespace | None, fold: str) -> int:
        """1 deleted (or gone), 0 refused as listeners are in it, -1 it changed meanwhile.

        `held` is the record the caller was allowed to delete; None for one that cannot be
        read (only admins get here), which is deleted as stored.
        """
        record: str | bytes | None
        if held is None:
            record = await self._raw_field(self.keys.namespaces, name)
            if record is None:
                return 1
        else:
            record = _namespace_record(held)
        owner = "" if held is None else str(held.owner)
        return int(
            await self._written(
                self._delete_namespace,
                keys=[
                    self.keys.namespaces,
                    self.keys.namespace_folds,
                    self.keys.namespace_order,
                    self.keys.owner_namespaces(owner),
                    self.keys.namespace_listeners(name),
                ],
                args=[name, record, fold],
            )
        )

    async def get_namespaces(self, names: Sequence[str]) -> dict[str, Namespace]:
        """The namespaces of those `names` that exist."""
        if not names:
            return {}
        raw = await self.redis.execute_command(
            "HMGET", self.keys.namespaces, *names, **{NEVER_DECODE: True}
        )
        found = {}
        for name, item in zip(names, raw, strict=True):
            key = f"{self.keys.namespaces}[{name}]"
            if item is not None and (held := self._decode("namespace", key, item, _namespace)):
                found[name] = held
        return found

    # Listing indexes --------------------------------------------------------------------------

    async def index_page(
        self, indexes: Sequence[str], after: str | None, count: int, inclusive: bool = False
    ) -> list[str]:
        """The first `count` members after `after` of the union of `indexes`, in order.

        One round trip; each index answers at most `count` members (keyset paging).
        """
        if not indexes:
            return []
        low = "-" if after is None else f"{'[' if inclusive else '('}{after}"
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrangebylex(index, low, "+", start=0, num=count)
            replies = await pipe.execute()
        if len(replies) == 1:
            return list(replies[0])
        return sorted({member for reply in replies for member in reply})[:count]

    @staticmethod
    def _identity(listener: Listener) -> str:
        return json.dumps([str(listener.owner), listener.namespace, listener.user_key])

    def _listener_index_keys(self, listener: Listener) -> list[str]:
        return [
            self.keys.listener_order,
            self.keys.owner_listeners(str(listener.owner)),
            self.keys.namespace_listeners(listener.namespace),
        ]

    async def _hash_pages(
        self, key: str, kind: str, decode: Callable[[str | bytes], T]
    ) -> AsyncIterator[list[T]]:
        """The readable records of a hash, a page at a time (unreadable ones skipped)."""
        cursor = 0
        while True:
            cursor, page = await self.redis.execute_command(
                "HSCAN", key, cursor, "COUNT", _PAGE, **{NEVER_DECODE: True}
            )
            fields = (
                page.items() if isinstance(page, dict) else zip(page[::2], page[1::2], strict=True)
            )
            records = [
                self._decode(kind, f"{key}[{field!r}]", raw, decode) for field, raw in fields
            ]
            if found := [record for record in records if record is not None]:
                yield found
            if int(cursor) == 0:
                return
