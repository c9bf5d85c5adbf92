-- Create a listener's state if it does not exist yet (declare is idempotent).
-- KEYS: the listener keys (see listener.lua).
-- ARGV: owner, namespace, routing_key, user_key
-- Returns 1 if created, 0 if it existed.
if redis.call('EXISTS', META) == 1 then return 0 end
redis.call('HSET', META, 'owner', ARGV[1], 'namespace', ARGV[2], 'routing_key', ARGV[3],
           'user_key', ARGV[4], 'gen', 0, 'silenced', 0)
return 1
