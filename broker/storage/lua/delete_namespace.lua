-- Delete a namespace unless a listener is in it, and release its fold if the fold is
-- still its own; checked and done in one atomic step, so a concurrent listener declare
-- (claim_listener.lua checks the namespace) cannot slip in.
-- KEYS[1] namespaces hash  KEYS[2] namespace_folds hash  KEYS[3] index of all namespaces
-- KEYS[4] the owner's index  KEYS[5] the namespace's listener index (registry hash tag)
-- ARGV[1] name  ARGV[2] the record the caller was allowed to delete  ARGV[3] its fold
-- Returns 1 deleted (or gone), 0 it has listeners, -1 the record changed meanwhile.
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return 1 end
if held ~= ARGV[2] then return -1 end
if redis.call('ZCARD', KEYS[5]) > 0 then return 0 end
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[3]) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
