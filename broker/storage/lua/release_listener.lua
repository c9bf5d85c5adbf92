-- Remove a listener from the registry: its record, its identity and its listing indexes.
-- KEYS: as claim_listener.lua, without the namespaces hash:
-- KEYS[1] identities  KEYS[2] listeners  KEYS[3] index of all listeners
-- KEYS[4] the owner's listener index  KEYS[5] the namespace's listener index
-- ARGV[1] identity  ARGV[2] uuid
-- Returns 1 if the record was there, else 0. The identity is only removed while it
-- still names this uuid (a re-declare may already hold it for a new one). Cost: O(log n).
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
return redis.call('HDEL', KEYS[2], ARGV[2])
