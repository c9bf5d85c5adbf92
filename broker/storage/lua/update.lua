-- Silence, unsilence or rerun some pending events of one listener.
-- KEYS: the listener keys (see listener.lua).
-- ARGV[1] action: 'silence' | 'unsilence' | 'rerun'
-- ARGV[2] silenced filter: '' (any) | '0' | '1'
-- ARGV[3] n = number of priorities in the filter, or -1 for no priority filter
-- ARGV[4 .. 3+n] priorities; the rest: subjects to consider.
-- Returns the touched events as a flat list of {subject, packed record, created ms}.
-- None of them changes generation or delivery count; silence only re-ranks an
-- event, unsilence and rerun also make it fetchable at once.
local action, silenced_filter, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local priorities = nil
if n >= 0 then
  priorities = {}
  for i = 4, 3 + n do priorities[tonumber(ARGV[i])] = true end
end
local touched = {}
for i = 4 + math.max(n, 0), #ARGV do
  local subject = ARGV[i]
  local r = load(subject)
  if r and (silenced_filter == '' or tonumber(silenced_filter) == r.silenced)
       and (priorities == nil or priorities[r.priority]) then
    local waiting = redis.call('ZSCORE', RETRY, subject)
    if action == 'silence' then
      if r.silenced == 0 then
        r.silenced = 1
        redis.call('HINCRBY', META, 'silenced', 1)
        if not waiting then place(subject, r) end
      end
    elseif action == 'unsilence' then
      -- Like OS2mo, every matching event, silenced or not; all become fetchable now.
      if r.silenced == 1 then
        r.silenced = 0
        redis.call('HINCRBY', META, 'silenced', -1)
      end
      place(subject, r)
    else
      place(subject, r)
    end
    if r then
      save(subject, r)
      touched[#touched + 1] = subject
      touched[#touched + 1] = pack_record(r)
      touched[#touched + 1] = created_of(subject)
    end
  end
end
return touched
