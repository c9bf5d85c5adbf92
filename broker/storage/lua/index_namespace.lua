-- Add an existing namespace to the listing indexes (start-up migration of older data).
-- KEYS[1] namespaces hash  KEYS[2] index of all namespaces  KEYS[3] the owner's index
-- ARGV[1] name
-- Returns 1 if indexed, 0 if the namespace is gone.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
