-- Hand out the next eligible event of a listener, or nil.
-- KEYS: the listener keys (see listener.lua).
-- ARGV[1] owner ('' = any)  ARGV[2] retry min ms  ARGV[3] retry max ms
-- ARGV[4] at most this many due retries are moved back into lanes per call
-- Returns {subject, priority, gen, silenced, created_ms, deliveries}, or when nothing
-- is eligible {ms when the next back-off ends} ({} if none is waiting); nil if the
-- listener is not the owner's.
-- Cost: O(log n) per moved retry (bounded by ARGV[4]) + O(log n) per lane visited;
-- a lane found empty is dropped from `lanes`, so empty lanes are skipped once.
if not owned_by(ARGV[1]) then return nil end
local now = now_ms()

for _, subject in ipairs(redis.call('ZRANGEBYSCORE', RETRY, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  local r = load(subject)
  if r then place(subject, r); save(subject, r) else redis.call('ZREM', RETRY, subject) end
end

while true do
  local top = redis.call('ZRANGE', LANES, 0, 0)
  if #top == 0 then
    local due = redis.call('ZRANGE', RETRY, 0, 0, 'WITHSCORES')
    if #due == 0 then return {} end
    return {due[2]}
  end
  local rank = top[1]
  local lane = LANE .. rank
  local id, fields = read_one(lane)
  if not id then
    redis.call('ZREM', LANES, rank)
  else
    local subject = fields[2]
    local r = load(subject)
    if r and r.entry == id then
      r.deliveries = r.deliveries + 1
      local delay = math.max(tonumber(ARGV[2]), math.min(2^r.deliveries * 1000, tonumber(ARGV[3])))
      redis.call('ZADD', RETRY, now + delay, subject)
      save(subject, r)
      return {subject, r.priority, r.gen, r.silenced, created_of(subject), r.deliveries}
    end
    -- An entry no record points at (cannot happen unless keys were edited by hand).
    redis.call('XACK', lane, GROUP, id)
    redis.call('XDEL', lane, id)
  end
end
