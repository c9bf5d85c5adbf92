-- Claim a listener identity (owner, namespace, user_key), or find who has it.
-- KEYS[1] identities hash  KEYS[2] listeners hash
-- ARGV[1] identity  ARGV[2] new uuid  ARGV[3] json record for the new uuid
-- Returns the json record of the listener that holds the identity.
local uuid = redis.call('HGET', KEYS[1], ARGV[1])
if uuid then
  local record = redis.call('HGET', KEYS[2], uuid)
  if record then return record end
  -- Identity claimed but record missing: finish the interrupted claim.
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return ARGV[3]
