-- Claim a listener identity (owner, namespace, user_key) with its listing indexes and the
-- owner's quota in one atomic step, or find who has it.
-- KEYS[1] identities hash  KEYS[2] listeners hash  KEYS[3] namespaces hash
-- KEYS[4] index of all listeners  KEYS[5] the owner's listener index
-- KEYS[6] the namespace's listener index (all in the registry's hash tag)
-- ARGV[1] identity  ARGV[2] new uuid  ARGV[3] json record for the new uuid
-- ARGV[4] namespace name  ARGV[5] most listeners the owner may have ('' = no limit)
-- Returns {1, record, created (1|0)} for the listener that holds the identity,
-- {0, 'namespace'} when the namespace is gone, {0, 'quota'} when the owner is at the limit.
-- Cost: O(log n).
local uuid = redis.call('HGET', KEYS[1], ARGV[1])
if uuid then
  local record = redis.call('HGET', KEYS[2], uuid)
  if record then return {1, record, 0} end
  -- Identity without record (written by an older version): finish the interrupted claim.
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if redis.call('HEXISTS', KEYS[3], ARGV[4]) == 0 then return {0, 'namespace'} end
if ARGV[5] ~= '' and redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[5]) then
  return {0, 'quota'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], 0, ARGV[2])
redis.call('ZADD', KEYS[5], 0, ARGV[2])
redis.call('ZADD', KEYS[6], 0, ARGV[2])
return {1, ARGV[3], 1}
