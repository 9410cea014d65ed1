"""The webhook receiver: an ASGI app that verifies, parses, dedupes and enqueues events."""
