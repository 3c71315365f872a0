-- heartbeat.lua: a server says it is alive (MemoryPool.heartbeat).
--
-- KEYS[1]  servers  zset server -> last heartbeat
-- KEYS[2]  srvseq   hash server -> order of first heartbeat (reap order)
-- KEYS[3]  seq      counter behind srvseq
-- ARGV[1]  server id
-- ARGV[2]  now
--
-- Returns 1 when the server was known alive, 0 on its first beat or after
-- it was reaped.

local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[1], redis.call('INCR', KEYS[3]))
end
if known then
  return 1
end
return 0
