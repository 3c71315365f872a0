-- set_available.lua: a therapist sets its availability; only a connected user
-- can be available (MemoryPool.set_available). Becoming available also puts
-- it in the availability index of each region of its profile (avail:<region>,
-- read by offer_candidates.lua); becoming unavailable leaves those entries to
-- that script, which drops the ones no longer available as it meets them.
--
-- KEYS[1]  available          set of available therapists
-- KEYS[2]  conns:<user>       set "<server>|<conn>"
-- KEYS[3]  profile:<user>     string, the profile as JSON
-- ARGV[1]  therapist id
-- ARGV[2]  '1' for available, '0' for not
-- ARGV[3]  key base "<prefix>:{pool}:" (avail:<region>)
--
-- Returns 1 when the therapist is available now, else 0.

local function regions_of(raw)
  local ok, p = pcall(cjson.decode, raw)
  if ok and type(p) == 'table' and type(p.regions) == 'table' then
    return p.regions
  end
  return {}
end

if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SADD', KEYS[1], ARGV[1])
  local raw = redis.call('GET', KEYS[3])
  if raw then
    for _, region in ipairs(regions_of(raw)) do
      redis.call('SADD', ARGV[3] .. 'avail:' .. region, ARGV[1])
    end
  end
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
return redis.call('SISMEMBER', KEYS[1], ARGV[1])
