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
--
-- The available therapists are looked up a chunk at a time, three commands
-- a chunk (HMGET holds, HMGET profver, ZMSCORE lastclaim: Redis 6.2+), not
-- three commands a therapist; a chunk stays well inside what unpack takes.

local CHUNK = 500
local out = {}
local available = redis.call('SMEMBERS', KEYS[1])
for first = 1, #available, CHUNK do
  local ids = {unpack(available, first, math.min(first + CHUNK - 1, #available))}
  local holds = redis.call('HMGET', KEYS[2], unpack(ids))
  local digests = redis.call('HMGET', KEYS[4], unpack(ids))
  local lasts = redis.call('ZMSCORE', KEYS[3], unpack(ids))
  for i, tid in ipairs(ids) do
    if not holds[i] then
      local last = lasts[i] or ''
      if digests[i] then
        out[#out + 1] = {tid, digests[i], last, ''}
      else
        local profile = redis.call('GET', ARGV[1] .. 'profile:' .. tid)
        if profile then
          out[#out + 1] = {tid, '', last, profile}
        end
      end
    end
  end
end
return out
