-- offer_candidates.lua: every therapist who could be offered a request now
-- (RedisPool.offer_candidates, MemoryPool.offer_candidates): available,
-- holding no claim and no open session, with a profile; each with when it
-- last claimed. One read in one round trip, however many are available.
--
-- KEYS[1]  available  set of therapists who said they are available
-- KEYS[2]  holds      hash therapist -> hold
-- KEYS[3]  lastclaim  zset therapist -> when it last claimed
-- ARGV[1]  key base "<prefix>:{pool}:" (profile:<therapist>)
--
-- Returns a list of {therapist id, profile JSON, last claim or ''}, unordered.

local out = {}
for _, tid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], tid) == 0 then
    local profile = redis.call('GET', ARGV[1] .. 'profile:' .. tid)
    if profile then
      out[#out + 1] = {tid, profile, redis.call('ZSCORE', KEYS[3], tid) or ''}
    end
  end
end
return out
