-- Accept an event for fan-out, unless no listener would receive it.
-- KEYS[1] topic hash (listener uuid -> ingest id at registration)  KEYS[2] ingest stream
-- ARGV: namespace, routing_key, subject, priority
-- Returns the ingest entry id, or false when the topic has no listener (dropped).
if redis.call('HLEN', KEYS[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', 'n', ARGV[1], 'r', ARGV[2], 's', ARGV[3], 'p', ARGV[4])
