-- Delete a pending event if the token's generation is still current.
-- KEYS: the listener keys (see listener.lua).
-- ARGV[1] owner ('' = any)  ARGV[2] subject  ARGV[3] generation
-- ARGV[4] now in ms (the caller's clock; minute of the console's count)
-- Returns 1 if an event was deleted, else 0. Cost: O(log n), plus the console's
-- per-minute count (count_rate) on a deletion.
if not owned_by(ARGV[1]) then return 0 end
local r = load(ARGV[2])
if not r or r.gen ~= ARGV[3] then return 0 end
remove_entry(r)
redis.call('HDEL', EVENTS, ARGV[2])
redis.call('ZREM', INDEX, ARGV[2])
if r.silenced == 1 then redis.call('HINCRBY', META, 'silenced', -1) end
redis.call('ZREM', RETRY, ARGV[2])
count_rate('a', 1, tonumber(ARGV[4]))
return 1
