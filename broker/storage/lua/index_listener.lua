-- Add an existing listener to the listing indexes (start-up migration of older data).
-- KEYS[1] listeners hash  KEYS[2] index of all listeners  KEYS[3] the owner's index
-- KEYS[4] the namespace's index (registry hash tag)
-- ARGV[1] uuid
-- Returns 1 if indexed, 0 if the listener is gone (deleted since it was read).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return 1
