-- set_available.lua: a therapist sets its availability; only a connected user
-- can be available (MemoryPool.set_available). Becoming available also puts
-- it in the availability index of each region of its profile (avail:<region>,
-- read by offer_candidates.lua); becoming unavailable leaves those entries to
-- that script, which drops the ones no longer available as it meets them.
-- uses _lib.lua
--
-- KEYS[1]  available          set of available therapists
-- KEYS[2]  conns:<user>       set "<server>|<conn>"
-- KEYS[3]  profile:<user>     string, the profile as JSON
-- ARGV[1]  therapist id
-- ARGV[2]  '1' for available, '0' for not
-- ARGV[3]  key base "<prefix>:{pool}:" (avail:<region>)
--
-- Returns 1 when the therapist is available now, else 0.

if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SADD', KEYS[1], ARGV[1])
  local raw = redis.call('GET', KEYS[3])
  if raw then
    index_available(ARGV[3], ARGV[1], raw)
  end
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
return redis.call('SISMEMBER', KEYS[1], ARGV[1])
