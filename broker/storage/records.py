"""The stored form of a pending event, and the key that orders pending events in listings.

The one Python home of both formats; `lua/records.lua` is the scripts' side of the record
(tests/storage/test_records.py holds the two together). Layout `LAYOUT` (see
`broker/storage/layout.py`):

- a listener's `events` hash maps a subject to a packed record,
  `gen|priority|silenced|deliveries|entry|rank|source`: the generation in decimal (it goes
  into event tokens), the other numbers in base 36, stream ids ("ms-seq") as two base-36
  numbers. It holds no creation time: that is the event's score in the listener's `index`
  sorted set (member: the bare subject), which orders pending events by creation time and,
  at equal times, by subject (Redis orders equal scores by member bytes);
- an order key, `"%013d:subject"` (creation ms, then subject), is that order as one string:
  the cursors of the `events` listings and the console hold it.

Shorter numbers and no repeated creation time keep a pending event under 300 B in Redis
(benchmarks/RESULTS.md, "Memory").
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from broker.models import PendingEvent

# The stored layout these formats make up; bumped whenever a stored format changes.
LAYOUT = 2
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(number: int) -> str:
    """`number` (≥ 0) in base 36; the standard library only reads it (`int(text, 36)`)."""
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS[digit] + digits
        if number == 0:
            return digits


def encode_id(stream_id: str) -> str:
    """A stream id "ms-seq" as stored in a record ("" stays "": no entry)."""
    if not stream_id:
        return ""
    ms, seq = stream_id.split("-", 1)
    return f"{base36(int(ms))}-{base36(int(seq))}"


def decode_id(code: str) -> str:
    """The stream id of a stored `encode_id`."""
    if not code:
        return ""
    ms, seq = code.split("-", 1)
    return f"{int(ms, 36)}-{int(seq, 36)}"


@dataclass(frozen=True, slots=True)
class Record:
    """A pending event's stored record (lua/records.lua `pack_record`/`unpack_record`)."""

    generation: str  # decimal; a re-send makes a new one, so older tokens go stale
    priority: int
    silenced: bool
    deliveries: int
    entry: str  # id of its entry in the lane of `rank` ("" none)
    rank: int  # the lane it was last placed in (lua/listener.lua rank_of)
    source: str  # id of the ingest entry last applied (fan-out is idempotent by it)

    def pack(self) -> str:
        return "|".join(
            (
                self.generation,
                base36(self.priority),
                "1" if self.silenced else "0",
                base36(self.deliveries),
                encode_id(self.entry),
                base36(self.rank),
                encode_id(self.source),
            )
        )

    @property
    def lane(self) -> str:
        """The suffix of its lane's key (and its member in `lanes`)."""
        return base36(self.rank)

    @classmethod
    def unpack(cls, packed: str) -> Record:
        """A stored record; `ValueError` (or `TypeError`) when it is not one of this layout."""
        generation, priority, silenced, deliveries, entry, rank, source = packed.split("|")
        if not generation.isdigit() or silenced not in ("0", "1"):
            raise ValueError("not a pending-event record")
        return cls(
            generation,
            int(priority, 36),
            silenced == "1",
            int(deliveries, 36),
            decode_id(entry),
            int(rank, 36),
            decode_id(source),
        )


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
