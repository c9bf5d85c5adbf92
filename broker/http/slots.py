"""At most N things at once per caller, over all of its requests.

A per-request cap alone lets one caller multiply it by sending requests in parallel; a
`CallerSlots` holds however many requests the caller sends. Used for nested per-object
fields that read Redis and for large answers (`Shares` in broker/http/context.py), and
for first sights of documents in the checker process (broker/http/checker.py). A
caller's entry lives only while it has something running or waiting, so callers that
are gone cost nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class CallerSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: dict[Hashable, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def hold(self, caller: Hashable) -> AsyncIterator[None]:
        """One of `caller`'s `size` slots, waiting for one if all are taken."""
        slots, users = self._slots.get(caller) or (asyncio.Semaphore(self.size), 0)
        self._slots[caller] = (slots, users + 1)
        try:
            async with slots:
                yield
        finally:
            slots, users = self._slots[caller]
            if users == 1:
                del self._slots[caller]
            else:
                self._slots[caller] = (slots, users - 1)

    @property
    def callers(self) -> int:
        """Callers with something running or waiting now."""
        return len(self._slots)
