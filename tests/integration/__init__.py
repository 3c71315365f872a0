"""Integration tests: real ``dispatch serve`` processes sharing one real redis-server."""
