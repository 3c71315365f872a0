-- record_sample.lua: keep one stats sample per time bucket, written once
-- across servers (every server's stats loop offers each bucket's sample; the
-- first one stays), and forget the samples that fell out of the history
-- window (MemoryPool.record_sample; pool/live.py).
--
-- KEYS[1]  hist         zset bucket -> bucket start (seconds since the epoch)
-- KEYS[2]  histsamples  hash bucket -> the sample, JSON
-- ARGV[1]  bucket (its start, whole seconds since the epoch)
-- ARGV[2]  the sample, JSON (stored as given)
-- ARGV[3]  the oldest bucket start to keep
--
-- Returns 1 when this call stored the sample, 0 when the bucket had one.

local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[1])
if added == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
for _, bucket in ipairs(old) do
  redis.call('HDEL', KEYS[2], bucket)
end
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
end
return added
