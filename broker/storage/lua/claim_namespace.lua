-- Claim a namespace name, its fold (inputs.fold), its listing indexes and a place in the
-- owner's quota, atomically; or find who holds the name.
-- KEYS[1] namespaces hash (name -> json)  KEYS[2] namespace_folds hash (fold -> name)
-- KEYS[3] index of all namespaces  KEYS[4] the owner's index
-- ARGV[1] name  ARGV[2] its fold  ARGV[3] json record for a new namespace
-- ARGV[4] most namespaces the owner may have ('' = no limit)
-- Returns {1} when the name is held now (newly or before: the caller reads its record),
-- {2, existing name} when ARGV[1] folds onto another namespace's name (a lookalike:
-- nothing written), or {0, 'quota'}. A name stored exactly as asked stays the caller's
-- to re-declare, even where an older version let two names with one fold in.
-- Cost: O(log n).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1} end
local holder = redis.call('HGET', KEYS[2], ARGV[2])
if holder and holder ~= ARGV[1] and redis.call('HEXISTS', KEYS[1], holder) == 1 then
  return {2, holder}
end
if ARGV[4] ~= '' and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then
  return {0, 'quota'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return {1}
