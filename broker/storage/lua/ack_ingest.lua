-- Forget ingest entries whose fan-out is complete.
-- KEYS[1] ingest stream  ARGV: entry ids
-- Returns the number acknowledged.
local n = redis.call('XACK', KEYS[1], 'fanout', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
return n
