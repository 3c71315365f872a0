-- offer_candidates.lua: every therapist who could be offered a request of
-- one region now (RedisPool.offer_candidates, MemoryPool.offer_candidates):
-- available, holding no claim and no open session, with a profile; each with
-- when it last claimed. One read in one round trip, of that region's
-- therapists only, however many are available elsewhere.
--
-- KEYS[1]  available        set of therapists who said they are available
-- KEYS[2]  holds            hash therapist -> hold
-- KEYS[3]  lastclaim        zset therapist -> when it last claimed
-- KEYS[4]  profver          hash therapist -> digest of its profile's JSON
-- KEYS[5]  avail:<region>   set: the region's availability index
-- KEYS[6]  availidx         string: the index was (re)built, expires
-- ARGV[1]  key base "<prefix>:{pool}:" (profile:<therapist>, avail:<region>)
-- ARGV[2]  seconds until the index is built again
--
-- The index avail:<region> holds at least every available therapist whose
-- profile names the region (set_available.lua and put_profile.lua add them);
-- it may hold some that are no longer available, dropped here as they are
-- met, and some whose profile left the region (the caller checks regions).
-- While availidx is missing (a new dataset, one written before the index,
-- or every ARGV[2] seconds) it is built again from every available
-- therapist, adding only: what a server of an earlier version made available
-- without indexing it joins then.
--
-- Returns a list of {therapist id, profile digest, last claim or '',
-- profile JSON or ''}, unordered. The JSON comes only for a profile stored
-- without a digest (before put_profile.lua kept one): each server keeps the
-- profiles it parsed by digest and fetches the few it does not know, so a
-- choice does not copy every candidate's profile.
--
-- The candidates are looked up a chunk at a time, four commands a chunk
-- (SMISMEMBER available, HMGET holds, HMGET profver, ZMSCORE lastclaim:
-- Redis 6.2+), not four commands a therapist; a chunk stays well inside what
-- unpack takes.
-- uses _lib.lua

local base = ARGV[1]
if redis.call('EXISTS', KEYS[6]) == 0 then
  for _, tid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local raw = redis.call('GET', base .. 'profile:' .. tid)
    if raw then
      index_available(base, tid, raw)
    end
  end
  redis.call('SET', KEYS[6], '1', 'EX', ARGV[2])
end

local CHUNK = 500
local out = {}
local indexed = redis.call('SMEMBERS', KEYS[5])
for first = 1, #indexed, CHUNK do
  local ids = {unpack(indexed, first, math.min(first + CHUNK - 1, #indexed))}
  local present = redis.call('SMISMEMBER', KEYS[1], unpack(ids))
  local holds = redis.call('HMGET', KEYS[2], unpack(ids))
  local digests = redis.call('HMGET', KEYS[4], unpack(ids))
  local lasts = redis.call('ZMSCORE', KEYS[3], unpack(ids))
  for i, tid in ipairs(ids) do
    if present[i] == 0 then
      redis.call('SREM', KEYS[5], tid)
    elseif not holds[i] then
      local last = lasts[i] or ''
      if digests[i] then
        out[#out + 1] = {tid, digests[i], last, ''}
      else
        local profile = redis.call('GET', base .. 'profile:' .. tid)
        if profile then
          out[#out + 1] = {tid, '', last, profile}
        end
      end
    end
  end
end
return out
