-- The scripts' side of broker/storage/records.py: a pending event's packed record.
-- Prepended (by store.py) to the listener scripts and to stats.lua; defines functions only.
--
-- gen|priority|silenced|deliveries|entry|rank|source
--   gen: decimal; priority, deliveries, rank: base 36; entry (lane stream id, '' for none)
--   and source (ingest id last applied): stream ids "ms-seq" as two base-36 numbers.
-- The creation time is not in the record: it is the subject's score in `index`.

local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'

-- A non-negative integer (< 2^53, exact in a double) in base 36.
local function base36(n)
  local digits = ''
  repeat
    local digit = n % 36
    digits = string.sub(DIGITS, digit + 1, digit + 1) .. digits
    n = (n - digit) / 36
  until n == 0
  return digits
end

local function encode_id(id)
  if id == '' then return '' end
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return base36(tonumber(ms)) .. '-' .. base36(tonumber(seq))
end

local function decode_id(code)
  if code == '' then return '' end
  local ms, seq = string.match(code, '^(%w+)-(%w+)$')
  if not ms then return nil end
  return string.format('%.0f-%.0f', tonumber(ms, 36), tonumber(seq, 36))
end

-- A record as a table (rank: the lane's key suffix, as stored), or nil when `packed`
-- is not a record of this layout (an older version's, or damaged).
local function unpack_record(packed)
  local f = {}
  for part in string.gmatch(packed .. '|', '([^|]*)|') do f[#f + 1] = part end
  if #f ~= 7 then return nil end
  local r = {gen = f[1], priority = tonumber(f[2], 36), silenced = tonumber(f[3]),
             deliveries = tonumber(f[4], 36), entry = f[5], rank = f[6], src = f[7]}
  if not (string.match(r.gen, '^%d+$') and r.priority and r.deliveries
          and (r.silenced == 0 or r.silenced == 1)) then
    return nil
  end
  r.entry, r.src = decode_id(r.entry), decode_id(r.src)
  if not (r.entry and r.src) then return nil end
  return r
end

local function pack_record(r)
  return table.concat({r.gen, base36(r.priority), r.silenced, base36(r.deliveries),
                       encode_id(r.entry), r.rank, encode_id(r.src)}, '|')
end

-- Whether a packed record is silenced, without unpacking it (the scrape reads many).
local function packed_silenced(packed)
  return string.match(packed, '^[^|]*|[^|]*|([^|]*)') == '1'
end
