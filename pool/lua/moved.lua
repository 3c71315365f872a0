-- moved.lua: of some requests, those waiting at another place than the one
-- last told, with their fields (MemoryPool.moved). Read-only, one step.
--
-- KEYS[1]  waiting  zset rid -> created_at
-- ARGV[1]  key base "<prefix>:{pool}:" (req:<rid>)
-- ARGV[2..] pairs: request id, the 1-based place last told ('' for none)
--
-- Returns a flat list: rid, place, <flat request hash>, ... for each request
-- waiting at a place other than the one last told.

local out = {}
for i = 2, #ARGV, 2 do
  local rid, told = ARGV[i], ARGV[i + 1]
  local rank = redis.call('ZRANK', KEYS[1], rid)
  if rank and tostring(rank + 1) ~= told then
    out[#out + 1] = rid
    out[#out + 1] = rank + 1
    out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'req:' .. rid)
  end
end
return out
