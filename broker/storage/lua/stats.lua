-- A listener's pending-event figures for the metrics, in one call. Stand-alone (no
-- listener.lua prelude) and with only the keys it reads: a scrape makes one call per
-- listener, so every argument less is work saved.
-- KEYS[1] meta  KEYS[2] events  KEYS[3] index (see listener.lua)
-- ARGV[1] how many of the oldest events to look at to tell the oldest silenced event
-- from the oldest unsilenced one when both kinds are pending
-- Returns {pending, silenced, oldest unsilenced ms, oldest silenced ms}, '' for an age
-- with no such event. A kind not among the ARGV[1] oldest gets the overall oldest
-- (an approximation that can only make it look older). Cost: O(ARGV[1] + log n).
local pending = redis.call('HLEN', KEYS[2])
if pending == 0 then return {0, 0, '', ''} end
local silenced = math.min(tonumber(redis.call('HGET', KEYS[1], 'silenced') or '0'), pending)
local first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
-- Index members are '%013d' creation ms, ':', subject (listener.lua index_member).
local oldest = first and tonumber(string.sub(first, 1, 13)) or ''
if silenced == 0 then return {pending, 0, oldest, ''} end
if silenced == pending then return {pending, silenced, '', oldest} end
local loud, quiet = nil, nil
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)) do
  local packed = redis.call('HGET', KEYS[2], string.sub(member, 15))
  if packed then
    local ms = tonumber(string.sub(member, 1, 13))
    -- The third field of a packed record is its silenced flag (listener.lua pack_record).
    if string.match(packed, '^[^|]*|[^|]*|([^|]*)') == '1' then
      quiet = quiet or ms
    else
      loud = loud or ms
    end
    if loud and quiet then break end
  end
end
return {pending, silenced, loud or oldest, quiet or oldest}
