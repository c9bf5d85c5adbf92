"""Long lists are completed a slice at a time, with the event loop free in between.

Completing a list of 1,000 listeners into JSON-ready values holds the event loop for about
10 ms; four such requests of one caller held every other caller's requests for as long
(benchmarks/noisy_owner.py). Both executors take a long list SLICE items at a time and
let other requests run between slices: the compiled plans (broker/http/plans.py) by
themselves, graphql-core through `Sliced`, a list that is also an asynchronous iterable
(graphql-core completes those item by item). Slices of 25 kept another caller's
fetch + acknowledge within about 2-3x of idle against four clients listing 1,000
listeners (100: 4-10x; yielding only after 0.5 ms: 4-6x), for 10-20% more CPU per long
list.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

SLICE = 25
TURN_SECONDS = 0

Item = TypeVar("Item")


async def slices(items: Sequence[Item]) -> AsyncIterator[Sequence[Item]]:
    """`items` SLICE at a time, the event loop free for others before each slice."""
    for start in range(0, len(items), SLICE):
        await asyncio.sleep(0)
        yield items[start : start + SLICE]


class Sliced(list[Item]):
    """A list that graphql-core reads as an asynchronous iterable, by `slices`."""

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._items()

    async def _items(self) -> AsyncIterator[Item]:
        async for part in slices(self):
            for item in part:
                yield item


def sliced(items: list[Item]) -> list[Item]:
    """`items` as a resolver returns them: as they are, or `Sliced` when long."""
    return Sliced(items) if len(items) > SLICE else items
