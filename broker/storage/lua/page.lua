-- A page of a listener's pending events in (creation time, subject) order, strictly
-- after a cursor: the keyset paging of `index` (its score is the creation ms, and Redis
-- orders equal scores by member bytes). Atomic, so no concurrent change shifts a page.
-- KEYS[1] index (see listener.lua)
-- ARGV[1] the cursor's creation ms ('' = from the start)  ARGV[2] the cursor's subject
-- ARGV[3] how many
-- Returns {subject, created ms, ...} (ZRANGE WITHSCORES).
-- Cost: O(log n + ARGV[3]); when the cursor's own event is gone, a binary search among
-- the events created in the same ms adds O(log n) probes of O(log n).
local index, count = KEYS[1], tonumber(ARGV[3])
local start = 0

-- Whether `a` sorts after `b` byte by byte, as Redis orders members (Lua's own `<`
-- compares by the server's locale).
local function after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

if ARGV[1] ~= '' then
  local ms, subject = ARGV[1], ARGV[2]
  local score = redis.call('ZSCORE', index, subject)
  if score and tonumber(score) == tonumber(ms) then
    start = redis.call('ZRANK', index, subject) + 1
  else
    local low = redis.call('ZCOUNT', index, '-inf', '(' .. ms)
    local high = redis.call('ZCOUNT', index, '-inf', ms)
    while low < high do
      local middle = math.floor((low + high) / 2)
      if after(redis.call('ZRANGE', index, middle, middle)[1], subject) then
        high = middle
      else
        low = middle + 1
      end
    end
    start = low
  end
end
return redis.call('ZRANGE', index, start, start + count - 1, 'WITHSCORES')
