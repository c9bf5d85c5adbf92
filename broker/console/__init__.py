"""The operator console on /console: server-rendered pages over the domain operations."""
