-- widen.lua: a waiting request offered to a few is offered to more
-- (RedisPool.widen, pool.rules.widened), once across servers.
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>   hash, the request
-- KEYS[2]  widening    zset rid -> widened_at (the due-widening index)
-- ARGV[1]  the widened_at the caller read (as stored: repr of a float)
-- ARGV[2]  now
-- ARGV[3]  the wider offer, a JSON array; '' opens it to everyone
-- ARGV[4]  rid
--
-- Returns {'ok', <flat hash before>}; {'stale'} when the request is no
-- longer waiting or another server widened it first (widened_at moved).

local req, flat = load(KEYS[1])
if not req or req.state ~= 'waiting' or req.widened_at ~= ARGV[1] then
  return {'stale'}
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'offered', 'widened_at')
  redis.call('ZREM', KEYS[2], ARGV[4]) -- open to everyone: nothing left to widen
else
  redis.call('HSET', KEYS[1], 'offered', ARGV[3], 'widened_at', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
end
return {'ok', flat}
