"""OS2mo-compatible event broker on Redis Streams."""
