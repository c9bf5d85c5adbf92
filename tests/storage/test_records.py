"""records.py and lua/records.lua read and write the same pending-event record."""

from __future__ import annotations

from typing import Any

import pytest

from broker.storage import records
from broker.storage.records import Record
from broker.storage.store import _lua

pytestmark = pytest.mark.cluster

# What lua/records.lua makes of ARGV[1] (the ingest id last applied for creation time
# ARGV[9]), and what it packs from ARGV[2..8] (source: the ingest id of ARGV[8]).
HARNESS = """
local created = tonumber(ARGV[9])
local r = unpack_record(ARGV[1])
local unpacked = false
if r then
  unpacked = {r.gen, tostring(r.priority), tostring(r.silenced), tostring(r.deliveries),
              r.entry, r.rank, source_id(r, created)}
end
local new = {gen = ARGV[2], priority = tonumber(ARGV[3]), silenced = tonumber(ARGV[4]),
             deliveries = tonumber(ARGV[5]), entry = ARGV[6], rank = ARGV[7]}
set_source(new, ARGV[8], created)
return {unpacked, pack_record(new)}
"""
CREATED = 1733100000000


def _record(
    gen: str, priority: int, silenced: bool, deliveries: int, entry: str, source: str
) -> Record:
    rank = silenced * 2**52 + priority * 2**21 + min(deliveries, 2**21 - 1)
    return Record(
        gen, priority, silenced, deliveries, entry, rank, Record.source_code(source, CREATED)
    )


RECORDS = [
    _record("1", 1, False, 0, "", f"{CREATED}-0"),
    _record("123456", 10000, True, 7, "0-1", f"{CREATED + 3_600_000}-4"),
    _record("9007199254740", 2**31 - 1, False, 2**21 - 1, "0-78364164095", f"{2**50}-99999"),
]


async def _lua_side(redis: Any, packed: str, record: Record) -> tuple[Any, str]:
    script = redis.register_script(_lua("records") + "\n" + HARNESS)
    source = record.source_id(CREATED) if record.source else f"{CREATED}-0"
    args = [
        packed,
        record.generation,
        str(record.priority),
        "1" if record.silenced else "0",
        str(record.deliveries),
        record.entry,
        record.lane,
        source,
        CREATED,
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
        record.source_id(CREATED),
    ]
    assert packed_by_lua == record.pack()
    assert Record.unpack(packed_by_lua) == record


@pytest.mark.parametrize(
    "packed",
    [
        "x|y",
        "1|10000|0|1733100000000|0|1733100000000-5|20971520000|1733100000000-1",  # layout 1
        "1|7ps|2|0||9mdk8j4|0-1",  # silenced is neither 0 nor 1
        "g|7ps|0|0||9mdk8j4|0-1",  # generation not decimal
        "1|7ps|0|0|a-b|9mdk8j4|0-1",  # entry not a count
        "1|7ps|0|0|5|9mdk8j4|01",  # source not "ms-seq"
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
