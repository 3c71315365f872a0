-- set_available.lua: a therapist sets its availability; only a connected user
-- can be available (MemoryPool.set_available).
--
-- KEYS[1]  available     set of available therapists
-- KEYS[2]  conns:<user>  set "<server>|<conn>"
-- ARGV[1]  therapist id
-- ARGV[2]  '1' for available, '0' for not
--
-- Returns 1 when the therapist is available now, else 0.

if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SADD', KEYS[1], ARGV[1])
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
return redis.call('SISMEMBER', KEYS[1], ARGV[1])
