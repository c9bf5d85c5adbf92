-- Claim a namespace name and its fold (inputs.fold) together, or find who holds them.
-- KEYS[1] namespaces hash (name -> json)  KEYS[2] namespace_folds hash (fold -> name)
-- ARGV[1] name  ARGV[2] its fold  ARGV[3] json record for a new namespace
-- Returns false when the name is held now (newly or before: the caller reads its
-- record), or the existing name that ARGV[1] folds onto (a lookalike: nothing written).
-- A name stored exactly as asked stays the caller's to re-declare, even where an older
-- version let two names with one fold in.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return false end
local holder = redis.call('HGET', KEYS[2], ARGV[2])
if holder and holder ~= ARGV[1] and redis.call('HEXISTS', KEYS[1], holder) == 1 then
  return holder
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return false
