-- Pending-event figures of one or more listeners for the metrics, in one call.
-- Without the listener.lua prelude (records.lua only) and with only the keys it reads:
-- a snapshot reads every listener, so every argument less is work saved.
-- KEYS[3i+1] meta  KEYS[3i+2] events  KEYS[3i+3] index of the i-th listener (see
-- listener.lua). One listener per call on a cluster (its keys share a slot); on a
-- single server many per call, which saves the client most of its per-call work.
-- ARGV[1] how many of the oldest events to look at to tell the oldest silenced event
-- from the oldest unsilenced one when both kinds are pending
-- Returns per listener {pending, silenced, oldest unsilenced ms, oldest silenced ms},
-- '' for an age with no such event. A kind not among the ARGV[1] oldest gets the
-- overall oldest (an approximation that can only make it look older).
-- Cost: O(ARGV[1] + log n) per listener.
local scan = tonumber(ARGV[1])

local function figures(meta, events, index)
  local pending = redis.call('HLEN', events)
  if pending == 0 then return {0, 0, '', ''} end
  -- A damaged count reads as 0 rather than failing every listener of the call.
  local silenced = math.min(tonumber(redis.call('HGET', meta, 'silenced')) or 0, pending)
  -- Index members are subjects, scored by creation ms.
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  local oldest = first[2] and tonumber(first[2]) or ''
  if silenced == 0 then return {pending, 0, oldest, ''} end
  if silenced == pending then return {pending, silenced, '', oldest} end
  local loud, quiet = nil, nil
  local oldest_few = redis.call('ZRANGE', index, 0, scan - 1, 'WITHSCORES')
  for i = 1, #oldest_few, 2 do
    local packed = redis.call('HGET', events, oldest_few[i])
    if packed then
      local ms = tonumber(oldest_few[i + 1])
      if packed_silenced(packed) then
        quiet = quiet or ms
      else
        loud = loud or ms
      end
      if loud and quiet then break end
    end
  end
  return {pending, silenced, loud or oldest, quiet or oldest}
end

local found = {}
for i = 1, #KEYS, 3 do
  found[#found + 1] = figures(KEYS[i], KEYS[i + 1], KEYS[i + 2])
end
return found
