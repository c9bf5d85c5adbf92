"""records.py and lua/records.lua read and write the same pending-event record."""

from __future__ import annotations

from typing import Any

import pytest

from broker.storage import records
from broker.storage.records import Record
from broker.storage.store import _lua

pytestmark = pytest.mark.cluster

# What lua/records.lua makes of ARGV[1], and what it packs from ARGV[2..8].
HARNESS = """
local r = unpack_record(ARGV[1])
local unpacked = false
if r then
  unpacked = {r.gen, tostring(r.priority), tostring(r.silenced), tostring(r.deliveries),
              r.entry, r.rank, r.src}
end
local packed = pack_record({gen = ARGV[2], priority = tonumber(ARGV[3]),
                            silenced = tonumber(ARGV[4]), deliveries = tonumber(ARGV[5]),
                            entry = ARGV[6], rank = ARGV[7], src = ARGV[8]})
return {unpacked, packed}
"""

RECORDS = [
    Record("1", 1, False, 0, "", 2**21, "1733100000000-0"),
    Record("123456", 10000, True, 7, "1733100000123-4", 2**52 + 10000 * 2**21 + 7, "1-2"),
    Record("9007199254740", 2**31 - 1, False, 2**21 - 1, "0-1", 2**53 - 1, "18446744-99999"),
]


async def _lua_side(redis: Any, packed: str, record: Record) -> tuple[Any, str]:
    script = redis.register_script(_lua("records") + "\n" + HARNESS)
    args = [
        packed,
        record.generation,
        str(record.priority),
        "1" if record.silenced else "0",
        str(record.deliveries),
        record.entry,
        record.lane,
        record.source,
    ]
    unpacked, repacked = await script(keys=["{records}:test"], args=args)
    return unpacked, repacked


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.generation)
async def test_lua_reads_what_python_packs_and_python_reads_what_lua_packs(
    redis: Any, record: Record
) -> None:
    unpacked, packed_by_lua = await _lua_side(redis, record.pack(), record)
    assert unpacked == [
        record.generation,
        str(record.priority),
        "1" if record.silenced else "0",
        str(record.deliveries),
        record.entry,
        record.lane,
        record.source,
    ]
    assert packed_by_lua == record.pack()
    assert Record.unpack(packed_by_lua) == record


@pytest.mark.parametrize(
    "packed",
    [
        "x|y",
        "1|7ps|0|1733100000000|0|1733-5|9mdk8j4|1733-1",  # the layout before (eight fields)
        "1|7ps|2|0||9mdk8j4|ln-1",  # silenced is neither 0 nor 1
        "g|7ps|0|0||9mdk8j4|ln-1",  # generation not decimal
        "1|7ps|0|0|bad|9mdk8j4|ln-1",  # entry not a stream id
    ],
)
async def test_both_sides_refuse_what_is_not_a_record(redis: Any, packed: str) -> None:
    unpacked, _ = await _lua_side(redis, packed, RECORDS[0])
    assert unpacked is None
    with pytest.raises(ValueError):
        Record.unpack(packed)


def test_an_order_key_sorts_by_creation_time_then_subject() -> None:
    keys = [
        records.order_key(created, subject)
        for created, subject in [(2, "a"), (1, "b"), (1, "a"), (10, "a"), (1, "a:b")]
    ]
    parsed = [records.parse_order_key(key) for key in sorted(keys)]
    assert parsed == [(1, "a"), (1, "a:b"), (1, "b"), (2, "a"), (10, "a")]
    assert records.subject_of(records.order_key(5, "x:y")) == "x:y"


@pytest.mark.parametrize("key", ["", "0", "abc:x", "\uff11" * 13 + ":x", "12:x"])
def test_what_is_not_an_order_key_is_told(key: str) -> None:
    assert records.parse_order_key(key) is None
