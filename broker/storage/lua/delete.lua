-- Delete a listener's state, refusing while it has pending events unless forced.
-- KEYS: the listener keys (see listener.lua).
-- ARGV[1] owner ('' = any)  ARGV[2] '1' to delete pending events too
-- Returns 1 when deleted (or already gone), 0 when it has pending events,
-- -1 when it belongs to another owner. Cost: O(pending events).
if redis.call('EXISTS', META) == 0 then return 1 end
if not owned_by(ARGV[1]) then return -1 end
if ARGV[2] ~= '1' and redis.call('HLEN', EVENTS) > 0 then return 0 end
local ranks = {}
for _, rank in ipairs(redis.call('ZRANGE', LANES, 0, -1)) do ranks[rank] = true end
local cursor = '0'
repeat
  local page = redis.call('HSCAN', EVENTS, cursor, 'COUNT', 1000)
  cursor = page[1]
  for i = 2, #page[2], 2 do
    local r = unpack_record(page[2][i])
    if r then ranks[r.rank] = true end
  end
until cursor == '0'
for rank in pairs(ranks) do redis.call('UNLINK', LANE .. rank) end
redis.call('UNLINK', META, EVENTS, INDEX, LANES, RETRY)
return 1
