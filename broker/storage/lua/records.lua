-- The scripts' side of broker/storage/records.py: a pending event's packed record.
-- Prepended (by store.py) to the listener scripts and to stats.lua; defines functions only.
--
-- gen|priority|silenced|deliveries|entry|rank|source, numbers in base 36 but gen (decimal):
--   entry   its lane stream entry is "0-<entry>" ('' for none): entry ids are a
--           per-listener count of placements (listener.lua place), not times;
--   rank    the lane it was placed in, as the lane's key suffix;
--   source  the ingest id last applied, "ms-seq" with ms counted from the creation time
--           (the subject's score in `index`, which the record does not repeat): a fresh
--           event's is "0-<seq>". Only apply.lua reads it (source_id / set_source).
-- Short fields keep a pending event under 300 B (records.py).

local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'

-- A non-negative integer (< 2^53, exact in a double) in base 36.
local function base36(n)
  if n < 0 or n % 1 ~= 0 then error('base36 needs a non-negative integer, got ' .. n) end
  local digits = ''
  repeat
    local digit = n % 36
    digits = string.sub(DIGITS, digit + 1, digit + 1) .. digits
    n = (n - digit) / 36
  until n == 0
  return digits
end

-- A record as a table (entry: the stream id, '' for none), or nil when `packed` is not
-- a record of this layout (an older version's, or damaged).
local function unpack_record(packed)
  local f = {}
  for part in string.gmatch(packed .. '|', '([^|]*)|') do f[#f + 1] = part end
  if #f ~= 7 then return nil end
  local r = {gen = f[1], priority = tonumber(f[2], 36), silenced = tonumber(f[3]),
             deliveries = tonumber(f[4], 36), entry = '', rank = f[6], src = f[7]}
  if not (string.match(r.gen, '^%d+$') and r.priority and r.deliveries
          and (r.silenced == 0 or r.silenced == 1) and string.match(r.src, '^%w+-%w+$')) then
    return nil
  end
  if f[5] ~= '' then
    local placed = string.match(f[5], '^%w+$') and tonumber(f[5], 36)
    if not placed then return nil end
    r.entry = string.format('0-%.0f', placed)
  end
  return r
end

local function pack_record(r)
  local entry = r.entry == '' and '' or base36(tonumber(string.match(r.entry, '^0%-(%d+)$')))
  return table.concat({r.gen, base36(r.priority), r.silenced, base36(r.deliveries),
                       entry, r.rank, r.src}, '|')
end

-- The ingest id last applied to `r`, an event created at `created` ms.
local function source_id(r, created)
  local ms, seq = string.match(r.src, '^(%w+)-(%w+)$')
  return string.format('%.0f-%.0f', created + tonumber(ms, 36), tonumber(seq, 36))
end

local function set_source(r, id, created)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  r.src = base36(tonumber(ms) - created) .. '-' .. base36(tonumber(seq))
end

-- Whether a packed record is silenced, without unpacking it (the scrape reads many).
local function packed_silenced(packed)
  return string.match(packed, '^[^|]*|[^|]*|([^|]*)') == '1'
end
