-- offer_candidates.lua: every therapist who could be offered a request now
-- (RedisPool.offer_candidates, MemoryPool.offer_candidates): available,
-- holding no claim and no open session, with a profile; each with when it
-- last claimed. One read in one round trip, however many are available.
--
-- KEYS[1]  available  set of therapists who said they are available
-- KEYS[2]  holds      hash therapist -> hold
-- KEYS[3]  lastclaim  zset therapist -> when it last claimed
-- KEYS[4]  profver    hash therapist -> digest of its profile's JSON
-- ARGV[1]  key base "<prefix>:{pool}:" (profile:<therapist>)
--
-- Returns a list of {therapist id, profile digest, last claim or '',
-- profile JSON or ''}, unordered. The JSON comes only for a profile stored
-- without a digest (before put_profile.lua kept one): each server keeps the
-- profiles it parsed by digest and fetches the few it does not know, so a
-- choice does not copy every available therapist's profile.

local out = {}
for _, tid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], tid) == 0 then
    local digest = redis.call('HGET', KEYS[4], tid)
    local last = redis.call('ZSCORE', KEYS[3], tid) or ''
    if digest then
      out[#out + 1] = {tid, digest, last, ''}
    else
      local profile = redis.call('GET', ARGV[1] .. 'profile:' .. tid)
      if profile then
        out[#out + 1] = {tid, '', last, profile}
      end
    end
  end
end
return out
