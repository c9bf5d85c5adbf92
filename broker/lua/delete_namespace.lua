-- Delete a namespace record and release its fold, if the fold is still its own.
-- KEYS[1] namespaces hash  KEYS[2] namespace_folds hash
-- ARGV[1] name  ARGV[2] its fold
-- Returns 1 if a record was deleted, 0 if there was none.
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return redis.call('HDEL', KEYS[1], ARGV[1])
