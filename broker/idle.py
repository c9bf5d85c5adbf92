"""The memory of listeners with nothing to fetch, so that idle polls skip Redis.

A fetch that found nothing is remembered until the listener is published (an event may
have become fetchable), its next back-off ends, or `seconds` pass, whichever comes first
(by this host's clock). The memory only holds while this process hears every publish:
the notifier (broker/notify.py) tells it when its subscription is up (`trust`), when it
drops (`distrust`, which forgets everything, since messages may have been missed), and
which listeners each message names (`woken`). A fetch's answer is never kept if a
publish for its listener, or a reset, came while it ran: `start` marks when it began.
A publish by another process reaches this one a fraction of a millisecond late; within
that window, and for at most `seconds` if a publish fails after its events were stored,
a poll may still answer "nothing" while the event waits for the next one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import UUID

# Listeners remembered at most; beyond that the memory starts over.
MAX_REMEMBERED = 100_000


class EmptyListeners:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._trusted = False
        # listener -> owner -> unix ms until which it has nothing to fetch
        self._until: dict[str, dict[str, int]] = {}
        # Counts wake-ups and resets: a fetch is remembered only if neither its listener
        # was woken nor the memory reset since the fetch started (its `start()` mark).
        self._sequence = 0
        self._woken_at: dict[str, int] = {}  # listener -> sequence of its last wake-up
        self._reset_at = 0

    def empty_until(self, listener: UUID, owner: str) -> int | None:
        """Until when (unix ms) a fetch by `owner` is known to find nothing, if it is."""
        owners = self._until.get(str(listener))
        if not owners or owner not in owners:
            return None
        if owners[owner] > time.time() * 1000 and self._trusted:
            return owners[owner]
        del owners[owner]
        return None

    def start(self) -> int:
        """A fetch begins: the mark to hand to `remember` when it found nothing."""
        return self._sequence

    def remember(self, listener: UUID, owner: str, mark: int, next_due_ms: int | None) -> None:
        """A fetch that began at `mark` found nothing; the next back-off ends at `next_due_ms`."""
        if not self._trusted or self.seconds <= 0 or self._reset_at > mark:
            return
        if self._woken_at.get(str(listener), -1) > mark:
            return
        until_ms = int((time.time() + self.seconds) * 1000)
        if next_due_ms is not None:
            until_ms = min(until_ms, next_due_ms)
        if len(self._until) >= MAX_REMEMBERED:
            self._until.clear()
        self._until.setdefault(str(listener), {})[owner] = until_ms

    def woken(self, listeners: Iterable[str]) -> None:
        """These listeners were published: they may have something to fetch now."""
        self._sequence += 1
        if len(self._woken_at) >= MAX_REMEMBERED:
            self.forget()
        for listener in listeners:
            self._woken_at[listener] = self._sequence
            self._until.pop(listener, None)

    def forget(self) -> None:
        """Forget every listener, and what fetches under way now find."""
        self._sequence += 1
        self._reset_at = self._sequence
        self._until.clear()
        self._woken_at.clear()

    def trust(self) -> None:
        """Every publish is heard from now on (the subscription is up)."""
        self.forget()
        self._trusted = True

    def distrust(self) -> None:
        """Publishes may be missed (the subscription is down): remember nothing."""
        self._trusted = False
        self.forget()
