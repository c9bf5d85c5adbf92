-- Shared prelude of every listener script (prepended by store.py, after records.lua).
--
-- All listener scripts take the same KEYS, all in the listener's hash tag:
--   KEYS[1] meta    hash: owner, namespace, routing_key, user_key, gen (generation
--                   counter), silenced (how many pending events are silenced),
--                   placed (lane entries ever written: the next entry's id)
--   KEYS[2] events  hash: subject -> packed record (records.lua)
--   KEYS[3] index   sorted set: subject -> creation ms: pending events ordered by
--                   (creation time, subject), for paging (page.lua) and age (stats.lua)
--   KEYS[4] lanes   sorted set: ranks (member: in base 36) whose lane may hold
--                   undelivered entries
--   KEYS[5] retry   sorted set: subject -> ms when its back-off ends
--   KEYS[6] lane prefix: KEYS[6] .. base-36 rank is a lane stream (same hash tag)
--
-- A pending event has exactly one stream entry, in the lane of its rank: unread
-- (ready to fetch) or in the lane group's PEL (delivered, waiting out its back-off,
-- and then listed in `retry`). The rank orders lanes: silenced last, then lower
-- priority number, then fewer deliveries.

local META, EVENTS, INDEX, LANES, RETRY, LANE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local GROUP, CONSUMER = 'g', 'c'

-- Where the event's entry goes: its rank (a number ordering `lanes`) and the lane's key
-- suffix and `lanes` member (the rank in base 36, as the record stores it).
local function rank_of(r)
  -- 1 + 31 + 21 bits: exact in a double. Priorities are GraphQL Ints (< 2^31).
  local rank = r.silenced * 2^52 + r.priority * 2^21 + math.min(r.deliveries, 2^21 - 1)
  return rank, base36(rank)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A pending event's creation ms (its score in `index`). One missing from the index (keys
-- edited by hand) is indexed now, so that listings show it again.
local function created_of(subject)
  local created = redis.call('ZSCORE', INDEX, subject)
  if created then return created end
  created = string.format('%d', now_ms())
  redis.call('ZADD', INDEX, created, subject)
  return created
end

-- Compare two stream ids "ms-seq": -1, 0 or 1.
local function compare_ids(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end

-- The next unread entry of a lane (id, fields), or nil. Real servers answer
-- {{key, entries}} (nil when nothing is new); fakeredis answers {key, entries}
-- (and {} when nothing is new), so accept both.
local function read_one(lane)
  local reply = redis.call('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', 1, 'STREAMS', lane, '>')
  if not reply or #reply == 0 then return nil end
  local entries = type(reply[1]) == 'table' and reply[1][2] or reply[2]
  if not entries or #entries == 0 then return nil end
  return entries[1][1], entries[1][2]
end

-- Ranks whose lane this script call has seen exist and listed in LANES: saves the
-- EXISTS and ZADD when one call places many events in the same lane (fan-out).
local open_lanes = {}

local function remove_entry(r)
  if r.entry == '' then return end
  local lane = LANE .. r.rank
  redis.call('XACK', lane, GROUP, r.entry)
  redis.call('XDEL', lane, r.entry)
  if redis.call('XLEN', lane) == 0 then
    redis.call('DEL', lane)
    redis.call('ZREM', LANES, r.rank)
    open_lanes[r.rank] = nil
  end
  r.entry = ''
end

-- (Re)append the event to the lane of its current rank: it becomes fetchable now.
-- `fresh`: a new event, so there is no old entry or retry to remove.
local function place(subject, r, fresh)
  if not fresh then
    remove_entry(r)
    redis.call('ZREM', RETRY, subject)
  end
  local rank
  rank, r.rank = rank_of(r)
  local lane = LANE .. r.rank
  if not open_lanes[r.rank] then
    if redis.call('EXISTS', lane) == 0 then
      redis.call('XGROUP', 'CREATE', lane, GROUP, '0', 'MKSTREAM')
    end
    redis.call('ZADD', LANES, string.format('%.0f', rank), r.rank)
    open_lanes[r.rank] = true
  end
  -- Entry ids count placements per listener: short in the record, and increasing in
  -- every lane (records.lua).
  local placed = redis.call('HINCRBY', META, 'placed', 1)
  r.entry = redis.call('XADD', lane, string.format('0-%d', placed), 's', subject)
end

local function load(subject)
  local packed = redis.call('HGET', EVENTS, subject)
  if not packed then return nil end
  -- A record in another layout (damaged, or an older version's that layout.py did not
  -- refuse) counts as no event: nothing reads it, and a new send of its subject writes
  -- a good one over it.
  return unpack_record(packed)
end

local function save(subject, r)
  redis.call('HSET', EVENTS, subject, pack_record(r))
end

local function owned_by(owner)
  return owner == '' or redis.call('HGET', META, 'owner') == owner
end

-- Recent activity for the console: per-minute counts kept in META as a ring of
-- RATE_SLOTS fields `rate:<kind>:<minute % RATE_SLOTS>` = "<minute>|<count>" (kind `s`:
-- events stored for the listener, `a`: acknowledgements). A slot holding an older minute
-- is stale and restarts at zero. `now` comes from the caller (Redis' TIME costs more
-- than the rest of this). Cost: one HGET and one HSET, O(1), no new key.
local RATE_SLOTS = 16

local function count_rate(kind, n, now)
  if not now then return end
  local minute = math.floor(now / 60000)
  local field = 'rate:' .. kind .. ':' .. (minute % RATE_SLOTS)
  local count = n
  local held = redis.call('HGET', META, field)
  if held then
    local at, seen = string.match(held, '(%d+)|(%d+)')
    if tonumber(at) == minute then count = count + tonumber(seen) end
  end
  redis.call('HSET', META, field, string.format('%d|%d', minute, count))
end
