-- Register a listener with its topic. Entries already in the ingest stream are
-- older than the listener and will not reach it (contract point 1).
-- KEYS[1] topic hash  KEYS[2] ingest stream
-- ARGV[1] listener uuid
-- Returns the last ingest id the listener does not receive.
local since = redis.call('HGET', KEYS[1], ARGV[1])
if since then return since end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], 'fanout', '0', 'MKSTREAM')
end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then since = info[i + 1] end
end
redis.call('HSET', KEYS[1], ARGV[1], since)
return since
