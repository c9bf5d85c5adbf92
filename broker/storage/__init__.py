"""Everything that talks to Redis: the store and its Lua scripts, the key layout, the client and
its pipelining, replication (`WAIT`), server checks, the metrics' reads and the embedded server."""
