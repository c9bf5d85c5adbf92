"""The stored form of a pending event, and the key that orders pending events in listings.

The one Python home of both formats; `lua/records.lua` is the scripts' side of the record
(tests/storage/test_records.py holds the two together). In layout `LAYOUT`
(broker/storage/layout.py):

- a listener's `events` hash maps a subject to a packed record,
  `gen|priority|silenced|deliveries|entry|rank|source`: the generation in decimal (it goes
  into event tokens), the other numbers in base 36. `entry` counts the listener's lane
  placements (its lane stream entry is "0-<entry>"), `source` is the ingest id last applied
  with its ms counted from the creation time. The creation time itself is not in the
  record: it is the event's score in the listener's `index` sorted set (member: the bare
  subject), which orders pending events by creation time and, at equal times, by subject
  (Redis orders equal scores by member bytes);
- an order key, `"%013d:subject"` (creation ms, then subject), is that order as one string:
  the cursors of the `events` listings and the console's pages hold it.

Short fields and no repeated creation time keep a pending event under 300 B in Redis
(benchmarks/RESULTS.md, "Memory"): with a 47-character subject, a value of more than 33
characters costs the events hash 16 B more per event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

from broker.models import PendingEvent

# The stored layout these formats make up; bumped whenever a stored format changes.
LAYOUT = 2
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_SOURCE = re.compile("[0-9a-z]+-[0-9a-z]+")


def base36(number: int) -> str:
    """`number` (≥ 0) in base 36; the standard library only reads it (`int(text, 36)`)."""
    if number < 0:
        raise ValueError(f"base36 needs a non-negative number, got {number}")
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS[digit] + digits
        if number == 0:
            return digits


@dataclass(frozen=True, slots=True)
class Record:
    """A pending event's stored record (lua/records.lua `pack_record`/`unpack_record`)."""

    generation: str  # decimal; a re-send makes a new one, so older tokens go stale
    priority: int
    silenced: bool
    deliveries: int
    entry: str  # id of its entry in the lane of `rank`, "0-<placements>" ("" none)
    rank: int  # the lane it was last placed in (lua/listener.lua rank_of)
    source: str  # the ingest entry last applied, as stored: see `source_id`

    def pack(self) -> str:
        return "|".join(
            (
                self.generation,
                base36(self.priority),
                "1" if self.silenced else "0",
                base36(self.deliveries),
                _encode_entry(self.entry),
                base36(self.rank),
                self.source,
            )
        )

    @property
    def lane(self) -> str:
        """The suffix of its lane's key (and its member in `lanes`)."""
        return base36(self.rank)

    def source_id(self, created_ms: int) -> str:
        """The id of the ingest entry last applied ("ms-seq"; ms stored from creation)."""
        ms, seq = self.source.split("-")
        return f"{created_ms + int(ms, 36)}-{int(seq, 36)}"

    @staticmethod
    def source_code(ingest_id: str, created_ms: int) -> str:
        """`source` as stored for an ingest entry applied to an event created at `created_ms`."""
        ms, seq = ingest_id.split("-")
        return f"{base36(int(ms) - created_ms)}-{base36(int(seq))}"

    @classmethod
    def unpack(cls, packed: str) -> Record:
        """A stored record; `ValueError` when it is not one of this layout."""
        generation, priority, silenced, deliveries, entry, rank, source = packed.split("|")
        if not generation.isdigit() or silenced not in ("0", "1"):
            raise ValueError("not a pending-event record")
        if not _SOURCE.fullmatch(source):
            raise ValueError("not a pending-event record")
        return cls(
            generation,
            int(priority, 36),
            silenced == "1",
            int(deliveries, 36),
            f"0-{int(entry, 36)}" if entry else "",
            int(rank, 36),
            source,
        )


def _encode_entry(entry_id: str) -> str:
    if not entry_id:
        return ""
    zero, placed = entry_id.split("-")
    if zero != "0":
        raise ValueError(f"not a lane entry id: {entry_id!r}")
    return base36(int(placed))


def pending_event(listener: UUID, subject: str, packed: str, created_ms: int) -> PendingEvent:
    """The pending event of a stored record and its `index` score."""
    record = Record.unpack(packed)
    return PendingEvent(
        listener=listener,
        subject=subject,
        priority=record.priority,
        silenced=record.silenced,
        generation=record.generation,
        created_ms=created_ms,
        deliveries=record.deliveries,
    )


def order_key(created_ms: int, subject: str) -> str:
    """A pending event's place in listings: (creation time, subject), as one string."""
    return f"{created_ms:013d}:{subject}"


def parse_order_key(key: str) -> tuple[int, str] | None:
    """(creation ms, subject) of an order key; None when `key` is not one."""
    ms, colon, subject = key.partition(":")
    if not colon or not ms.isascii() or not ms.isdigit() or len(ms) != 13:
        return None
    return int(ms), subject


def subject_of(key: str) -> str:
    """The subject of an order key."""
    return key.partition(":")[2]
