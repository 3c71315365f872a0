-- live_indexes.lua: the indexes behind the operator's live lists, read as
-- one snapshot (pool/_redis_live.py reads the records they name after).
-- Read-only. One script rather than a MULTI: the same on one Redis and on a
-- Redis Cluster, whose client would queue a MULTI's commands one worker
-- thread at a time.
--
-- KEYS[1]  waiting    zset rid -> created_at
-- KEYS[2]  holds      hash therapist -> "claim:<rid>" or "session:<sid>"
-- KEYS[3]  online     set of therapists with a connection
-- KEYS[4]  available  set of therapists who said they are available
-- ARGV[1]  how many waiting rids to list, oldest first
--
-- Returns {waiting rids, waiting count, flat holds hash, online, available}.

return {
  redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1),
  redis.call('ZCARD', KEYS[1]),
  redis.call('HGETALL', KEYS[2]),
  redis.call('SMEMBERS', KEYS[3]),
  redis.call('SMEMBERS', KEYS[4]),
}
