"""The version of the stored layout: a broker never reads data in a layout it does not know.

One global field, `layout` in the registry's `config` hash, written at start-up into a
fresh Redis. Scripts do not read it (each touches one slot and trusts the check made at
start-up). Data written before the field existed is layout 1: the same registry, but
pending events in the older record and index format. Once every listener's events are
drained it holds nothing this version would misread, so it is taken over as the current
layout; with events pending it is refused. docs/operations.md says what an upgrade across
layouts takes.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from redis.client import NEVER_DECODE

from broker.storage.keys import Keys
from broker.storage.records import LAYOUT

FIELD = "layout"
# The layout of data that carries no version: written before versions were stored.
UNVERSIONED = 1


# Listeners whose pending events are counted per round trip while checking a drain.
_DRAIN_PAGE = 500


class LayoutRefused(RuntimeError):
    """Redis holds data in a layout this broker does not read; the message says what to do."""

    def __init__(self, stored: int | str, pending_listeners: int | None = None) -> None:
        holding = (
            "" if pending_listeners is None else f" ({pending_listeners} listeners hold events)"
        )
        super().__init__(
            f"the data in Redis is in storage layout {stored}{holding}, and this version of "
            f"the broker reads layout {LAYOUT} only. Reading it would misread pending events, "
            "so nothing was changed. Drain the events with the version that wrote them; see "
            "docs/operations.md, 'Upgrades across storage layouts'"
        )
        self.stored = stored


async def stored_layout(redis: Any, keys: Keys) -> int | str | None:
    """The layout of the data in Redis; None for a Redis without broker data."""
    stored = await redis.hget(keys.config, FIELD)
    if stored is not None:
        return int(stored) if str(stored).isdigit() else str(stored)
    # `config` is written by every version's start-up; the registry by every declare.
    if await redis.exists(keys.config, keys.namespaces, keys.listeners):
        return UNVERSIONED
    return None


async def listeners_holding_events(redis: Any, keys: Keys) -> int:
    """How many registered listeners have pending events (one HLEN per listener)."""
    uuids = []
    for raw in await redis.execute_command("HKEYS", keys.listeners, **{NEVER_DECODE: True}):
        try:
            uuids.append(UUID(raw.decode()))
        except ValueError:  # not a listener's record: it has no state to hold events
            continue
    holding = 0
    for start in range(0, len(uuids), _DRAIN_PAGE):
        async with redis.pipeline(transaction=False) as pipe:
            for uuid in uuids[start : start + _DRAIN_PAGE]:
                pipe.hlen(keys.listener(uuid).events)
            holding += sum(1 for count in await pipe.execute() if count)
    return holding


async def claim_layout(redis: Any, keys: Keys) -> None:
    """Record `LAYOUT` in a fresh or drained Redis; `LayoutRefused` if data is in another.

    Data of layout 1 without pending events is this layout's (the registry is the same).
    """
    stored = await stored_layout(redis, keys)
    if stored == UNVERSIONED and await redis.hget(keys.config, FIELD) is None:
        pending = await listeners_holding_events(redis, keys)
        if pending:
            raise LayoutRefused(stored, pending)
        stored = None  # drained: nothing in it to misread
    if stored is None:
        await redis.hsetnx(keys.config, FIELD, LAYOUT)  # of two starts, one writes
    stored = await stored_layout(redis, keys)
    if stored != LAYOUT:
        raise LayoutRefused(stored if stored is not None else "unknown")
