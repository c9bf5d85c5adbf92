-- Fan-out: apply ingest entries to one listener, coalescing per subject.
-- KEYS: the listener keys (see listener.lua).
-- ARGV[1] now in ms (the caller's clock; minute of the console's count), then groups of
-- four: subject, priority, ingest entry id, created ms.
-- Returns the number of entries that changed something, or -1 if the listener is gone.
-- Idempotent: an entry whose id equals the record's last applied id is skipped;
-- an older entry (fan-out workers ran out of order) only merges its priority.
-- The creation time is the first applied entry's and never changes (its score in `index`).
-- Cost: O(log n) per entry; about four commands for a new event, plus two per call
-- (the console's per-minute count, see count_rate).
if redis.call('EXISTS', META) == 0 then return -1 end
local changed = 0
local gen = nil  -- the generation counter, read once and written back once

local function next_gen()
  gen = (gen or tonumber(redis.call('HGET', META, 'gen'))) + 1
  return string.format('%d', gen)
end

for i = 2, #ARGV, 4 do
  local subject, priority, src, created = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local r = load(subject)
  -- Its creation time (an event without one is in no layout this reads: made anew).
  local first = r and tonumber(redis.call('ZSCORE', INDEX, subject))
  if not first then
    r = {gen = next_gen(), priority = priority, silenced = 0, deliveries = 0, entry = '', rank = ''}
    set_source(r, src, tonumber(created))
    place(subject, r, true)
    redis.call('ZADD', INDEX, created, subject)
    save(subject, r)
    changed = changed + 1
  else
    local order = compare_ids(src, source_id(r, first))
    if order > 0 then
      -- A re-send: new generation (old tokens go stale), fetchable now, back-off reset.
      r.gen = next_gen()
      r.priority = math.min(r.priority, priority)
      r.deliveries = 0
      set_source(r, src, first)
      place(subject, r)
      save(subject, r)
      changed = changed + 1
    elseif order < 0 then
      local waiting = redis.call('ZSCORE', RETRY, subject)
      if priority < r.priority then
        r.priority = priority
        if not waiting then place(subject, r) end
      end
      save(subject, r)
    end
  end
end
if gen then redis.call('HSET', META, 'gen', string.format('%d', gen)) end
if changed > 0 then count_rate('s', changed, tonumber(ARGV[1])) end
return changed
